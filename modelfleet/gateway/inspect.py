"""Request and response inspection for one model, as pure functions over bodies (no I/O, no Envoy).

The ext_proc service calls these with the buffered body. A refusal is a `Refusal` (HTTP status, machine code,
message); the service turns it into a 400 JSON body (HTTP) or INVALID_ARGUMENT (gRPC) before Triton sees the
request. Bodies are KServe v2 JSON, optionally with the binary tensor extension (JSON header, then raw tensors),
or a gRPC-framed `inference.ModelInferRequest`.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from functools import lru_cache

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2  # Triton's own gRPC messages (protobuf's C parser)

from modelfleet.gateway import pii
from modelfleet.gateway.plan import InspectionPlan

# Bytes per element of each fixed-size KServe v2 datatype (BYTES are length-prefixed, variable).
DTYPE_SIZE = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
              "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2}
GRPC_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                 "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
                 "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
                 "FP64": "fp64_contents", "BYTES": "bytes_contents"}
INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>\d+))?/infer$")


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str

    def json_body(self, model: str) -> bytes:
        return json.dumps({"error": self.message, "code": self.code, "model": model}).encode()


class Refused(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.refusal = Refusal(status, code, message)


@lru_cache(maxsize=256)
def _deny(patterns: tuple[str, ...]) -> re.Pattern | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


def check_http(plan: InspectionPlan, path: str, body: bytes) -> Refusal | None:
    """None when the request may go to Triton; else why not."""
    try:
        _check_http(plan, path, body)
    except Refused as exc:
        return exc.refusal
    return None


def _check_http(plan: InspectionPlan, path: str, body: bytes) -> None:
    if len(body) > plan.max_request_bytes:
        raise Refused("body_too_large", f"request body of {len(body)} bytes exceeds {plan.max_request_bytes}")
    if not INFER_PATH.match(path.split("?", 1)[0]):
        if body:
            raise Refused("unexpected_body", f"{path.split('?', 1)[0]} takes no request body")
        return
    header, binary = _binary_split(body)
    if not isinstance(header, dict):
        raise Refused("invalid_json", "the request must be a KServe v2 JSON object with `inputs`")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise Refused("invalid_json", "`inputs` must be a non-empty list of tensors")
    offset = 0
    seen: set[str] = set()
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise Refused("invalid_json", f"inputs[{index}] must be an object with name, shape, datatype")
        name, shape, dtype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str) or not isinstance(dtype, str) or not isinstance(shape, list) \
                or not all(type(d) is int and d >= 0 for d in shape):
            raise Refused("invalid_json", f"inputs[{index}] needs a string name and datatype and a shape of "
                                          "non-negative integers")
        if name in seen:
            raise Refused("duplicate_input", f"input {name!r} is given twice")
        seen.add(name)
        count = _check_tensor(plan, name, dtype, shape)
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise Refused("invalid_binary", f"input {name!r}: binary_data_size {size!r} does not fit the body")
            _check_raw(plan, name, dtype, count, binary[offset:offset + size])
            offset += size
        else:
            _check_json_data(plan, name, dtype, count, tensor.get("data"))
    if offset != len(binary):
        raise Refused("invalid_binary", f"{len(binary) - offset} bytes of binary data belong to no input")
    _check_all_inputs(plan, seen)
    outputs = header.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise Refused("invalid_json", "`outputs` must be a list of objects with a name")


def _binary_split(body: bytes) -> tuple[object, bytes]:
    """The JSON header of a body and the raw tensor bytes after it (empty for plain JSON). surrogateescape lets
    the C JSON decoder read the header of a binary-extension body without knowing where the binary part starts."""
    text = body.decode("utf-8", "surrogateescape")
    try:
        header, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    except ValueError:
        raise Refused("invalid_json", "the body is neither KServe v2 JSON nor a JSON header with binary tensors") \
            from None
    return header, body[len(text[:end].encode("utf-8", "surrogateescape")):]


_DECODER = json.JSONDecoder()


def _spec_of(plan: InspectionPlan, name: str):
    for rule in plan.inputs:
        if rule.name == name:
            return rule
    known = ", ".join(r.name for r in plan.inputs)
    raise Refused("unknown_input", f"model {plan.model} has no input {name!r}; its inputs: {known}")


def _check_tensor(plan: InspectionPlan, name: str, dtype: str, shape: list[int]) -> int:
    """The element count of a well-formed input tensor; refuses names, dtypes and shapes the model rejects."""
    count = math.prod(shape) if shape else 1
    if count > plan.max_elements:
        raise Refused("too_many_elements", f"input {name!r} has {count} elements; the limit is {plan.max_elements}")
    if not plan.check_tensors:
        return count
    rule = _spec_of(plan, name)
    if dtype != rule.dtype:
        raise Refused("dtype_mismatch", f"input {name!r} must be {rule.dtype}, got {dtype}")
    if not rule.shape_checked:
        return count
    expected = list(rule.dims)
    dims = shape
    if plan.max_batch_size > 0:
        if len(shape) != len(expected) + 1 or not 1 <= shape[0] <= plan.max_batch_size:
            raise Refused("shape_mismatch", f"input {name!r} must have shape [batch 1..{plan.max_batch_size}, "
                                            f"{', '.join(map(str, expected))}], got {shape}")
        dims = shape[1:]
    if len(dims) != len(expected) or any(e != -1 and d != e for d, e in zip(dims, expected)):
        want = ([f"batch 1..{plan.max_batch_size}"] if plan.max_batch_size else []) + [str(e) for e in expected]
        raise Refused("shape_mismatch", f"input {name!r} must have shape [{', '.join(want)}], got {shape}")
    return count


def _check_all_inputs(plan: InspectionPlan, seen: set[str]) -> None:
    if not plan.check_tensors:
        return
    missing = [r.name for r in plan.inputs if r.name not in seen and not r.optional]
    if missing:
        raise Refused("missing_input", f"model {plan.model} needs input(s) {', '.join(missing)}")


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _check_json_data(plan: InspectionPlan, name: str, dtype: str, count: int, data: object) -> None:
    if data is None:
        raise Refused("invalid_json", f"input {name!r} has neither `data` nor binary_data_size")
    if not isinstance(data, list):
        # KServe v2 tensor data is an array, flat or nested, even for one element; Triton's parser answers 500 to
        # anything else ("attempt to access JSON non-array as array"), which the gateway must not pass on.
        raise Refused("invalid_json", f"input {name!r}: `data` must be an array, got {type(data).__name__}")
    flat = _flatten(data)
    if len(flat) != count:
        raise Refused("shape_mismatch", f"input {name!r} holds {len(flat)} elements; its shape needs {count}")
    if dtype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise Refused("dtype_mismatch", f"input {name!r} is BYTES: every element must be a string")
        _check_strings(plan, name, [v.encode("utf-8", "surrogatepass") for v in flat])
    elif dtype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise Refused("dtype_mismatch", f"input {name!r} is BOOL: every element must be true or false")
    elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise Refused("dtype_mismatch", f"input {name!r} is {dtype}: every element must be a number")


def _check_raw(plan: InspectionPlan, name: str, dtype: str, count: int, raw: bytes) -> None:
    if dtype == "BYTES":
        _check_strings(plan, name, _split_bytes(name, raw, count))
    elif dtype in DTYPE_SIZE and len(raw) != count * DTYPE_SIZE[dtype]:
        raise Refused("shape_mismatch", f"input {name!r}: {len(raw)} bytes of {dtype} data, its shape needs "
                                        f"{count * DTYPE_SIZE[dtype]}")


def _split_bytes(name: str, raw: bytes, count: int) -> list[bytes]:
    """Triton's serialized BYTES tensor: each element a 4-byte little-endian length, then its bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise Refused("invalid_binary", f"input {name!r}: truncated BYTES element")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise Refused("invalid_binary", f"input {name!r}: BYTES element longer than its data")
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    if len(out) != count:
        raise Refused("shape_mismatch", f"input {name!r} holds {len(out)} elements; its shape needs {count}")
    return out


def _check_strings(plan: InspectionPlan, name: str, values: list[bytes]) -> None:
    deny = _deny(plan.deny_patterns)
    for value in values:
        if len(value) > plan.max_element_bytes:
            raise Refused("element_too_long", f"input {name!r} has an element of {len(value)} bytes; the limit "
                                              f"is {plan.max_element_bytes}")
        if deny is not None and deny.search(value.decode("utf-8", "replace")):
            raise Refused("denied_pattern", f"input {name!r} matches a pattern this model refuses")


# --- gRPC -----------------------------------------------------------------------------------------------------
def grpc_messages(body: bytes) -> list[bytes]:
    """The messages of a gRPC body (5-byte frames: compressed flag, big-endian length)."""
    out, i = [], 0
    while i < len(body):
        if i + 5 > len(body):
            raise Refused("invalid_grpc", "truncated gRPC frame")
        flag, n = body[i], struct.unpack_from(">I", body, i + 1)[0]
        if flag != 0:
            raise Refused("invalid_grpc", "compressed gRPC messages cannot be inspected; send them uncompressed")
        if i + 5 + n > len(body):
            raise Refused("invalid_grpc", "gRPC frame longer than the body")
        out.append(body[i + 5:i + 5 + n])
        i += 5 + n
    return out


def check_grpc(plan: InspectionPlan, method: str, header_model: str, body: bytes) -> Refusal | None:
    try:
        _check_grpc(plan, method, header_model, body)
    except Refused as exc:
        return exc.refusal
    return None


def _check_grpc(plan: InspectionPlan, method: str, header_model: str, body: bytes) -> None:
    if len(body) > plan.max_request_bytes:
        raise Refused("body_too_large", f"request body of {len(body)} bytes exceeds {plan.max_request_bytes}")
    messages = grpc_messages(body)
    if len(messages) != 1:
        raise Refused("invalid_grpc", f"expected one request message, got {len(messages)}")
    kind = {"ModelInfer": service_pb2.ModelInferRequest, "ModelMetadata": service_pb2.ModelMetadataRequest,
            "ModelReady": service_pb2.ModelReadyRequest, "ModelConfig": service_pb2.ModelConfigRequest,
            "ModelStatistics": service_pb2.ModelStatisticsRequest}.get(method)
    if kind is None:
        raise Refused("unknown_method", f"{method} is not served through the gateway")
    try:
        request = kind.FromString(messages[0])
    except DecodeError:
        raise Refused("invalid_grpc", f"the body is not a {kind.__name__}") from None
    model = request.name if method != "ModelInfer" else request.model_name
    if model != header_model or model != plan.model:
        raise Refused("model_mismatch", f"the request names model {model!r}; the x-modelfleet-model header and "
                                        f"this route are for {plan.model!r}")
    if method != "ModelInfer":
        return
    if not request.inputs:
        raise Refused("invalid_grpc", "`inputs` must not be empty")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise Refused("invalid_grpc", f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    seen: set[str] = set()
    for index, tensor in enumerate(request.inputs):
        if tensor.name in seen:
            raise Refused("duplicate_input", f"input {tensor.name!r} is given twice")
        seen.add(tensor.name)
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            raise Refused("shape_mismatch", f"input {tensor.name!r} has a negative dimension")
        count = _check_tensor(plan, tensor.name, tensor.datatype, shape)
        if raw:
            _check_raw(plan, tensor.name, tensor.datatype, count, raw[index])
            continue
        field = GRPC_CONTENTS.get(tensor.datatype)
        values = list(getattr(tensor.contents, field)) if field else []
        if len(values) != count:
            raise Refused("shape_mismatch", f"input {tensor.name!r} holds {len(values)} elements; its shape needs "
                                            f"{count}")
        if tensor.datatype == "BYTES":
            _check_strings(plan, tensor.name, values)
    _check_all_inputs(plan, seen)


# --- responses -------------------------------------------------------------------------------------------------
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def filter_response(plan: InspectionPlan, body: bytes, grpc: bool) -> tuple[bytes, list[str]]:
    """(body, kinds found). Masks personal data in a KServe v2 JSON or binary response or a gRPC ModelInferResponse,
    in place and at the same length (the caller blocks instead when the plan says so). Only text is searched — JSON
    string literals and BYTES elements — never numbers: a float's digits must not pass for a card."""
    out = bytearray(body)
    kinds: set[str] = set()

    def scan(start: int, end: int) -> None:
        for finding in pii.find(bytes(out[start:end]), plan.pii_detectors):
            out[start + finding.start:start + finding.end] = b"*" * (finding.end - finding.start)
            kinds.add(finding.kind)

    if grpc:
        return _filter_grpc(plan, body)
    try:
        header, binary = _binary_split(body)
    except Refused:
        return body, []
    json_end = len(body) - len(binary)
    for m in JSON_STRING.finditer(body, 0, json_end):
        scan(m.start() + 1, m.end() - 1)
    offset = json_end
    outputs = header.get("outputs") if isinstance(header, dict) else None
    for output in outputs if isinstance(outputs, list) else []:
        params = output.get("parameters") if isinstance(output, dict) else None
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if type(size) is not int:
            continue
        if output.get("datatype") == "BYTES":
            for start, end in _element_spans(body, offset, offset + size):
                scan(start, end)
        offset += size
    return bytes(out), sorted(kinds)


def _element_spans(raw: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Where each element of a serialized BYTES tensor (4-byte little-endian length, then bytes) lies."""
    spans, i = [], start
    while i + 4 <= end:
        (n,) = struct.unpack_from("<I", raw, i)
        spans.append((i + 4, min(i + 4 + n, end)))
        i += 4 + n
    return spans


def _filter_grpc(plan: InspectionPlan, body: bytes) -> tuple[bytes, list[str]]:
    kinds: set[str] = set()
    frames = []
    for message in grpc_messages(body):
        response = service_pb2.ModelInferResponse.FromString(message)
        for index, output in enumerate(response.outputs):
            if output.datatype != "BYTES":
                continue
            if index < len(response.raw_output_contents):
                raw = bytearray(response.raw_output_contents[index])
                for start, end in _element_spans(raw, 0, len(raw)):
                    found = pii.find(bytes(raw[start:end]), plan.pii_detectors)
                    kinds.update(f.kind for f in found)
                    raw[start:end] = pii.mask(bytes(raw[start:end]), found)
                response.raw_output_contents[index] = bytes(raw)
            else:
                values = output.contents.bytes_contents
                for j, value in enumerate(values):
                    found = pii.find(value, plan.pii_detectors)
                    kinds.update(f.kind for f in found)
                    values[j] = pii.mask(value, found)
        # Same-length masks: the message re-serializes to the same size as Triton's.
        raw = response.SerializeToString()
        frames.append(b"\0" + struct.pack(">I", len(raw)) + raw)
    if not kinds:
        return body, []
    return b"".join(frames), sorted(kinds)
