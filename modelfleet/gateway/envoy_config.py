"""The local Envoy's static bootstrap, generated from the gateway plan (what `modelfleet render` writes and
`modelfleet serve --stack local` runs). Pure: a dict from the plan and the ports of this machine's processes.

Filter chain, in order (each step only what it must do; authentication never leaves Envoy, ADR 0004):
  jwt_authn (models accepting JWTs; Envoy verifies signature, issuer, audience and expiry itself)
  -> modelfleet.authn (Lua, on routes that take tokens: the scope and tenant claims)
  -> modelfleet.keys (a dynamic module in C, its key table from a watched file: the key's hash, state, expiry and
     scope; tenant and key-id headers)  [native_auth.py, native/authn.c]
  -> local_ratelimit "rps", then "daily" (one token bucket per tenant and model; one Envoy process, so local
     limits are exact: the same buckets the cloud's Redis-backed global limit keeps)
  -> buffer (the model's body limit) -> modelfleet.inspect (HTTP: Envoy vouches for plainly well-formed requests
     itself and marks them; never refuses) [native_inspect.py]
  -> ext_proc, skipped for marked requests (our service: tensors, BYTES limits, deny patterns, PII; every refusal;
     the model's fail mode) -> router.
The audit log is Envoy's access log: one JSON line per request, whoever answered it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from modelfleet.canary import weights as canary_weights
from modelfleet.gateway import native_auth, native_inspect
from modelfleet.gateway.plan import (
    API_KEY_HEADER,
    KEY_ID_HEADER,
    MODEL_HEADER,
    TENANT_HEADER,
    GatewayPlan,
    RateLimitRule,
    RoutePlan,
)

EXT_PROC = "envoy.filters.http.ext_proc"
JWT_AUTHN = "envoy.filters.http.jwt_authn"
BUFFER = "envoy.filters.http.buffer"
RATE_LIMIT_FILTER = {"rps": "modelfleet.ratelimit.rps", "daily": "modelfleet.ratelimit.daily"}
EXTPROC_CLUSTER = "modelfleet_extproc"
SERVICE_TIMEOUT_S = 0.5
# Tenants get buckets on first use (wildcard descriptor); this bounds the memory a flood of tenants can take.
MAX_TENANT_BUCKETS = 10_000
# The default bucket every limited route also has: large enough never to bind, the tenant buckets do.
UNBOUNDED_TOKENS = 1_000_000_000
TYPE = "type.googleapis.com/"
# Open without credentials: liveness, readiness and server metadata (Triton's version and extensions, which
# perf_analyzer and tritonclient read first); none carries model data.
HEALTH_PATHS = ("/v2/health/live", "/v2/health/ready", "/v2")
GRPC_HEALTH = r"^/inference\.GRPCInferenceService/(ServerLive|ServerReady)$"


@dataclass(frozen=True)
class LocalPorts:
    """Where this machine's processes listen (the plan's listener ports unless a test picks free ones)."""

    http: int
    grpc: int
    admin: int
    triton_http: int
    triton_grpc: int
    extproc: int  # the service process answering ext_proc
    extproc_metrics: int = 0  # the ext_proc process's /metrics (drift gauges, modelfleet.monitoring); 0: off
    # The canaries' Triton (modelfleet.canary: `--model-config-name=canary` over the same repository); 0: none runs,
    # which a plan with a canary refuses.
    canary_triton_http: int = 0
    canary_triton_grpc: int = 0


# `modelfleet serve`'s defaults beside the plan's listeners: Triton's own ports, Envoy Gateway's usual ext_proc port.
TRITON_HTTP_PORT, TRITON_GRPC_PORT, EXTPROC_PORT, ADMIN_PORT = 8000, 8001, 9002, 9901
AUDIT_LOG = "audit.log"  # beside envoy.yaml; `modelfleet serve` runs Envoy from that folder
AUTH_DIR = "envoy-auth"  # `modelfleet render`'s default: the watched key files (native_auth), beside envoy.yaml


# The canaries' Triton, when a model has one (modelfleet.local.DEFAULT_PORTS).
CANARY_TRITON_HTTP_PORT, CANARY_TRITON_GRPC_PORT = 8010, 8011


def default_ports(plan: GatewayPlan) -> LocalPorts:
    canaries = any(r.canary_version is not None for r in plan.routes)
    return LocalPorts(plan.http_port, plan.grpc_port, ADMIN_PORT, TRITON_HTTP_PORT, TRITON_GRPC_PORT,
                      EXTPROC_PORT, canary_triton_http=CANARY_TRITON_HTTP_PORT if canaries else 0,
                      canary_triton_grpc=CANARY_TRITON_GRPC_PORT if canaries else 0)


_MF_MAP = "metadata.filter_metadata.modelfleet"
_MF = "'modelfleet' in metadata.filter_metadata"
_AUTHN_MAP = f"metadata.filter_metadata['{native_auth.AUTHN_FILTER}']"
_AUTHN_REASON = f"'{native_auth.AUTHN_FILTER}' in metadata.filter_metadata && 'reason' in {_AUTHN_MAP}"


def audit_format(plan: GatewayPlan, protocol: str, decision: str, reason: str) -> dict:
    """The audit line (Envoy access log json_format) of the `protocol` listener; see plan.AUDIT_FIELDS. Tenant and
    key id come from the authentication filter's headers (set on refusals too, so denied requests name their revoked
    or out-of-scope key; clients' copies are always replaced or removed)."""
    fields = {
        "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "tenant": f"%REQ({TENANT_HEADER})%",
        "key_id": f"%REQ({KEY_ID_HEADER})%",
        # A model route is named after its model (_model_route); open routes have no name, so no model. Cheaper
        # than reading the route's metadata: each %METADATA% field is a protobuf lookup and a Value to serialise, and
        # the two this replaced cost about 1-2 us of Envoy CPU per request (bench/gateway.py probe, side by side).
        "model": "%ROUTE_NAME%",
        # The chosen cluster's (HCM picks a weighted cluster when it resolves the route, before any filter runs, so
        # refused requests name the version they would have reached too).
        "version": "%METADATA(CLUSTER:modelfleet:version)%",
        "protocol": protocol,  # each listener has its own loggers
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS(NUMBER)%",
        "latency_ms": "%DURATION%",
        "decision": decision,
        "reason": reason,
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
    }
    assert tuple(fields) == plan.audit_fields, "the audit line and the plan's field list must agree"
    if any(r.inspection.audit_payloads for r in plan.routes):
        fields["payload"] = "%DYNAMIC_METADATA(modelfleet:payload)%"
    return fields


# Who decided, for the audit line. Answered requests (status < 400) that an inspection judged read its metadata;
# answered requests that only authentication saw (its tenant header is set; clients' copies never get that far)
# say so plainly; everything else — Envoy's own refusals, Triton's errors, open routes — evaluates expressions over
# the response details. A CEL field costs about 15 us per request here, a fifth of a plain Envoy's whole cost
# (ADR 0005), so the common answers do without. The three loggers share one file (Envoy opens a path once) and
# their filters split the requests: exactly one line each.
_INSPECTED = {"filter": "modelfleet", "path": [{"key": "decision"}], "value": {"present_match": True}}
_CEL_DECISION = (f"%CEL({_MF} ? {_MF_MAP}.decision : "
                 "(response.code_details == 'via_upstream' ? 'allow' : 'deny'))%")
_CEL_REASON = (f"%CEL({_MF} ? {_MF_MAP}.reason : ({_AUTHN_REASON} ? {_AUTHN_MAP}.reason : "
               "response.code_details))%")


def _authenticated(present: bool) -> dict:
    return {"header_filter": {"header": {"name": TENANT_HEADER, "present_match": True, "invert_match": not present}}}


def _has(matcher: dict) -> dict:
    return {"metadata_filter": {"matcher": matcher, "match_if_key_not_found": False}}


def _lacks(matcher: dict) -> dict:
    # Not the matcher's `invert`: Envoy 1.40's access-log metadata filter logged inverted matches anyway (three
    # lines for one request); a missing key is the case `match_if_key_not_found` decides.
    return {"metadata_filter": {"matcher": {**matcher, "value": {"present_match": False}},
                                "match_if_key_not_found": True}}


def _status(op: str, value: int) -> dict:
    return {"status_code_filter": {"comparison": {"op": op, "value": {
        "default_value": value, "runtime_key": f"modelfleet.audit.status_{op.lower()}"}}}}


def audit_loggers(plan: GatewayPlan, audit_path: str, protocol: str) -> list[dict]:
    """The `protocol` listener's audit log: one JSON line per request, whoever answered it (see the comment above
    for the split)."""
    answered = _status("LE", 399)
    splits = (
        ({"and_filter": {"filters": [answered, _has(_INSPECTED)]}},
         "%DYNAMIC_METADATA(modelfleet:decision)%", "%DYNAMIC_METADATA(modelfleet:reason)%"),
        ({"and_filter": {"filters": [answered, _lacks(_INSPECTED), _authenticated(True)]}},
         "allow", "%RESPONSE_CODE_DETAILS%"),
        ({"or_filter": {"filters": [_status("GE", 400),
                                    {"and_filter": {"filters": [_lacks(_INSPECTED), _authenticated(False)]}}]}},
         _CEL_DECISION, _CEL_REASON),
    )
    return [{"name": "envoy.access_loggers.file", "filter": only, "typed_config": {
        "@type": TYPE + "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": audit_path,
        # %CEL(...)% is built into Envoy 1.40's formatter (no extension to configure).
        "log_format": {"json_format": audit_format(plan, protocol, decision, reason)}}} for only, decision, reason in splits]


def envoy_bootstrap(plan: GatewayPlan, ports: LocalPorts, audit_path: str, jwks_file: str | None = None,
                    auth_folder: str = AUTH_DIR) -> dict:
    """`auth_folder`: where `native_auth.sync` writes the key filters' configs (Envoy watches it)."""
    return {
        # Extension config discovery (the key filters) needs a node identity, even from files.
        "node": {"id": "modelfleet-local", "cluster": "modelfleet-gateway"},
        "admin": {"address": _addr(ports.admin)},
        "static_resources": {
            "listeners": [
                _listener("http", ports.http, plan, audit_path, jwks_file, auth_folder, grpc=False),
                _listener("grpc", ports.grpc, plan, audit_path, jwks_file, auth_folder, grpc=True),
            ],
            "clusters": [
                _cluster("triton_http", ports.triton_http, http2=False),
                _cluster("triton_grpc", ports.triton_grpc, http2=True),
                # One cluster per model and protocol, named as Envoy Gateway's clusters end (route triton-<model>),
                # so Envoy's per-cluster stats carry the model: the SLO metrics (modelfleet.monitoring.metrics).
                *(_cluster(model_cluster(r.model, grpc), ports.triton_grpc if grpc else ports.triton_http, http2=grpc,
                           version=r.version)
                  for r in plan.routes for grpc in (False, True)),
                *(_cluster(canary_cluster(r.model, grpc), _canary_port(ports, grpc), http2=grpc,
                           version=r.canary_version)
                  for r in plan.routes if r.canary_version is not None for grpc in (False, True)),
                _cluster(EXTPROC_CLUSTER, ports.extproc, http2=True),
            ],
        },
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            # Envoy's defaults cap downstream connections at none; keep the overload manager quiet about it.
            "overload.global_downstream_max_connections": 50000}}]},
    }


def model_cluster(model: str, grpc: bool) -> str:
    return f"triton-{model}/grpc" if grpc else f"triton-{model}"


def canary_cluster(model: str, grpc: bool) -> str:
    """The canary's cluster: under the model's name (`triton-<model>/...`), so the SLO metrics, which match the
    model's clusters by that prefix (modelfleet.monitoring.metrics), count the canary's requests too."""
    return f"{model_cluster(model, grpc)}/canary"


def _canary_port(ports: LocalPorts, grpc: bool) -> int:
    port = ports.canary_triton_grpc if grpc else ports.canary_triton_http
    if not port:
        raise ValueError("a model has a canary (rollout.canary_version), but no canary Triton runs: give LocalPorts "
                         "canary_triton_http/canary_triton_grpc (modelfleet.local starts it)")
    return port


def _upstream(route: RoutePlan, grpc: bool) -> dict:
    """Where the route sends its requests. With a canary: both Tritons in one route, weighted 100 - p / p, the same
    split the cloud's HTTPRoute/GRPCRoute make with backendRef weights, by the same mechanism (a weighted choice per
    request between two upstreams). Locally the canary is a second Triton reading the same repository with
    `--model-config-name=canary`, as the canary Deployment does, rather than a path rewrite to
    `/versions/<v>/` on the one Triton: a rewrite cannot reach gRPC, whose version is a field of the protobuf body,
    and would make the local stack load both versions in one server where the cloud never does."""
    stable = model_cluster(route.model, grpc)
    if route.canary_version is None:
        return {"cluster": stable}
    stable_weight, canary_weight = canary_weights(route.canary_percent)
    return {"weighted_clusters": {"clusters": [
        {"name": stable, "weight": stable_weight},
        {"name": canary_cluster(route.model, grpc), "weight": canary_weight}]}}


def _addr(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, port: int, http2: bool, version: int | None = None) -> dict:
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _addr(port)}}]}]},
        # Defaults (1024 pending/active) are what a single Triton takes; no retries: inference is not idempotent
        # enough to repeat behind a client's back.
    }
    if version is not None:
        # The model version this cluster's Triton serves, for the audit line: with a canary the route's weighted
        # choice of cluster, not the route, says which version a request went to.
        cluster["metadata"] = {"filter_metadata": {"modelfleet": {"version": str(version)}}}
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def _listener(kind: str, port: int, plan: GatewayPlan, audit_path: str, jwks_file: str | None, auth_folder: str,
              grpc: bool) -> dict:
    routes = [_model_route(r, plan, grpc) for r in plan.routes]
    # Open routes need no key, and Triton never gets one a client sends anyway.
    health = ([{"match": {"safe_regex": {"regex": GRPC_HEALTH}}, "route": {"cluster": "triton_grpc"},
                "typed_per_filter_config": _open_route(plan), "request_headers_to_remove": [API_KEY_HEADER]}]
              if grpc else
              [{"match": {"path": p}, "route": {"cluster": "triton_http"},
                "typed_per_filter_config": _open_route(plan), "request_headers_to_remove": [API_KEY_HEADER]}
               for p in HEALTH_PATHS])
    hcm = {
        "@type": TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"gateway_{kind}",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "always_set_request_id_in_response": True,  # the client can quote it; the audit line carries it
        # Client-sent request ids are not trusted for the audit trail.
        "preserve_external_request_id": False,
        "route_config": {"name": f"models_{kind}", "virtual_hosts": [
            {"name": "models", "domains": ["*"], "routes": health + routes}]},
        # Identity headers are the gateway's to set: a client's copies go before any filter (as the cloud's
        # ClientTrafficPolicy does), so neither the audit line nor a limit can see them.
        "early_header_mutation_extensions": [{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": TYPE + "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                "mutations": [{"remove": h} for h in (TENANT_HEADER, KEY_ID_HEADER,
                                                      native_inspect.INSPECTED_HEADER)]}}],
        "http_filters": _filters(plan, jwks_file, auth_folder, grpc),
        "access_log": audit_loggers(plan, audit_path, kind),
        "local_reply_config": {"mappers": _reply_mappers()},
    }
    return {
        "name": f"gateway_{kind}",
        "address": _addr(port),
        # The whole request may sit in Envoy's buffer for inspection: allow the largest model's body.
        "per_connection_buffer_limit_bytes": max(r.max_request_bytes for r in plan.routes) + 65536,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _reply_mappers() -> list[dict]:
    """Envoy's own refusals as JSON, like the service's: oversized bodies are the client's error (400)."""
    def mapper(code: int, new_code: int | None, error: str, reason: str) -> dict:
        m = {"filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {
                 "default_value": code, "runtime_key": f"modelfleet.reply_{code}"}}}},
             "body_format_override": {"json_format": {"error": error, "code": reason, "detail": "%RESPONSE_CODE_DETAILS%"},
                                      "content_type": "application/json"}}
        if new_code:
            m["status_code"] = new_code
        return m
    return [
        mapper(413, 400, "the request body exceeds this model's limit", "body_too_large"),
        mapper(429, None, "rate limit or daily quota exceeded for this tenant; retry after Retry-After seconds",
               "rate_limited"),
        mapper(503, None, "the model or the gateway's services are unavailable; retry", "unavailable"),
        mapper(404, None, "no such route: KServe v2 under /v2/models/<model>, or gRPC with the "
                          f"{MODEL_HEADER} header", "no_route"),
    ]


def _filters(plan: GatewayPlan, jwks_file: str | None, auth_folder: str, grpc: bool) -> list[dict]:
    max_body = max(r.max_request_bytes for r in plan.routes)
    filters = []
    if plan.jwt is not None:
        filters.append({"name": JWT_AUTHN, "typed_config": _jwt_authn(plan, jwks_file)})
        filters.append(native_auth.jwt_filter(plan))
    filters.append(native_auth.ecds_filter(Path(auth_folder)))
    for name in ("rps", "daily"):
        filters.append({"name": RATE_LIMIT_FILTER[name], "typed_config": {
            "@type": TYPE + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": f"modelfleet_{name}"}})  # off here; each model's route turns it on with its buckets
    filters.append({"name": BUFFER, "typed_config": {
        "@type": TYPE + "envoy.extensions.filters.http.buffer.v3.Buffer", "max_request_bytes": max_body}})
    ext_proc = {
        "@type": TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}, "timeout": f"{SERVICE_TIMEOUT_S}s"},
        "failure_mode_allow": False,
        "processing_mode": {"request_header_mode": "SKIP", "request_body_mode": "BUFFERED",
                            "response_header_mode": "SKIP", "response_body_mode": "NONE"},
        "request_attributes": ["request.path", f"request.headers['{MODEL_HEADER}']"],
        "message_timeout": f"{plan.ext_proc_message_timeout_ms / 1000:g}s",
        "metadata_options": {"receiving_namespaces": {"untyped": ["modelfleet"]}},
        "status_on_error": {"code": 503},
    }
    fast = not grpc and any(native_inspect.fast_path(r.inspection) for r in plan.routes)
    if fast:  # the HTTP listener: Envoy vouches for plainly well-formed requests itself (native_inspect)
        filters.append(native_inspect.lua_filter(plan))
        filters.append(native_inspect.skip_when_inspected(EXT_PROC, ext_proc))
    else:
        filters.append({"name": EXT_PROC, "typed_config": ext_proc})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": TYPE + "envoy.extensions.filters.http.router.v3.Router",
        # As Envoy Gateway's router (GenerateRouterFilter: SuppressEnvoyHeaders unless a ClientTrafficPolicy sets
        # headers.enableEnvoyHeaders): no x-envoy-upstream-service-time to clients, which would tell them the model's
        # own latency, and no x-envoy-expected-rq-timeout-ms to Triton. Local answers look like the cloud's.
        "suppress_envoy_headers": True}})
    return filters


def _jwt_authn(plan: GatewayPlan, jwks_file: str | None) -> dict:
    jwt = plan.jwt
    provider = {
        "issuer": jwt.issuer,
        "audiences": list(jwt.audiences),
        "payload_in_metadata": "jwt_payload",
        "forward": False,
    }
    source = jwks_file or jwt.jwks_file
    if source:
        provider["local_jwks"] = {"filename": source}
    else:
        raise ValueError("the local gateway reads JWKS from a file (gateway.jwt.jwks_file): it may have no network")
    requirements = {}
    for route in plan.routes:
        methods = set(route.auth.methods)
        if methods == {"jwt"}:
            requirements[route.model] = {"provider_name": jwt.provider}
        elif "jwt" in methods:  # a token, when present, must be valid; without one the API key decides
            requirements[route.model] = {"requires_any": {"requirements": [
                {"provider_name": jwt.provider}, {"allow_missing": {}}]}}
    return {"@type": TYPE + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {jwt.provider: provider}, "requirement_map": requirements}


def _open_route(plan: GatewayPlan) -> dict:
    """Health checks: no credentials, no inspection (they carry no model data)."""
    config = {
        EXT_PROC: {"@type": TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute", "disabled": True},
    }
    if plan.jwt is not None:
        config[native_auth.AUTHN_FILTER] = native_auth.jwt_route_config(())
    return config


def _model_route(route: RoutePlan, plan: GatewayPlan, grpc: bool) -> dict:
    insp = route.inspection
    if grpc:
        methods = "|".join(route.grpc_methods)
        match = {"safe_regex": {"regex": rf"^/{re.escape(route.grpc_service)}/({methods})$"},
                 "headers": [{"name": route.grpc_model_header, "string_match": {"exact": route.model}}],
                 "grpc": {}}
    else:
        match = {"safe_regex": {"regex": rf"^{re.escape(route.http_path_prefix)}(/versions/[0-9]+)?"
                                         r"(/(ready|config|infer|stats))?$"}}
    per_filter = {
        BUFFER: {"@type": TYPE + "envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                 "buffer": {"max_request_bytes": route.max_request_bytes}},
        EXT_PROC: {"@type": TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
                   "overrides": {"processing_mode": insp.processing_mode,
                                 "failure_mode_allow": insp.failure_mode_allow}},
    }
    if plan.jwt is not None:
        per_filter[JWT_AUTHN] = ({"@type": TYPE + "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                                  "requirement_name": route.model} if "jwt" in route.auth.methods else
                                 {"@type": TYPE + "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                                  "disabled": True})
        if (lua := native_auth.jwt_route_config(route.auth.methods)) is not None:
            per_filter[native_auth.AUTHN_FILTER] = lua
    for rule in route.rate_limits:
        per_filter[RATE_LIMIT_FILTER[rule.name]] = _rate_limit(rule)
    # The audit line's model is the route's name and its version the chosen cluster's (with a canary the two
    # versions share this route).
    metadata = {native_auth.AUTHN_FILTER: native_auth.route_metadata(plan, route.auth.methods, route.auth.scope)}
    fast_path = None if grpc else native_inspect.route_metadata(insp)
    if fast_path:
        metadata[native_inspect.FILTER] = fast_path
    return {
        # The model's name alone: names are unique per listener's route table, and the audit line reads it.
        "name": route.model,
        "match": match,
        "route": {**_upstream(route, grpc), "timeout": "60s"},
        "metadata": {"filter_metadata": metadata},
        "typed_per_filter_config": per_filter,
        # The fast path's mark stops here, and so does a key whatever checked the request (the key check drops it;
        # a token route may carry one the token check left).
        "request_headers_to_remove": [API_KEY_HEADER, native_inspect.INSPECTED_HEADER],
    }


def _rate_limit(rule: RateLimitRule) -> dict:
    percent = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "@type": TYPE + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": f"modelfleet_{rule.name}_{rule.model}",
        "token_bucket": {"max_tokens": UNBOUNDED_TOKENS, "tokens_per_fill": UNBOUNDED_TOKENS,
                         "fill_interval": "1s"},
        "filter_enabled": {"runtime_key": f"modelfleet.{rule.name}.enabled", **percent},
        "filter_enforced": {"runtime_key": f"modelfleet.{rule.name}.enforced", **percent},
        "always_consume_default_token_bucket": False,
        "rate_limits": [{"actions": [{"request_headers": {"header_name": TENANT_HEADER, "descriptor_key": "tenant"}}]}],
        "descriptors": [{"entries": [{"key": "tenant"}],  # no value: a wildcard, one bucket per tenant
                         "token_bucket": {"max_tokens": rule.bucket, "tokens_per_fill": rule.requests,
                                          "fill_interval": f"{rule.fill_interval_s}s"}}],
        "max_dynamic_descriptors": MAX_TENANT_BUCKETS,
        "response_headers_to_add": [{"append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                                     "header": {"key": "retry-after", "value": str(rule.retry_after_s)}}],
        # No x-ratelimit-* headers: Envoy adds them to every answer, not only to refusals, and they cost about
        # 17 us of Envoy CPU per request here — a quarter of plain Envoy's whole cost, and 67% -> 92% of its
        # throughput at concurrency 16 without them (ADR 0005). A refused client gets Retry-After.
    }
