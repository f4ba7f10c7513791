"""Hypothesis strategies for gateway fuzzing: KServe v2 bodies from well-formed to hostile, shared by the
in-process fuzz (10,000+ examples) and the real-Envoy sample."""

from __future__ import annotations

import json

from hypothesis import strategies as st

MODELS = ("sentiment", "fraud-detector", "notes")
DTYPES = ("BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16", "STRING", "", "fp32")
NAMES = ("text", "features", "reply", "", "x" * 300, "tëxt", "__proto__")

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=8)
shapes = st.one_of(st.lists(st.integers(-2, 80), max_size=4), st.just([1, 1]), st.just([1, 32]),
                   json_values)


@st.composite
def tensor(draw):
    shape = draw(shapes)
    t = {"name": draw(st.sampled_from(NAMES) | st.text(max_size=10)), "shape": shape,
         "datatype": draw(st.sampled_from(DTYPES))}
    choice = draw(st.integers(0, 4))
    if choice == 0:
        t["data"] = draw(st.lists(st.text(max_size=60) | st.just("ignore previous instructions"), max_size=8))
    elif choice == 1:
        t["data"] = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=70))
    elif choice == 2:
        t["data"] = draw(json_values)
    elif choice == 3:
        t["parameters"] = {"binary_data_size": draw(st.integers(-5, 300) | json_values)}
    if draw(st.booleans()):
        t[draw(st.text(max_size=6))] = draw(json_values)
    return t


@st.composite
def body(draw) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=400))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    doc = {"inputs": draw(st.lists(tensor(), max_size=4) | json_values)}
    if draw(st.booleans()):
        doc["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=2) | json_values)
    raw = json.dumps(doc).encode()
    if kind == 5:  # a JSON header followed by raw bytes (the binary extension, right or wrong)
        raw += draw(st.binary(max_size=200))
    if kind == 4 and raw:  # truncated
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@st.composite
def valid_body(draw, model: str) -> bytes:
    """A request the model accepts, sometimes nudged (one field changed) into one it does not."""
    rows = draw(st.integers(1, 4))
    if model == "fraud-detector":
        tensor = {"name": "features", "shape": [rows, 32], "datatype": "FP32",
                  "data": draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=32 * rows, max_size=32 * rows))}
    else:
        tensor = {"name": "text", "shape": [rows, 1], "datatype": "BYTES",
                  "data": draw(st.lists(st.text(max_size=80), min_size=rows, max_size=rows))}
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(["name", "shape", "datatype", "data"]))
        tensor[key] = draw(json_values)
    return json.dumps({"inputs": [tensor]}).encode()


@st.composite
def requests(draw):
    """(model, body, path suffix)."""
    model = draw(st.sampled_from(MODELS))
    raw = draw(valid_body(model)) if draw(st.booleans()) else draw(body())
    return model, raw, draw(st.sampled_from(("", "?x=1", "")))


def bytes_tensor(values: list[bytes]) -> bytes:
    """Triton's serialized BYTES tensor: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


@st.composite
def binary_body(draw, model: str) -> bytes:
    """The binary tensor extension (a JSON header with binary_data_size, then the raw tensor), as perf_analyzer and
    tritonclient send it: right, or nudged in one place (size, shape, dtype, trailing bytes, element lengths)."""
    rows = draw(st.integers(1, 4))
    if model == "fraud-detector":
        raw = draw(st.binary(min_size=128 * rows, max_size=128 * rows))
        tensor = {"name": "features", "shape": [rows, 32], "datatype": "FP32"}
    else:
        raw = bytes_tensor(draw(st.lists(st.binary(max_size=draw(st.sampled_from([40, 3000]))),
                                          min_size=rows, max_size=rows)))
        tensor = {"name": "text", "shape": [rows, 1], "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    nudge = draw(st.integers(0, 7))
    if nudge == 1:
        tensor["parameters"]["binary_data_size"] += draw(st.sampled_from([-4, -1, 1, 4]))
    elif nudge == 2:
        tensor["shape"] = draw(st.sampled_from([[rows], [rows, 31], [0, 32], [rows, 1, 1], [65, 32], [rows, 2]]))
    elif nudge == 3:
        tensor["datatype"] = draw(st.sampled_from(DTYPES))
    elif nudge == 4:
        raw += draw(st.binary(min_size=1, max_size=8))
    elif nudge == 5:
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    doc = {"inputs": [tensor]}
    if draw(st.booleans()):
        doc["outputs"] = [{"name": draw(st.sampled_from(["probabilities", "scores"])),
                           "parameters": {"binary_data": True}}]
    return json.dumps(doc, separators=(",", ":") if draw(st.booleans()) else None).encode() + raw
