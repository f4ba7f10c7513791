"""The gateway's own gRPC service, called by Envoy: API-key and JWT-claim authorization (ext_authz) and tensor
inspection with PII filtering (ext_proc). Locally each runs in its own process (`--role`), so inspection can be
down while authorization stays up.

Why two protocols: authorization must fail closed whatever a model's fail mode says, and Envoy's ext_authz has
its own failure switch (kept off), while inspection follows the model's `fail_mode` through ext_proc's
`failure_mode_allow`. Envoy asks ext_authz with a handful of headers only, and ext_proc only for the request body
(and the response body of models whose BYTES outputs are PII-filtered): no header round trips.

Messages are Envoy's protos (the fields used, `protos.py`) served over grpcio aio through generic handlers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from modelfleet.gateway import inspect
from modelfleet.gateway.keys import KeyStore
from modelfleet.gateway.plan import (
    API_KEY_HEADER,
    KEY_ID_HEADER,
    MODEL_HEADER,
    TENANT_HEADER,
    GatewayPlan,
    InspectionPlan,
)
from modelfleet.gateway.protos import (
    OVERWRITE_IF_EXISTS_OR_ADD,
    CheckRequest,
    CheckResponse,
    ProcessingRequest,
    ProcessingResponse,
)

log = logging.getLogger("modelfleet.gateway")
AUTHZ_METHOD = "/envoy.service.auth.v3.Authorization/Check"
EXT_PROC_METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
METADATA_NAMESPACE = "modelfleet"  # ext_proc writes its decision here; the audit line reads it
JWT_METADATA = ("envoy.filters.http.jwt_authn", "jwt_payload")
EXT_PROC_ATTRIBUTES = "envoy.filters.http.ext_proc"
PAYLOAD_AUDIT_BYTES = 4096  # the most of a request body an audit line carries when the model asks for payloads
GRPC_PERMISSION_DENIED, GRPC_UNAUTHENTICATED, GRPC_INVALID_ARGUMENT = 7, 16, 3


def _set(options, name: str, value: str, raw: bool = True) -> None:
    """Append a header that replaces any the client sent. ext_proc reads raw_value; ext_authz reads value."""
    header = {"key": name, "raw_value": value.encode()} if raw else {"key": name, "value": value}
    options.add(header=header, append_action=OVERWRITE_IF_EXISTS_OR_ADD)


class Authorizer:
    """ext_authz: who is calling (API key or a JWT Envoy already verified), may they call this model."""

    def __init__(self, plan: GatewayPlan, keys: KeyStore):
        self.plan = plan
        self.keys = keys

    def check(self, request: CheckRequest) -> CheckResponse:
        attrs = request.attributes
        ctx = attrs.context_extensions
        scope = ctx.get("scope", "")
        # The route names its methods; one without any (never rendered so) gets API keys, and its empty scope
        # admits no key.
        methods = [m for m in ctx.get("methods", "").split(",") if m in ("api-key", "jwt")] or ["api-key"]
        headers = attrs.request.http.headers
        jwt = None
        filter_metadata = attrs.metadata_context.filter_metadata
        if JWT_METADATA[0] in filter_metadata:
            jwt = MessageToDict(filter_metadata[JWT_METADATA[0]]).get(JWT_METADATA[1])
        if jwt is not None and "jwt" in methods:
            return self._jwt(jwt, scope)
        api_key = headers.get(API_KEY_HEADER)
        if api_key and "api-key" in methods:
            record, reason = self.keys.check(api_key, scope)
            if reason == "ok":
                return self._allow(record.tenant, record.key_id, reason)
            who = {"tenant": record.tenant, "key_id": record.key_id} if record else {}
            status = 403 if reason == "scope_denied" else 401
            return self._deny(status, reason, _AUTH_MESSAGES[reason].format(scope=scope), **who)
        wanted = " or ".join({"api-key": f"an {API_KEY_HEADER} header", "jwt": "a bearer token"}[m] for m in methods)
        return self._deny(401, "missing_credentials", f"this model needs {wanted}")

    def _jwt(self, claims: dict, scope: str) -> CheckResponse:
        jwt = self.plan.jwt
        tenant = str(claims.get(jwt.tenant_claim, "")) if jwt else ""
        key_id = "jwt:" + str(claims.get("jti", "-"))
        granted = claims.get(jwt.scope_claim, "") if jwt else ""
        granted = set(granted.split() if isinstance(granted, str) else granted or [])
        if not tenant:
            return self._deny(401, "no_tenant_claim", f"the token has no {jwt.tenant_claim if jwt else ''} claim")
        if scope not in granted and "infer:*" not in granted:
            return self._deny(403, "scope_denied", f"the token lacks scope {scope}", tenant=tenant, key_id=key_id)
        return self._allow(tenant, key_id, "ok")

    def _allow(self, tenant: str, key_id: str, reason: str) -> CheckResponse:
        response = CheckResponse()
        response.status.code = 0
        _set(response.ok_response.headers, TENANT_HEADER, tenant, raw=False)
        _set(response.ok_response.headers, KEY_ID_HEADER, key_id, raw=False)
        response.ok_response.headers_to_remove.extend([API_KEY_HEADER, "authorization"])  # the key stops here
        response.dynamic_metadata.update({"tenant": tenant, "key_id": key_id, "decision": "allow", "reason": reason})
        return response

    def _deny(self, status: int, reason: str, message: str, tenant: str = "", key_id: str = "") -> CheckResponse:
        response = CheckResponse()
        response.status.code = GRPC_PERMISSION_DENIED if status == 403 else GRPC_UNAUTHENTICATED
        response.denied_response.status.code = status
        _set(response.denied_response.headers, "content-type", "application/json", raw=False)
        response.denied_response.body = json.dumps({"error": message, "code": reason})
        response.dynamic_metadata.update({"tenant": tenant, "key_id": key_id, "decision": "deny", "reason": reason})
        return response


_AUTH_MESSAGES = {
    "malformed_key": "the API key is malformed",
    "unknown_key": "the API key is not valid",
    "revoked_key": "the API key has been revoked",
    "expired_key": "the API key has expired",
    "scope_denied": "the API key does not grant {scope}",
}


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


def handlers(plan: GatewayPlan, key_path: Path, roles: tuple[str, ...], drift=None
             ) -> dict[str, grpc.RpcMethodHandler]:
    """gRPC method handlers for the roles this process plays: "authz" (ext_authz), "extproc" (ext_proc)."""
    out = {}
    if "authz" in roles:
        authorizer = Authorizer(plan, KeyStore(key_path))

        async def check(request: CheckRequest, context) -> CheckResponse:
            return authorizer.check(request)

        out[AUTHZ_METHOD] = grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=CheckRequest.FromString,
            response_serializer=CheckResponse.SerializeToString)
    if "extproc" in roles:
        out[EXT_PROC_METHOD] = grpc.stream_stream_rpc_method_handler(
            Inspector(plan, drift).process, request_deserializer=ProcessingRequest.FromString,
            response_serializer=ProcessingResponse.SerializeToString)
    return out


async def serve(plan: GatewayPlan, key_path: Path, address: str, roles: tuple[str, ...] = ("authz", "extproc"),
                ready: asyncio.Event | None = None, drift=None) -> None:
    """Serve the given roles on `address` (host:port) until cancelled."""
    methods = handlers(plan, key_path, roles, drift)
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
