"""The gateway plan: what Envoy (local) and Envoy Gateway (cloud) enforce for each model, as plain data.

Pure: computed from the specs alone, no I/O. The local Envoy config (`envoy_config.py`), the inspection service
(`extproc.py`) and the cloud components all read these values, so the two shells enforce the same rules.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

from modelfleet.spec import PII_DETECTORS as PII_DETECTORS_ALL
from modelfleet.spec import ModelSpec, StackSpec

# --- contracts shared by the local and cloud shells ------------------------------------------------------
API_KEY_HEADER = "x-api-key"
# Set by the gateway after authentication (any client-sent value is overwritten); the rate limiter keys on the
# tenant and the audit log records both. Triton never sees the key itself.
TENANT_HEADER = "x-modelfleet-tenant"
KEY_ID_HEADER = "x-modelfleet-key-id"
# gRPC carries the model name inside the protobuf body, where no router can read it: clients name the model in
# this header (tritonclient: `headers={...}`) and the inspection service checks it equals the body's model_name.
MODEL_HEADER = "x-modelfleet-model"
# Set on the cloud gateway's answers by the model's route (Gateway API ResponseHeaderModifier): the version that
# answered, which the audit line reads (Triton's own answer says it only inside the body).
VERSION_HEADER = "x-modelfleet-version"
GRPC_SERVICE = "inference.GRPCInferenceService"
# Per-model methods only; streaming (ModelStreamInfer) cannot be buffered for inspection, so it is not routed.
GRPC_MODEL_METHODS = ("ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig", "ModelStatistics")
DEFAULT_LOCAL_PORTS = (8080, 8081)  # HTTP, gRPC on 127.0.0.1
CLOUD_TLS_PORT = 443
# Envoy waits this long for one ext_proc answer before applying the fail mode; a stuck service must not hang
# clients (measured: a buffered body round trip costs well under 10 ms here).
EXT_PROC_MESSAGE_TIMEOUT_MS = 500
# Retry-After for the per-second limit; the daily quota's is a day (SECONDS_PER_DAY).
RETRY_AFTER_RPS_S = 1
SECONDS_PER_DAY = 86_400
# Audit line fields, in order. No payloads unless the model's spec asks (audit.payloads).
AUDIT_FIELDS = ("time", "request_id", "tenant", "key_id", "model", "version", "protocol", "method", "path",
                "status", "grpc_status", "latency_ms", "decision", "reason", "bytes_in", "bytes_out")


# --- API keys ----------------------------------------------------------------------------------------------
# A key is `mf_<key_id>_<secret>`: the id (12 hex) is public and goes into logs; the secret is 32 random bytes
# (base64url). Stored is only a hash of the key, in htpasswd's form (`{SHA}` + base64 of SHA-1; chosen when Envoy's
# basic_auth checked it, kept by the key check that replaced it, native/authn.c): with 256 bits of entropy no
# dictionary or collision helps an attacker (finding a preimage is what would; SHA-1 has no known preimage attack),
# so the fast hash is as safe as a slow one and keeps the per-request check to one hash. See docs/adr/0004 and 0006.
KEY_PREFIX = "mf"
KEY_ID_HEX = 12
KEY_SECRET_MIN = 40


def key_hash(api_key: str) -> str:
    """htpasswd's `{SHA}` form (what the key check compares): keys made before it (`sha256:`) must be re-created."""
    return "{SHA}" + base64.b64encode(hashlib.sha1(api_key.encode()).digest()).decode()


def cloud_client_id(tenant: str, key_id: str) -> str:
    """The client id of a key in the cloud's API-key secret (Envoy Gateway apiKeyAuth: client id -> key)."""
    return f"{tenant}.{key_id}"


@dataclass(frozen=True)
class KeyRecord:
    """One API key as stored: never the key, only its hash."""

    key_id: str
    tenant: str
    scopes: tuple[str, ...]  # model scopes (`infer:<model>`), or `infer:*` for every model
    hash: str
    created: str  # ISO 8601 UTC
    expires: str | None = None
    revoked: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "infer:*" in self.scopes


# --- the plan ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JwtPlan:
    provider: str  # name of the provider in Envoy's jwt_authn / the SecurityPolicy
    issuer: str
    audiences: tuple[str, ...]
    jwks_uri: str
    jwks_file: str | None
    tenant_claim: str
    scope_claim: str


@dataclass(frozen=True)
class AuthPlan:
    methods: tuple[Literal["api-key", "jwt"], ...]
    scope: str  # a key or token must carry it (or infer:*)
    api_key_header: str = API_KEY_HEADER
    tenant_header: str = TENANT_HEADER
    key_id_header: str = KEY_ID_HEADER


@dataclass(frozen=True)
class RateLimitRule:
    """One token bucket per tenant for one model: `requests` per `unit`, holding at most `bucket` tokens.
    Each distinct value of `tenant_header` gets its own bucket (Envoy Gateway: clientSelectors type Distinct;
    local Envoy: a wildcard descriptor entry)."""

    name: Literal["rps", "daily"]
    model: str
    tenant_header: str
    requests: int
    unit: Literal["Second", "Day"]
    bucket: int
    fill_interval_s: int
    retry_after_s: int

    @property
    def descriptor(self) -> tuple[tuple[str, str], ...]:
        """Envoy descriptor entries; an empty value is a wildcard: one bucket per tenant."""
        return (("model", self.model), ("limit", self.name), ("tenant", ""))


@dataclass(frozen=True)
class TensorRule:
    name: str
    dtype: str
    dims: tuple[int, ...]  # without the batch dimension; -1 is variable
    optional: bool = False  # requests may leave it out
    shape_checked: bool = True  # shape tensors follow their own batching rules: name and dtype only


@dataclass(frozen=True)
class InspectionPlan:
    """What the ext_proc service checks, and which phases Envoy sends it (only those it needs)."""

    model: str
    version: int
    max_batch_size: int  # 0: inputs carry no batch dimension
    inputs: tuple[TensorRule, ...]
    check_tensors: bool
    max_request_bytes: int
    max_element_bytes: int
    max_elements: int
    deny_patterns: tuple[str, ...]
    bytes_outputs: tuple[str, ...]
    pii_mode: Literal["off", "mask", "block"]
    pii_detectors: tuple[str, ...]
    fail_mode: Literal["closed", "open"]
    audit_payloads: bool
    drift_sampled: bool = False  # the service samples this model's accepted requests for drift (monitoring)

    @property
    def response_body(self) -> bool:
        """Only a model with BYTES outputs and PII filtering on pays for the response phase."""
        return self.pii_mode != "off" and bool(self.bytes_outputs)

    @property
    def failure_mode_allow(self) -> bool:
        return self.fail_mode == "open"

    @property
    def processing_mode(self) -> dict[str, str]:
        """Envoy's ext_proc ProcessingMode. Request headers are skipped: the path and the model header reach the
        service as attributes with the body, which saves a round trip per request."""
        return {
            "request_header_mode": "SKIP",
            "request_body_mode": "BUFFERED",
            # Blocking replaces the whole answer, so Envoy must hold the response headers until the body is judged
            # (skipped headers go to the client at once); masking keeps lengths, so the headers can go ahead.
            "response_header_mode": "SEND" if self.response_body and self.pii_mode == "block" else "SKIP",
            "response_body_mode": "BUFFERED" if self.response_body else "NONE",
            "request_trailer_mode": "SKIP",
            "response_trailer_mode": "SKIP",
        }


@dataclass(frozen=True)
class RoutePlan:
    """A model's routes: KServe v2 HTTP under `/v2/models/<model>` (whole path segments: the model, its
    versions, ready, config, infer, stats) and the gRPC
    inference service's per-model methods, selected by MODEL_HEADER."""

    model: str
    version: int
    http_path_prefix: str
    grpc_service: str
    grpc_methods: tuple[str, ...]
    grpc_model_header: str
    auth: AuthPlan
    rate_limits: tuple[RateLimitRule, ...]
    inspection: InspectionPlan
    max_request_bytes: int
    # A canary (modelfleet.canary): this share of the model's requests goes to the Triton serving canary_version.
    canary_version: int | None = None
    canary_percent: int = 0


@dataclass(frozen=True)
class GatewayPlan:
    hostname: str
    environment: str
    http_port: int
    grpc_port: int
    tls: bool
    load_balancer: Literal["internal", "external"]
    jwt: JwtPlan | None
    routes: tuple[RoutePlan, ...]
    ext_proc_message_timeout_ms: int = EXT_PROC_MESSAGE_TIMEOUT_MS
    audit_fields: tuple[str, ...] = AUDIT_FIELDS

    @property
    def local(self) -> bool:
        return self.environment == "local"

    def route(self, model: str) -> RoutePlan:
        return next(r for r in self.routes if r.model == model)


def default_scope(model: str) -> str:
    return f"infer:{model}"


def gateway_plan(stack: StackSpec, models: tuple[ModelSpec, ...]) -> GatewayPlan:
    spec = stack.gateway
    local = stack.environment == "local"
    http_default, grpc_default = DEFAULT_LOCAL_PORTS if local else (CLOUD_TLS_PORT, CLOUD_TLS_PORT)
    jwt = None
    if spec.jwt is not None:
        jwt = JwtPlan(
            provider="modelfleet-oidc",
            issuer=spec.jwt.issuer,
            audiences=tuple(spec.jwt.audiences),
            jwks_uri=spec.jwt.jwks_uri or spec.jwt.issuer.rstrip("/") + "/.well-known/jwks.json",
            jwks_file=spec.jwt.jwks_file,
            tenant_claim=spec.jwt.tenant_claim,
            scope_claim=spec.jwt.scope_claim,
        )
    return GatewayPlan(
        hostname=spec.hostname or ("localhost" if local else f"api.{stack.dns_domain}"),
        environment=stack.environment,
        http_port=spec.http_port or http_default,
        grpc_port=spec.grpc_port or grpc_default,
        tls=spec.tls if spec.tls is not None else not local,
        load_balancer=spec.load_balancer,
        jwt=jwt,
        routes=tuple(_route(model) for model in models),
    )


def _route(model: ModelSpec) -> RoutePlan:
    g = model.gateway
    limits = [RateLimitRule(
        name="rps", model=model.name, tenant_header=TENANT_HEADER, requests=g.rate_limit.requests_per_second,
        unit="Second", bucket=g.rate_limit.burst or g.rate_limit.requests_per_second, fill_interval_s=1,
        retry_after_s=RETRY_AFTER_RPS_S)]
    if g.rate_limit.requests_per_day:
        limits.append(RateLimitRule(
            name="daily", model=model.name, tenant_header=TENANT_HEADER, requests=g.rate_limit.requests_per_day,
            unit="Day", bucket=g.rate_limit.requests_per_day, fill_interval_s=SECONDS_PER_DAY,
            retry_after_s=SECONDS_PER_DAY))
    inspection = InspectionPlan(
        model=model.name,
        version=model.version,
        max_batch_size=model.max_batch_size,
        inputs=tuple(TensorRule(t.name, t.dtype, tuple(t.dims), t.optional, not t.is_shape_tensor)
                     for t in model.inputs),
        # A spec may leave the inputs to the backend (Triton fills them in): then there is nothing to check against.
        check_tensors=g.inspection.tensors and bool(model.inputs),
        max_request_bytes=g.max_request_bytes,
        max_element_bytes=g.inspection.max_element_bytes,
        max_elements=g.inspection.max_elements,
        deny_patterns=tuple(g.inspection.deny_patterns),
        bytes_outputs=tuple(t.name for t in model.outputs if t.dtype == "BYTES"),
        pii_mode=g.pii.mode,
        pii_detectors=tuple(g.pii.detectors),
        fail_mode=g.fail_mode,
        audit_payloads=g.audit.payloads,
        drift_sampled=model.monitoring.drift_detection,
    )
    return RoutePlan(
        model=model.name,
        version=model.version,
        http_path_prefix=f"/v2/models/{model.name}",
        grpc_service=GRPC_SERVICE,
        grpc_methods=GRPC_MODEL_METHODS,
        grpc_model_header=MODEL_HEADER,
        auth=AuthPlan(methods=tuple(g.auth), scope=g.scope or default_scope(model.name)),
        rate_limits=tuple(limits),
        inspection=inspection,
        max_request_bytes=g.max_request_bytes,
        canary_version=model.rollout.canary_version,
        canary_percent=model.rollout.canary_percent if model.rollout.canary_version is not None else 0,
    )
