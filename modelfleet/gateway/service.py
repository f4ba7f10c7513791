"""The gateway's own gRPC service, called by Envoy: tensor inspection with PII filtering (ext_proc). Authentication
is not here: Envoy does it itself (`native_auth`, ADR 0004), so a request that inspection does not need never
leaves the proxy, and authentication cannot fail open with the service.

Inspection follows the model's `fail_mode` through ext_proc's `failure_mode_allow`. Envoy asks only for the
request body (and the response body of models whose BYTES outputs are PII-filtered): no header round trips.

Messages are Envoy's protos (the fields used, `protos.py`) served over grpcio aio through generic handlers.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import grpc

from modelfleet.gateway import inspect
from modelfleet.gateway.plan import MODEL_HEADER, GatewayPlan, InspectionPlan
from modelfleet.gateway.protos import OVERWRITE_IF_EXISTS_OR_ADD, ProcessingRequest, ProcessingResponse

log = logging.getLogger("modelfleet.gateway")
EXT_PROC_METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
METADATA_NAMESPACE = "modelfleet"  # ext_proc writes its decision here; the audit line reads it
EXT_PROC_ATTRIBUTES = "envoy.filters.http.ext_proc"
PAYLOAD_AUDIT_BYTES = 4096  # the most of a request body an audit line carries when the model asks for payloads
GRPC_PERMISSION_DENIED, GRPC_INVALID_ARGUMENT = 7, 3


def _set(options, name: str, value: str) -> None:
    """Append a header that replaces any the client sent (ext_proc reads raw_value)."""
    options.add(header={"key": name, "raw_value": value.encode()}, append_action=OVERWRITE_IF_EXISTS_OR_ADD)


class Inspector:
    """ext_proc: one stream per request; the request body, then (PII models only) the response body."""

    def __init__(self, plan: GatewayPlan, drift=None):
        self.routes = {r.model: r.inspection for r in plan.routes}
        self.drift = drift  # a modelfleet.monitoring.drift_exporter.DriftSampler, or None

    def _plan_for(self, path: str, header_model: str) -> tuple[InspectionPlan | None, bool, str]:
        """(plan, grpc, method) for a request, from the attributes Envoy sends with the body."""
        if path.startswith("/inference.GRPCInferenceService/"):
            return self.routes.get(header_model), True, path.rsplit("/", 1)[1]
        parts = path.split("?", 1)[0].split("/")
        model = parts[3] if len(parts) > 3 and parts[1:3] == ["v2", "models"] else ""
        return self.routes.get(model), False, ""

    async def process(self, requests, context) -> None:
        plan = grpc_call = method = None
        seen = ("", "")  # path and model header from the request headers, where Envoy sends them first
        async for req in requests:
            phase = _phase(req)
            if phase == "request_headers":
                seen = _from_headers(req, _attributes(req))
            if phase == "request_body":
                path, header_model = _attributes(req)
                path, header_model = path or seen[0], header_model or seen[1]
                plan, grpc_call, method = self._plan_for(path, header_model)
                yield self._request(plan, grpc_call, method, header_model, path, req.request_body.body)
            elif phase == "response_body":
                yield self._response(plan, grpc_call, req.response_body.body)
            else:  # headers or trailers (response headers of PII-blocking models): let them pass untouched
                yield _pass_through(phase)

    def _request(self, plan, grpc_call, method, header_model, path, body: bytes) -> ProcessingResponse:
        if plan is None:
            return _refuse(inspect.Refusal(404, "unknown_model", f"no model is routed for {path}"), "-", grpc_call)
        refusal = (inspect.check_grpc(plan, method, header_model, body) if grpc_call
                   else inspect.check_http(plan, path, body))
        if refusal is not None:
            return _refuse(refusal, plan.model, grpc_call)
        if self.drift is not None and not grpc_call:
            self.drift.observe_http(plan.model, body)  # only requests Triton will see
        meta = {"decision": "allow", "reason": "inspected"}
        if plan.audit_payloads:
            meta["payload"] = base64.b64encode(body[:PAYLOAD_AUDIT_BYTES]).decode()
        response = ProcessingResponse()
        response.request_body.response.SetInParent()
        response.dynamic_metadata.update({METADATA_NAMESPACE: meta})
        return response

    def _response(self, plan, grpc_call, body: bytes) -> ProcessingResponse:
        unchanged = ProcessingResponse()
        unchanged.response_body.response.SetInParent()
        if plan is None or not plan.response_body:
            return unchanged
        try:
            masked, kinds = inspect.filter_response(plan, body, bool(grpc_call))
        except Exception:  # an answer we cannot parse is not ours to judge: Triton's own error, say
            log.exception("response of %s not parsed; passed unfiltered", plan.model)
            return unchanged
        if not kinds:
            return unchanged
        if plan.pii_mode == "block":
            refusal = inspect.Refusal(451, "pii_blocked", "the model's answer contains personal data "
                                                          f"({', '.join(kinds)}) and was withheld")
            return _refuse(refusal, plan.model, bool(grpc_call), phase="response")
        response = ProcessingResponse()
        response.response_body.response.body_mutation.body = masked
        response.dynamic_metadata.update({METADATA_NAMESPACE: {"decision": "mask",
                                                               "reason": "pii_masked:" + "+".join(kinds)}})
        return response


_PHASES = ("request_headers", "response_headers", "request_body", "response_body", "request_trailers",
           "response_trailers")


def _phase(req: ProcessingRequest) -> str:
    return next((name for name in _PHASES if req.HasField(name)), "")


def _attributes(req: ProcessingRequest) -> tuple[str, str]:
    """The request path and the gRPC model header, sent by Envoy as attributes with the first message."""
    if EXT_PROC_ATTRIBUTES not in req.attributes:
        return "", ""
    fields = req.attributes[EXT_PROC_ATTRIBUTES].fields
    path = fields["request.path"].string_value if "request.path" in fields else ""
    key = f"request.headers['{MODEL_HEADER}']"
    return path, fields[key].string_value if key in fields else ""


def _from_headers(req: ProcessingRequest, attributes: tuple[str, str]) -> tuple[str, str]:
    """Path and model header from a request_headers message. Envoy Gateway always sends the request's headers
    before its body (its processingMode has no header-skipping mode), with the attributes on that first message;
    its CRD admits only `request.path`-style attributes (no `request.headers[...]`), so in the cloud the model
    header is read from the headers themselves (modelfleet.gateway.manifests.extension_policy)."""
    path, model = attributes
    for header in req.request_headers.headers.headers:
        value = header.raw_value.decode(errors="replace") if header.raw_value else header.value
        if header.key == ":path" and not path:
            path = value
        elif header.key == MODEL_HEADER and not model:
            model = value
    return path, model


def _pass_through(phase: str) -> ProcessingResponse:
    response = ProcessingResponse()
    if phase.endswith("headers"):
        getattr(response, phase).response.SetInParent()
    elif phase:
        getattr(response, phase).SetInParent()
    return response


def _refuse(refusal: inspect.Refusal, model: str, grpc_call: bool, phase: str = "request") -> ProcessingResponse:
    response = ProcessingResponse()
    immediate = response.immediate_response
    immediate.status.code = refusal.status
    _set(immediate.headers.set_headers, "content-type", "application/json")
    immediate.body = refusal.json_body(model)
    if grpc_call:
        immediate.grpc_status.status = GRPC_INVALID_ARGUMENT if refusal.status == 400 else GRPC_PERMISSION_DENIED
    immediate.details = f"modelfleet_{refusal.code}"
    response.dynamic_metadata.update({METADATA_NAMESPACE: {
        "decision": "block" if phase == "response" else "deny", "reason": refusal.code}})
    return response


def _warm_up(plan: GatewayPlan) -> None:
    """Run each check once before serving, so imports and first-use caches do not spend a request's ext_proc
    timeout."""
    inspector = Inspector(plan)
    for route in plan.routes:
        inspector._request(route.inspection, False, "", route.model, f"/v2/models/{route.model}/infer", b"{}")
        inspector._request(route.inspection, True, "ModelInfer", route.model, "", b"\0\0\0\0\0")


def handlers(plan: GatewayPlan, drift=None) -> dict[str, grpc.RpcMethodHandler]:
    """gRPC method handlers: ext_proc's Process."""
    return {EXT_PROC_METHOD: grpc.stream_stream_rpc_method_handler(
        Inspector(plan, drift).process, request_deserializer=ProcessingRequest.FromString,
        response_serializer=ProcessingResponse.SerializeToString)}


async def serve(plan: GatewayPlan, address: str, ready: asyncio.Event | None = None, drift=None) -> None:
    """Serve inspection on `address` (host:port) until cancelled."""
    methods = handlers(plan, drift)
    _warm_up(plan)

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            return methods.get(details.method)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((Handler(),))
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    if ready is not None:
        ready.set()
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0.5)
