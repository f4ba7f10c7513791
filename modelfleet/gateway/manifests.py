"""The gateway's Kubernetes objects in one region's cluster, as plain data (like `modelfleet.serving`).

Envoy Gateway (chart `gateway-helm`, modelfleet/versions.py) runs the Envoy pods; these objects configure it:

- `EnvoyProxy` + `GatewayClass`: the Envoy Service's load balancer (internal or external, as the stack says) and
  the audit log (a JSON access log line per request on Envoy's stdout, collected with the cluster's container logs);
- `Gateway`: one HTTPS listener on 443 for HTTP and gRPC; Envoy terminates TLS with the certificate Secret
  synced from the cloud's secret manager;
- `ClientTrafficPolicy`: drops any client-sent tenant header before auth, so only the gateway sets it;
- per model: `HTTPRoute` (KServe v2 HTTP, `/v2/models/<model>`), `GRPCRoute` (inference.GRPCInferenceService on
  the model's own host name: gRPC carries the model name in the protobuf body, which no route can match),
  `SecurityPolicy` (API keys or JWT; the tenant into a header; a model's keys open only that model),
  `BackendTrafficPolicy` (global rate limit and daily quota per tenant, shared in Redis),
  `EnvoyExtensionPolicy` (the inspection service, only the phases it needs, fail open or closed per model),
  and the `ExternalSecret` of its API keys;
- the inspection service (ServiceAccount, Deployment, Service, PodDisruptionBudget), the `SecretStore` and the
  other `ExternalSecret`s, and NetworkPolicies for the gateway's pods.

Pure and deterministic. Custom resources are validated against the vendored CRD schemas by
`serving.validate_manifest`, built-in kinds by kubernetes-validate, like every other object modelfleet declares.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping


from modelfleet import canary, serving
from modelfleet.gateway import peers
from modelfleet.gateway.plan import VERSION_HEADER, GatewayPlan, RoutePlan
from modelfleet.plan import LABEL_PREFIX, FleetPlan, RegionPlan

GATEWAY_API = "gateway.networking.k8s.io/v1"
ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
EXTERNAL_SECRETS_API = "external-secrets.io/v1"
CONTROLLER_NAME = "gateway.envoyproxy.io/gatewayclass-controller"  # Envoy Gateway's fixed controller name

GATEWAY_NAME = peers.GATEWAY_NAME
LISTENER = "https"
TLS_SECRET = "gateway-tls"
REDIS_AUTH_SECRET = "ratelimit-redis-auth"
SECRET_STORE = "modelfleet-gateway"  # a ClusterSecretStore, usable only from the two namespaces that need it
SECRETS_SERVICE_ACCOUNT = "gateway-secrets"  # the identity that reads the gateway's secrets, and nothing else
REFRESH_INTERVAL = "5m"  # a revoked key stops working within this (plus Envoy Gateway's reconcile)
DNS_PORT = 53
JWT_PROVIDER_SCOPES = "scopes"

INSPECTOR = "gateway-inspector"
INSPECTOR_PORT = 9002
# Drift metrics (PSI/KS of sampled inputs, modelfleet.monitoring.drift_exporter), scraped by the in-cluster Prometheus.
INSPECTOR_METRICS_PORT = 9102
INSPECTOR_UID = 10001
INSPECTOR_REPLICAS = 2  # one per zone at least: with fail-closed models an inspector outage is an outage
INSPECTOR_ROOT = "/app"  # the image holds the project (models/, stacks/) at the release's commit
ENVOY_REPLICAS = 2
ACCESS_LOG_PATH = "/dev/stdout"  # collected with every container's stdout: where the cluster's logs go
# Where the inspector puts its verdict for the audit line (ext_proc dynamic metadata, namespaced by the top-level
# key of the struct it returns: modelfleet.gateway.service.METADATA_NAMESPACE).
DECISION_METADATA = "modelfleet"

# The Envoy Service's load balancer. AWS: the in-tree service controller of EKS reads these two annotations (an
# NLB, internal or internet-facing), so the AWS Load Balancer Controller is not needed for a TCP passthrough NLB;
# Envoy terminates TLS. GKE: the internal passthrough NLB annotation; external needs none.
LB_TYPE_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-type"
AWS_INTERNAL_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-internal"
GKE_INTERNAL_ANNOTATION = "networking.gke.io/load-balancer-type"

# Envoy Gateway's fixed ports: the Envoy listener a Gateway port maps to (unprivileged: port + 10000), Envoy's
# readiness (19001), the rate limit service's gRPC (8081), and the controller's xDS (18000).
ENVOY_PORT_OFFSET = 10000
ENVOY_READINESS_PORT = 19001
RATELIMIT_GRPC_PORT = 8081
XDS_PORT = 18000
RATELIMIT_POD_LABELS = {"app.kubernetes.io/name": "envoy-ratelimit"}
CONTROLLER_POD_LABELS = {"control-plane": "envoy-gateway"}


class GatewayError(ValueError):
    """The gateway plan cannot be declared in the cloud as it stands; `str()` names the field and the fix."""


@dataclass(frozen=True)
class CloudGateway:
    """What the cloud adds to the gateway plan in one region: the image, Redis, and the plan itself."""

    plan: GatewayPlan
    inspector_image: Any  # <registry>/<repository>@sha256:<digest> (an Output at deploy time)
    redis_host: Any
    redis_port: int
    redis_cidr: Any  # where the rate limit service may connect: the region's network (AWS), Redis's /32 (GCP)
    redis_ca_config_map: str | None = None  # GCP: Memorystore's server CA, which no public root signs
    redis_ca_pem: Any = None


def _labels(plan: FleetPlan, component: str, model: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/part-of": "modelfleet",
        "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/component": component,
        f"{LABEL_PREFIX}/environment": plan.environment,
    }
    if model:
        labels[f"{LABEL_PREFIX}/model"] = model
    return dict(sorted(labels.items()))


_meta = serving._meta  # one builder of object metadata for Triton's and the gateway's objects


def secret_id(plan: FleetPlan, region: RegionPlan, what: str) -> str:
    """A gateway secret's name in the region's secret manager (AWS Secrets Manager and GCP Secret Manager both accept
    it: letters, digits, hyphens; GCP's names are project-wide, hence the region in it). Its value is a JSON
    object; Pulumi declares the secret, and holds a value only for the Redis token it generates (a Pulumi secret,
    encrypted in the state)."""
    return f"modelfleet-{plan.environment}-{region.region}-gateway-{what}"


def scope_slug(scope: str) -> str:
    """The scope as a Kubernetes and secret-manager name: `infer:fraud-detector` -> `infer-fraud-detector`. A
    scope with other characters (a Triton model name's `_`) gets a hash suffix, so two scopes never share a name."""
    slug = re.sub(r"[^a-z0-9]+", "-", scope.lower()).strip("-")
    if re.fullmatch(r"[a-z0-9:.-]+", scope):
        return slug
    return f"{slug}-{hashlib.sha256(scope.encode()).hexdigest()[:8]}"


def api_keys_secret_id(plan: FleetPlan, region: RegionPlan, scope: str) -> str:
    """Where `modelfleet keys create` puts the keys of a scope in the cloud: {client id: key}, client ids from
    `gateway.plan.cloud_client_id`."""
    return secret_id(plan, region, f"api-keys-{scope_slug(scope)}")


def api_keys_secret(scope: str) -> str:
    return f"gateway-keys-{scope_slug(scope)}"


def route_name(kube_name: str) -> str:
    """Named like the model's Triton objects: by its Kubernetes name (`ModelSpec.kube_name`)."""
    return serving.workload_name(kube_name)


def _kube(plan: FleetPlan, route: RoutePlan) -> str:
    return plan.model(route.model).kube_name


def scopes(gw: GatewayPlan) -> tuple[str, ...]:
    """The API-key scopes of the stack's models, each once (several models may share one)."""
    return tuple(sorted({r.auth.scope for r in gw.routes if "api-key" in r.auth.methods}))


# --- per region -------------------------------------------------------------------------------------------

def envoy_proxy(plan: FleetPlan, region: RegionPlan, gw: GatewayPlan) -> dict:
    """Envoy's pods and Service (Envoy Gateway creates both from this), and the audit log: one JSON line per
    request on stdout — tenant, key id (never the key), model, version, status, latency, the inspector's decision
    and reason; never a payload."""
    internal = gw.load_balancer == "internal"
    if region.cloud == "aws":
        annotations = {LB_TYPE_ANNOTATION: "nlb"} | ({AWS_INTERNAL_ANNOTATION: "true"} if internal else {})
    else:
        annotations = {GKE_INTERNAL_ANNOTATION: "Internal"} if internal else {}
    tenant = gw.routes[0].auth.tenant_header.upper() if gw.routes else "X-MODELFLEET-TENANT"
    key_id = gw.routes[0].auth.key_id_header.upper() if gw.routes else "X-MODELFLEET-KEY-ID"
    model = gw.routes[0].grpc_model_header.upper() if gw.routes else "X-MODELFLEET-MODEL"
    fields = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "tenant": f"%REQ({tenant})%",
        "key_id": f"%REQ({key_id})%",
        "model": f"%REQ({model})%",
        "version": f"%RESP({VERSION_HEADER.upper()})%",
        "protocol": "%PROTOCOL%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "latency_ms": "%DURATION%",
        "decision": f"%DYNAMIC_METADATA({DECISION_METADATA}:decision)%",
        "reason": f"%DYNAMIC_METADATA({DECISION_METADATA}:reason)%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
    }
    service: dict[str, Any] = {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
    if annotations:
        service["annotations"] = annotations
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "EnvoyProxy",
        "metadata": _meta(GATEWAY_NAME, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {
            "provider": {"type": "Kubernetes", "kubernetes": {
                "envoyService": service,
                "envoyDeployment": {"replicas": ENVOY_REPLICAS},
            }},
            "telemetry": {"accessLog": {"settings": [{
                "format": {"type": "JSON", "json": fields},
                "sinks": [{"type": "File", "file": {"path": ACCESS_LOG_PATH}}],
            }]}},
        },
    }


def gateway_class(plan: FleetPlan) -> dict:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GatewayClass",
        "metadata": _meta(f"modelfleet-{plan.environment}", _labels(plan, "gateway")),
        "spec": {
            "controllerName": CONTROLLER_NAME,
            "parametersRef": {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy", "name": GATEWAY_NAME,
                              "namespace": serving.namespace_name(plan)},
        },
    }


def gateway(plan: FleetPlan, gw: GatewayPlan) -> dict:
    """One TLS listener carries HTTP/1.1 and HTTP/2 (gRPC), told apart by ALPN and content type."""
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": _meta(GATEWAY_NAME, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {
            "gatewayClassName": f"modelfleet-{plan.environment}",
            "listeners": [{
                "name": LISTENER,
                "protocol": "HTTPS",
                "port": gw.http_port,
                # With global routing the listener answers every name its routes list (the regional, the model and the
                # api names: modelfleet.routing), so no single listener hostname; the certificate covers them all.
                **({} if plan.routing else {"hostname": gw.hostname}),
                "tls": {"mode": "Terminate", "certificateRefs": [{"group": "", "kind": "Secret", "name": TLS_SECRET}]},
                "allowedRoutes": {"namespaces": {"from": "Same"}},
            }],
        },
    }


def client_traffic_policy(plan: FleetPlan, gw: GatewayPlan) -> dict:
    """A client cannot name its own tenant or key id: both headers are removed before any filter runs; only
    authentication sets them again. TLS 1.2 at least. Envoy buffers a whole body for the inspector only up to the
    connection's buffer limit (413 beyond it): the limit is the largest body any model admits."""
    headers = sorted({h for r in gw.routes for h in (r.auth.tenant_header, r.auth.key_id_header)})
    largest = max((r.max_request_bytes for r in gw.routes), default=0)
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "ClientTrafficPolicy",
        "metadata": _meta(GATEWAY_NAME, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}],
            "headers": {"earlyRequestHeaders": {"remove": headers}},
            "tls": {"minVersion": "1.2"},
            "connection": {"bufferLimit": str(largest)},
        },
    }


def secrets_service_account(plan: FleetPlan, identity_annotations: Any) -> dict:
    """The identity External Secrets reads the region's secret manager as: its annotation (an Output at deploy time)
    binds it to the IRSA role or Google service account that may read the gateway's secrets only."""
    meta = _meta(SECRETS_SERVICE_ACCOUNT, _labels(plan, "gateway"), serving.namespace_name(plan))
    meta["annotations"] = identity_annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False}


def secret_store(plan: FleetPlan, region: RegionPlan) -> dict:
    """The region's secret manager, read as the `gateway-secrets` service account (IRSA on AWS, workload identity
    on GCP; its cloud role reads the gateway's secrets and nothing else), usable only from Triton's namespace (API
    keys, TLS) and Envoy Gateway's (the Redis token its rate limit service reads)."""
    account = {"serviceAccountRef": {"name": SECRETS_SERVICE_ACCOUNT, "namespace": serving.namespace_name(plan)}}
    if region.cloud == "aws":
        provider = {"aws": {"service": "SecretsManager", "region": region.region, "auth": {"jwt": account}}}
    else:
        provider = {"gcpsm": {"projectID": plan.gcp_project, "auth": {"workloadIdentity": {
            "clusterLocation": region.region, "clusterName": region.cluster_name,
            "clusterProjectID": plan.gcp_project, **account}}}}
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ClusterSecretStore",
        "metadata": _meta(SECRET_STORE, _labels(plan, "gateway")),
        "spec": {
            "provider": provider,
            "conditions": [{"namespaces": [serving.namespace_name(plan), peers.ENVOY_NAMESPACE]}],
        },
    }


def _external_secret(plan: FleetPlan, name: str, remote: str, labels: dict, namespace: str,
                     template: dict | None = None) -> dict:
    target: dict[str, Any] = {"name": name, "creationPolicy": "Owner", "deletionPolicy": "Delete"}
    if template:
        target["template"] = template
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ExternalSecret",
        "metadata": _meta(name, labels, namespace),
        "spec": {
            "refreshInterval": REFRESH_INTERVAL,
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": SECRET_STORE},
            "target": target,
            # The cloud secret is a JSON object; each of its keys becomes a key of the Kubernetes Secret.
            "dataFrom": [{"extract": {"key": remote}}],
        },
    }


def tls_external_secret(plan: FleetPlan, region: RegionPlan) -> dict:
    """The listener's certificate: a JSON secret {"tls.crt": PEM chain, "tls.key": PEM key}, made a
    kubernetes.io/tls Secret. Renewal is a new secret version; Envoy Gateway reloads it without a restart."""
    return _external_secret(plan, TLS_SECRET, secret_id(plan, region, "tls"), _labels(plan, "gateway"),
                            serving.namespace_name(plan), template={"type": "kubernetes.io/tls"})


def redis_auth_external_secret(plan: FleetPlan, region: RegionPlan) -> dict:
    """Redis's AUTH token ({"token": ...}) for the rate limit service, in Envoy Gateway's namespace."""
    return _external_secret(plan, REDIS_AUTH_SECRET, secret_id(plan, region, "redis-auth"), _labels(plan, "gateway"),
                            peers.ENVOY_NAMESPACE)


def api_keys_external_secret(plan: FleetPlan, region: RegionPlan, scope: str) -> dict:
    """One Opaque Secret per scope, the shape apiKeyAuth reads: each key a client id, its value that client's API
    key. A model's SecurityPolicy reads only its scope's Secret, so another scope's key is refused."""
    return _external_secret(plan, api_keys_secret(scope), api_keys_secret_id(plan, region, scope),
                            _labels(plan, "gateway"), serving.namespace_name(plan))


# --- per model --------------------------------------------------------------------------------------------

def _hostnames(plan: FleetPlan) -> list[str]:
    """The gateway's own name, then the global routing names (modelfleet.routing.endpoint.hostnames)."""
    extra = plan.routing.certificate_names if plan.routing else ()
    return [plan.gateway.hostname] + [n for n in extra if n != plan.gateway.hostname]


def _parent() -> dict:
    return {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME, "sectionName": LISTENER}


def _backends(plan: FleetPlan, route: RoutePlan, port: int) -> list[dict]:
    """The model's Service, or with a canary (modelfleet.canary) the stable and canary Services in the same rule,
    weighted 100 - p and p: Gateway API splits a rule's requests in proportion to its backendRefs' weights, so the
    split holds for every match of the rule (HTTP paths and gRPC methods alike)."""
    name = serving.workload_name(_kube(plan, route))
    if route.canary_version is None:
        return [{"group": "", "kind": "Service", "name": name, "port": port, "weight": 100}]
    stable, weight = canary.weights(route.canary_percent)
    return [{"group": "", "kind": "Service", "name": name, "port": port, "weight": stable},
            {"group": "", "kind": "Service", "name": name + canary.SUFFIX, "port": port, "weight": weight}]


def _version_filter(route: RoutePlan) -> dict:
    """The version that answered, as a response header the audit line reads (`%RESP(...)%`); `set`, so no upstream
    can put its own. Only without a canary: with one, the version depends on the backend the rule picked, which a
    rule's filter cannot tell, and backendRef filters would put each backend in a cluster of its own (Envoy Gateway
    `irDestinationSettingName`, `.../rule/0/backend/<j>`), where the peer region's fallback Backend, priority 1 in
    the rule's one cluster (modelfleet.routing.peering), would no longer sit. A canary model's cloud audit line
    leaves the version empty rather than name the stable one for the canary's answers."""
    if route.canary_version is not None:
        return {}
    return {"filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "set": [{"name": VERSION_HEADER, "value": str(route.version)}]}}]}


def http_route(plan: FleetPlan, route: RoutePlan) -> dict:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": _meta(route_name(_kube(plan, route)), _labels(plan, "gateway", _kube(plan, route)),
                          serving.namespace_name(plan)),
        "spec": {
            "parentRefs": [_parent()],
            "hostnames": _hostnames(plan),
            "rules": [{
                # PathPrefix matches whole path elements: /v2/models/a does not match /v2/models/ab.
                "matches": [{"path": {"type": "PathPrefix", "value": route.http_path_prefix}}],
                **_version_filter(route),
                "backendRefs": _backends(plan, route, serving.HTTP_PORT),
            }],
        },
    }


def grpc_route(plan: FleetPlan, route: RoutePlan) -> dict:
    """The model's gRPC methods, selected by the model header (gRPC carries the model name in the body, where no
    route can read it; the inspector checks that both agree). Streaming is not routed."""
    header = [{"type": "Exact", "name": route.grpc_model_header, "value": route.model}]
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GRPCRoute",
        "metadata": _meta(route_name(_kube(plan, route)), _labels(plan, "gateway", _kube(plan, route)),
                          serving.namespace_name(plan)),
        "spec": {
            "parentRefs": [_parent()],
            "hostnames": _hostnames(plan),
            "rules": [{
                "matches": [{"method": {"type": "Exact", "service": route.grpc_service, "method": method},
                             "headers": header} for method in route.grpc_methods],
                **_version_filter(route),
                "backendRefs": _backends(plan, route, serving.GRPC_PORT),
            }],
        },
    }


def _route_targets(plan: FleetPlan, route: RoutePlan) -> list[dict]:
    return [{"group": "gateway.networking.k8s.io", "kind": kind, "name": route_name(_kube(plan, route))}
            for kind in ("HTTPRoute", "GRPCRoute")]


def security_policy(plan: FleetPlan, route: RoutePlan) -> dict:
    """API keys (the scope's Secret) or JWT (the stack's issuer, the model's scope in the token). The client id or
    the tenant claim goes upstream in a header; the key itself is stripped before Triton."""
    methods = route.auth.methods
    if len(methods) != 1:
        # Envoy Gateway requires every method a SecurityPolicy names; it cannot accept "a key or a token".
        raise GatewayError(f"model {route.model}: gateway.auth {list(methods)} cannot be enforced in the cloud, where "
                           "Envoy Gateway requires every listed method at once; list one method")
    spec: dict[str, Any] = {"targetRefs": _route_targets(plan, route)}
    if methods[0] == "jwt":
        jwt = plan.gateway.jwt
        assert jwt is not None, "the loader refuses jwt models without the stack's issuer"
        spec["jwt"] = {"providers": [{
            "name": jwt.provider,
            "issuer": jwt.issuer,
            "audiences": list(jwt.audiences),
            "remoteJWKS": {"uri": jwt.jwks_uri},
            "claimToHeaders": [{"header": route.auth.tenant_header, "claim": jwt.tenant_claim}],
        }]}
        spec["authorization"] = {"defaultAction": "Deny", "rules": [{
            "name": "model-scope", "action": "Allow",
            "principal": {"jwt": {"provider": jwt.provider, "scopes": [route.auth.scope]}},
        }]}
    else:
        spec["apiKeyAuth"] = {
            "credentialRefs": [{"group": "", "kind": "Secret", "name": api_keys_secret(route.auth.scope)}],
            "extractFrom": [{"headers": [route.auth.api_key_header]}],
            # The client id is `<tenant>.<key id>` (gateway.plan.cloud_client_id): the audit line's key id.
            "forwardClientIDHeader": route.auth.key_id_header,
            "sanitize": True,
        }
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "SecurityPolicy",
        "metadata": _meta(route_name(_kube(plan, route)), _labels(plan, "gateway", _kube(plan, route)),
                          serving.namespace_name(plan)),
        "spec": spec,
    }


# apiKeyAuth forwards one identity header, the client id `<tenant>.<key id>` (gateway.plan.cloud_client_id); the
# limits count per tenant (issue 11: "global rate limit keyed on tenant"), so this splits the tenant off into the
# tenant header. Envoy Gateway runs Lua after its auth filters (api_key_auth, jwt_authn) and before the global
# rate limit (internal/xds/translator/httpfilters.go, newOrderedHTTPFilter), and the rate limit filter reads its
# descriptors from the headers as they are then. Key ids are hex, so the last '.' ends the tenant.
TENANT_FROM_CLIENT_ID_LUA = """\
function envoy_on_request(handle)
  local headers = handle:headers()
  local client = headers:get("{key_id}")
  if client == nil then return end
  local tenant = client:match("^(.+)%.[0-9a-f]+$")
  if tenant ~= nil then
    headers:replace("{tenant}", tenant)
  end
end
"""


def tenant_lua(route: RoutePlan) -> str:
    return TENANT_FROM_CLIENT_ID_LUA.format(key_id=route.auth.key_id_header, tenant=route.auth.tenant_header)


def backend_traffic_policy(plan: FleetPlan, route: RoutePlan) -> dict:
    """The plan's rules, each tenant with its own counters (the JWT tenant claim, or the tenant the Lua filter of
    `extension_policy` takes from an API key's client id: all of a tenant's keys share them), shared in Redis by
    every Envoy replica: N+1 in a window is 429 whichever replica it reaches."""
    header = route.auth.tenant_header
    rules = [{"clientSelectors": [{"headers": [{"name": header, "type": "Distinct"}]}],
              "limit": {"requests": rule.requests, "unit": rule.unit}} for rule in route.rate_limits]
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "BackendTrafficPolicy",
        "metadata": _meta(route_name(_kube(plan, route)), _labels(plan, "gateway", _kube(plan, route)),
                          serving.namespace_name(plan)),
        "spec": {
            "targetRefs": _route_targets(plan, route),
            "rateLimit": {"type": "Global", "global": {"rules": rules}},
        },
    }


def extension_policy(plan: FleetPlan, route: RoutePlan) -> dict:
    """Request bodies always go to the inspector (tensors, sizes, deny patterns); response bodies only where the
    plan asks (PII in BYTES outputs). Envoy Gateway sends a phase's headers with it: no header-only phase is asked
    for. failOpen is the model's fail mode."""
    # The inspector finds the model from the path (HTTP) or the model header (gRPC). Envoy Gateway's CRD admits
    # attributes matching `^(connection\.|source\.|destination\.|request\.|response\.|upstream\.|xds\.route_)
    # [a-z_1-9]*$` only (api/v1alpha1/ext_proc_types.go, ProcessingModeOptions.Attributes, envoyproxy/gateway
    # c78106ac7a4e1e477f2ae0671d4ba4de08aa5542), so `request.headers['x-modelfleet-model']` would be refused at
    # apply: the path goes as an attribute, and the model header arrives with the request headers, which Envoy
    # Gateway sends whenever `request` is set (modelfleet.gateway.service._from_headers).
    mode: dict[str, Any] = {"request": {"body": "Buffered", "attributes": ["request.path"]}}
    if route.inspection.response_body:
        mode["response"] = {"body": "Buffered"}
    spec: dict[str, Any] = {
        "targetRefs": _route_targets(plan, route),
        "extProc": [{
            "backendRefs": [{"group": "", "kind": "Service", "name": INSPECTOR, "port": INSPECTOR_PORT}],
            "processingMode": mode,
            "messageTimeout": f"{plan.gateway.ext_proc_message_timeout_ms}ms",
            "failOpen": route.inspection.failure_mode_allow,
        }],
    }
    if "api-key" in route.auth.methods:
        spec["lua"] = [{"type": "Inline", "inline": tenant_lua(route)}]  # the tenant for the rate limits
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "EnvoyExtensionPolicy",
        "metadata": _meta(route_name(_kube(plan, route)), _labels(plan, "gateway", _kube(plan, route)),
                          serving.namespace_name(plan)),
        "spec": spec,
    }


# --- the inspection service -------------------------------------------------------------------------------

def inspector_selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": INSPECTOR}


def inspector_service_account(plan: FleetPlan) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "automountServiceAccountToken": False,
    }


def inspector_deployment(plan: FleetPlan, image: Any) -> dict:
    """The same ext_proc service the local stack runs (modelfleet.gateway.run_service, role extproc; auth is Envoy
    Gateway's own here), from an image of this repository at the release's commit: its rules are the specs of that
    commit, and a new digest rolls the pods. It keeps no keys."""
    labels = _labels(plan, "gateway") | inspector_selector()
    probe = {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3}
    container = {
        "name": "inspector",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "modelfleet.gateway.run_service"],
        "args": ["--root", INSPECTOR_ROOT, "--stack", plan.stack, "--listen", f"0.0.0.0:{INSPECTOR_PORT}",
                 "--metrics-port", str(INSPECTOR_METRICS_PORT)],
        "ports": [{"name": "grpc", "containerPort": INSPECTOR_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": INSPECTOR_METRICS_PORT, "protocol": "TCP"}],
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": probe,
        "livenessProbe": probe,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "runAsNonRoot": True},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(INSPECTOR, labels, serving.namespace_name(plan)),
        "spec": {
            "replicas": INSPECTOR_REPLICAS,
            "selector": {"matchLabels": inspector_selector()},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": INSPECTOR,
                    "automountServiceAccountToken": False,
                    "nodeSelector": {serving.POOL_LABEL: "system"},
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": serving.ZONE_KEY, "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": inspector_selector()}}],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": INSPECTOR_UID,
                                        "runAsGroup": INSPECTOR_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                },
            },
        },
    }


def inspector_service(plan: FleetPlan) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {
            "type": "ClusterIP",
            "selector": inspector_selector(),
            "ports": [{"name": "grpc", "port": INSPECTOR_PORT, "targetPort": "grpc", "protocol": "TCP",
                       "appProtocol": "kubernetes.io/h2c"}],
        },
    }


def inspector_disruption_budget(plan: FleetPlan) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": inspector_selector()}},
    }


# --- network policies ---------------------------------------------------------------------------------------

def dns_egress() -> dict:
    return {"to": [{"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}


def _policy(plan: FleetPlan, name: str, namespace: str, selector: dict, ingress: list, egress: list) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, _labels(plan, "gateway"), namespace),
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": ingress, "egress": egress},
    }


def inspector_network_policy(plan: FleetPlan) -> dict:
    """The inspector answers only this stack's Envoy (and Prometheus, on its metrics port), and calls nobody: it
    decides from its config alone."""
    ns = serving.namespace_name(plan)
    prometheus = {"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: serving.PROMETHEUS_NAMESPACE}}}
    return _policy(plan, INSPECTOR, ns, inspector_selector(),
                   [{"from": [peers.envoy_peer(ns)], "ports": [{"protocol": "TCP", "port": INSPECTOR_PORT}]},
                    {"from": [prometheus], "ports": [{"protocol": "TCP", "port": INSPECTOR_METRICS_PORT}]}], [])


def envoy_network_policy(plan: FleetPlan) -> dict:
    """The Envoy pods (in Envoy Gateway's namespace) reach DNS, Triton's inference ports, the inspector, the rate
    limit service and their controller's xDS; with JWT also the issuer's JWKS over HTTPS. Ingress: the listener,
    from wherever the load balancer admits (its scheme decides), and the readiness port for health checks."""
    ns = serving.namespace_name(plan)
    gw = plan.gateway
    in_ns = {"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: ns}}}
    egress = [
        dns_egress(),
        {"to": [{**in_ns, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "triton"}}}],
         "ports": [{"protocol": "TCP", "port": serving.HTTP_PORT}, {"protocol": "TCP", "port": serving.GRPC_PORT}]},
        {"to": [{**in_ns, "podSelector": {"matchLabels": inspector_selector()}}],
         "ports": [{"protocol": "TCP", "port": INSPECTOR_PORT}]},
        {"to": [{"podSelector": {"matchLabels": dict(RATELIMIT_POD_LABELS)}}],
         "ports": [{"protocol": "TCP", "port": RATELIMIT_GRPC_PORT}]},
        {"to": [{"podSelector": {"matchLabels": dict(CONTROLLER_POD_LABELS)}}],
         "ports": [{"protocol": "TCP", "port": XDS_PORT}]},
    ]
    if gw.jwt is not None:
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]})
    ingress = [{"ports": [{"protocol": "TCP", "port": gw.http_port + ENVOY_PORT_OFFSET}]},
               {"ports": [{"protocol": "TCP", "port": ENVOY_READINESS_PORT}]}]
    return _policy(plan, f"envoy-{ns}", peers.ENVOY_NAMESPACE, peers.envoy_pod_labels(ns), ingress, egress)


def ratelimit_network_policy(plan: FleetPlan, redis_cidr: Any, redis_port: int) -> dict:
    """The rate limit service: asked by the Envoy pods, talks to Redis inside the region's network, DNS and xDS."""
    ns = serving.namespace_name(plan)
    ingress = [{"from": [{"podSelector": {"matchLabels": peers.envoy_pod_labels(ns)}}],
                "ports": [{"protocol": "TCP", "port": RATELIMIT_GRPC_PORT}]}]
    egress = [dns_egress(),
              {"to": [{"ipBlock": {"cidr": redis_cidr}}], "ports": [{"protocol": "TCP", "port": redis_port}]},
              # Its limits come from the controller over xDS (a port of its own, set by Envoy Gateway).
              {"to": [{"podSelector": {"matchLabels": dict(CONTROLLER_POD_LABELS)}}]}]
    return _policy(plan, "envoy-ratelimit", peers.ENVOY_NAMESPACE, dict(RATELIMIT_POD_LABELS), ingress, egress)


# --- assembly -------------------------------------------------------------------------------------------------

def region_objects(plan: FleetPlan, region: RegionPlan, cloud: CloudGateway, secrets_identity: Any) -> list[dict]:
    """Every gateway object modelfleet declares in one region's cluster (the charts aside), in apply order."""
    gw = cloud.plan
    objects = [
        envoy_proxy(plan, region, gw), gateway_class(plan), gateway(plan, gw), client_traffic_policy(plan, gw),
        secrets_service_account(plan, secrets_identity), secret_store(plan, region), tls_external_secret(plan, region),
        redis_auth_external_secret(plan, region),
        *(api_keys_external_secret(plan, region, scope) for scope in scopes(gw)),
        inspector_service_account(plan), inspector_deployment(plan, cloud.inspector_image),
        inspector_service(plan), inspector_disruption_budget(plan), inspector_network_policy(plan),
        envoy_network_policy(plan), ratelimit_network_policy(plan, cloud.redis_cidr, cloud.redis_port),
    ]
    if cloud.redis_ca_config_map:
        objects.append(redis_ca_config_map(plan, cloud.redis_ca_pem))
    placed = {p.model for p in region.placements}
    for route in gw.routes:
        if route.model in placed:
            objects += [http_route(plan, route), grpc_route(plan, route), security_policy(plan, route),
                        backend_traffic_policy(plan, route), extension_policy(plan, route)]
    from modelfleet.routing import peering  # the second failover layer builds on these objects

    return peering.with_peering(plan, region, objects)


REDIS_CA_PATH = "/etc/redis-ca"


def redis_ca_config_map(plan: FleetPlan, ca_pem: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(REDIS_CA_CONFIG_MAP, _labels(plan, "gateway"), peers.ENVOY_NAMESPACE),
        "data": {"ca.pem": ca_pem},
    }


REDIS_CA_CONFIG_MAP = "ratelimit-redis-ca"


def envoy_gateway_values(cloud: CloudGateway) -> dict:
    """Values of the gateway-helm chart: Envoy Gateway's own config, with the global rate limit on Redis over TLS
    and the AUTH token from the synced Secret as REDIS_AUTH (envoyproxy/ratelimit's setting; Envoy Gateway has no
    field of its own for it: envoyproxy/gateway#9021). Memorystore's CA is mounted where REDIS_TLS_CACERT points.
    Every pod on the system pool."""
    env: list[dict] = [
        {"name": "REDIS_TLS", "value": "true"},
        {"name": "REDIS_AUTH", "valueFrom": {"secretKeyRef": {"name": REDIS_AUTH_SECRET, "key": "token"}}},
    ]
    deployment: dict[str, Any] = {"container": {"env": env}}
    if cloud.redis_ca_config_map:
        env.append({"name": "REDIS_TLS_CACERT", "value": f"{REDIS_CA_PATH}/ca.pem"})
        deployment["container"]["volumeMounts"] = [{"name": "redis-ca", "mountPath": REDIS_CA_PATH,
                                                    "readOnly": True}]
        deployment["pod"] = {"volumes": [{"name": "redis-ca", "configMap": {"name": cloud.redis_ca_config_map}}]}
    url = pulumi_concat(cloud.redis_host, f":{cloud.redis_port}")
    return {
        "config": {"envoyGateway": {
            "rateLimit": {"backend": {"type": "Redis", "redis": {"url": url}}},
            "provider": {"type": "Kubernetes", "kubernetes": {"rateLimitDeployment": deployment}},
        }},
        "deployment": {"pod": {"nodeSelector": {serving.POOL_LABEL: "system"}}},
    }


def pulumi_concat(host: Any, suffix: str) -> Any:
    """host + suffix, for a plain string or anything with `.apply` (a deploy-time Output), without importing Pulumi
    into the pure builders."""
    return host.apply(lambda h: f"{h}{suffix}") if hasattr(host, "apply") else f"{host}{suffix}"


def placeholder_cloud(plan: FleetPlan, region: RegionPlan) -> CloudGateway:
    """The cloud values as `render` shows them: the registry and Redis endpoint are outputs known at deploy time."""
    assert plan.gateway is not None
    redis = redis_plan(plan, region)
    return CloudGateway(plan=plan.gateway, inspector_image=f"<{region.cloud} registry>/{INSPECTOR}@sha256:<digest>",
                        redis_host=f"<{region.cloud} redis endpoint>", redis_port=redis.port,
                        redis_cidr=region.cidr if region.cloud == "aws" else "<memorystore host>/32",
                        redis_ca_config_map=REDIS_CA_CONFIG_MAP if region.cloud == "gcp" else None,
                        redis_ca_pem="<memorystore server CA, PEM>" if region.cloud == "gcp" else None)


# --- Redis for the global rate limit ------------------------------------------------------------------------

@dataclass(frozen=True)
class RedisPlan:
    """The managed Redis one region's rate limit service counts in: ElastiCache (AWS) or Memorystore (GCP), TLS in
    transit and an AUTH token, replicated across zones in prod. Managed, not a chart: counters must survive a node
    loss (a chart's single pod would reset every tenant's window, or drop the limit while it restarts), and dev
    runs the same engine with the same TLS and auth as prod, only smaller."""

    engine_version: str
    node_type: str  # ElastiCache node type; "" on GCP
    nodes: int  # ElastiCache: primary + replicas
    tier: str  # Memorystore: BASIC or STANDARD_HA; "" on AWS
    memory_gib: int  # Memorystore size
    port: int


# Memorystore serves TLS on 6378 (cloud.google.com/memorystore/docs/redis/about-in-transit-encryption).
REDIS_PORT = {"aws": 6379, "gcp": 6378}


def redis_plan(plan: FleetPlan, region: RegionPlan) -> RedisPlan:
    prod = plan.environment == "prod"
    if region.cloud == "aws":
        return RedisPlan(engine_version="7.1", node_type="cache.t4g.small" if prod else "cache.t4g.micro",
                         nodes=2 if prod else 1, tier="", memory_gib=0, port=REDIS_PORT["aws"])
    return RedisPlan(engine_version="REDIS_7_2", node_type="", nodes=0, tier="STANDARD_HA" if prod else "BASIC",
                     memory_gib=1, port=REDIS_PORT["gcp"])
