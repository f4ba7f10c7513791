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

from dataclasses import dataclass
from typing import Any, Mapping

from modelfleet import serving, versions
from modelfleet.gateway import peers
from modelfleet.plan import LABEL_PREFIX, FleetPlan, RegionPlan

GATEWAY_API = "gateway.networking.k8s.io/v1"
ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
EXTERNAL_SECRETS_API = "external-secrets.io/v1"
CONTROLLER_NAME = "gateway.envoyproxy.io/gatewayclass-controller"  # Envoy Gateway's fixed controller name

GATEWAY_NAME = peers.GATEWAY_NAME
HTTPS_PORT = 443
TLS_SECRET = "gateway-tls"
SECRET_STORE = "gateway-secrets"
SECRETS_SERVICE_ACCOUNT = "gateway-secrets"  # the identity that reads the gateway's secrets, and nothing else
API_KEY_HEADER = "x-api-key"
REFRESH_INTERVAL = "5m"  # a revoked key stops working within this (plus Envoy Gateway's reconcile)
DNS_PORT = 53

INSPECTOR = "gateway-inspector"
INSPECTOR_UID = 10001
INSPECTOR_PROBE_PERIOD_S = 10
EXT_PROC_TIMEOUT = "500ms"  # per message; a stuck inspector fails the request (closed) or skips it (open)

# Envoy writes one line per request; the ratelimit and inspector pods read the tenant from the same header.
ACCESS_LOG_PATH = "/dev/stdout"

# The Envoy Service's load balancer. AWS: the in-tree service controller of EKS reads these two annotations (NLB,
# and internal scheme); the AWS Load Balancer Controller is not needed for an NLB. GKE: the internal passthrough
# NLB annotation. An external LB gets no annotation on GKE and an internet-facing NLB on AWS.
LB_TYPE_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-type"
AWS_INTERNAL_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-internal"
GKE_INTERNAL_ANNOTATION = "networking.gke.io/load-balancer-type"


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int


@dataclass(frozen=True)
class ModelRoute:
    """What one model's gateway objects are built from (from the gateway plan)."""

    model: str
    grpc_host: str
    backends: tuple[Backend, ...]
    auth: str  # "api-key" | "jwt"
    requests_per_unit: int
    unit: str  # Second | Minute
    daily_quota: int | None
    fail_open: bool
    inspect_responses: bool
    max_request_bytes: int


@dataclass(frozen=True)
class GatewayCloud:
    """Stack-wide gateway settings on a cloud region."""

    internal: bool
    tenant_header: str
    inspector_image: str  # repository@sha256:digest
    inspector_port: int
    inspector_replicas: int
    redis_port: int
    jwt_issuer: str | None = None
    jwt_audiences: tuple[str, ...] = ()
    jwt_jwks_uri: str | None = None
    jwt_tenant_claim: str = "tenant"


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


def _meta(name: str, labels: dict[str, str], namespace: str | None = None,
          annotations: Mapping[str, Any] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = labels
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def secret_name(plan: FleetPlan, what: str) -> str:
    """The secret's name in the cloud's secret manager (AWS Secrets Manager and GCP Secret Manager both accept
    it: letters, digits and hyphens). `modelfleet keys` writes API keys there; Pulumi never sees a value."""
    return f"modelfleet-{plan.environment}-gateway-{what}"


def api_keys_secret(model: str) -> str:
    return f"gateway-keys-{model}"


def route_name(model: str) -> str:
    return f"triton-{model}"


# --- per region -------------------------------------------------------------------------------------------

def envoy_proxy(plan: FleetPlan, region: RegionPlan, cloud: GatewayCloud) -> dict:
    if region.cloud == "aws":
        annotations = {LB_TYPE_ANNOTATION: "nlb"}
        if cloud.internal:
            annotations[AWS_INTERNAL_ANNOTATION] = "true"
    else:
        annotations = {GKE_INTERNAL_ANNOTATION: "Internal"} if cloud.internal else {}
    header = cloud.tenant_header.upper()
    audit = {
        # The audit line: who (tenant, key id), what (model, version), outcome and time; never a key or a body.
        "start_time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "tenant": f"%REQ({header})%",
        "key_id": f"%REQ({header})%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "authority": "%REQ(:AUTHORITY)%",
        "route": "%ROUTE_NAME%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "decision": "%DYNAMIC_METADATA(envoy.filters.http.ext_proc:decision)%",
        "reason": "%DYNAMIC_METADATA(envoy.filters.http.ext_proc:reason)%",
        "model_version": "%DYNAMIC_METADATA(envoy.filters.http.ext_proc:model_version)%",
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
                "envoyDeployment": {"replicas": 2},
            }},
            "telemetry": {"accessLog": {"settings": [{
                "format": {"type": "JSON", "json": audit},
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


def gateway(plan: FleetPlan) -> dict:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": _meta(GATEWAY_NAME, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {
            "gatewayClassName": f"modelfleet-{plan.environment}",
            "listeners": [{
                "name": "https",
                "protocol": "HTTPS",
                "port": HTTPS_PORT,
                # HTTP on the apex, gRPC on one host name per model: a wildcard certificate covers both.
                "hostname": f"*.{plan.dns_domain}",
                "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": TLS_SECRET}]},
                "allowedRoutes": {"namespaces": {"from": "Same"}},
            }, {
                "name": "https-apex",
                "protocol": "HTTPS",
                "port": HTTPS_PORT,
                "hostname": plan.dns_domain,
                "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": TLS_SECRET}]},
                "allowedRoutes": {"namespaces": {"from": "Same"}},
            }],
        },
    }


def client_traffic_policy(plan: FleetPlan, cloud: GatewayCloud) -> dict:
    """A client cannot name its own tenant: the header is removed before any filter runs, then set by auth."""
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "ClientTrafficPolicy",
        "metadata": _meta(GATEWAY_NAME, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}],
            "headers": {"earlyRequestHeaders": {"remove": [cloud.tenant_header]}},
            "tls": {"minVersion": "1.2"},
        },
    }


def secret_store(plan: FleetPlan, region: RegionPlan) -> dict:
    """Where the ExternalSecrets read: the region's secret manager, as the `gateway-secrets` service account (IRSA
    on AWS, workload identity on GCP), which may read the gateway's secrets and nothing else."""
    account = {"serviceAccountRef": {"name": SECRETS_SERVICE_ACCOUNT}}
    if region.cloud == "aws":
        provider = {"aws": {"service": "SecretsManager", "region": region.region, "auth": {"jwt": account}}}
    else:
        provider = {"gcpsm": {"projectID": plan.gcp_project, "auth": {"workloadIdentity": {
            "clusterLocation": region.region, "clusterName": region.cluster_name,
            "clusterProjectID": plan.gcp_project, **account}}}}
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "SecretStore",
        "metadata": _meta(SECRET_STORE, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {"provider": provider},
    }


def secrets_service_account(plan: FleetPlan, identity_annotations: Mapping[str, Any]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(SECRETS_SERVICE_ACCOUNT, _labels(plan, "gateway"), serving.namespace_name(plan),
                          identity_annotations),
        "automountServiceAccountToken": False,
    }


def _external_secret(plan: FleetPlan, name: str, remote: str, labels: dict, template: dict | None = None,
                     namespace: str | None = None, store_kind: str = "SecretStore") -> dict:
    target: dict[str, Any] = {"name": name, "creationPolicy": "Owner", "deletionPolicy": "Delete"}
    if template:
        target["template"] = template
    return {
        "apiVersion": EXTERNAL_SECRETS_API,
        "kind": "ExternalSecret",
        "metadata": _meta(name, labels, namespace or serving.namespace_name(plan)),
        "spec": {
            "refreshInterval": REFRESH_INTERVAL,
            "secretStoreRef": {"kind": store_kind, "name": SECRET_STORE},
            "target": target,
            # The cloud secret is a JSON object; each of its keys becomes a key of the Kubernetes Secret.
            "dataFrom": [{"extract": {"key": remote}}],
        },
    }


def tls_external_secret(plan: FleetPlan) -> dict:
    return _external_secret(plan, TLS_SECRET, secret_name(plan, "tls"), _labels(plan, "gateway"),
                            template={"type": "kubernetes.io/tls"})


def api_keys_external_secret(plan: FleetPlan, route: ModelRoute) -> dict:
    """One Opaque Secret per model: each key of it is a client id (the tenant), its value that client's API key,
    the shape SecurityPolicy apiKeyAuth reads. A model's own Secret is its scope: another model's key fails."""
    return _external_secret(plan, api_keys_secret(route.model), secret_name(plan, f"api-keys-{route.model}"),
                            _labels(plan, "gateway", route.model))


# --- per model --------------------------------------------------------------------------------------------

def _parent() -> list[dict]:
    return [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": GATEWAY_NAME}]


def http_route(plan: FleetPlan, route: ModelRoute) -> dict:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": _meta(route_name(route.model), _labels(plan, "gateway", route.model), serving.namespace_name(plan)),
        "spec": {
            "parentRefs": [{**_parent()[0], "sectionName": "https-apex"}],
            "hostnames": [plan.dns_domain],
            "rules": [{
                # PathPrefix matches whole path elements: /v2/models/a does not match /v2/models/ab.
                "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{route.model}"}}],
                "backendRefs": [{"kind": "Service", "name": b.service, "port": serving.HTTP_PORT, "weight": b.weight}
                                for b in route.backends],
            }],
        },
    }


def grpc_route(plan: FleetPlan, route: ModelRoute) -> dict:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GRPCRoute",
        "metadata": _meta(route_name(route.model), _labels(plan, "gateway", route.model), serving.namespace_name(plan)),
        "spec": {
            "parentRefs": [{**_parent()[0], "sectionName": "https"}],
            "hostnames": [route.grpc_host],
            "rules": [{
                "matches": [{"method": {"type": "Exact", "service": "inference.GRPCInferenceService"}}],
                "backendRefs": [{"kind": "Service", "name": b.service, "port": serving.GRPC_PORT, "weight": b.weight}
                                for b in route.backends],
            }],
        },
    }


def _route_targets(route: ModelRoute) -> list[dict]:
    return [{"group": "gateway.networking.k8s.io", "kind": kind, "name": route_name(route.model)}
            for kind in ("HTTPRoute", "GRPCRoute")]


def security_policy(plan: FleetPlan, route: ModelRoute, cloud: GatewayCloud) -> dict:
    spec: dict[str, Any] = {"targetRefs": _route_targets(route)}
    if route.auth == "jwt":
        if not (cloud.jwt_issuer and cloud.jwt_jwks_uri and cloud.jwt_audiences):
            raise serving.ServingError(f"model {route.model}: gateway.auth jwt needs the stack's JWT issuer, "
                                       "audiences and JWKS URI")
        spec["jwt"] = {"providers": [{
            "name": "stack-issuer",
            "issuer": cloud.jwt_issuer,
            "audiences": list(cloud.jwt_audiences),
            "remoteJWKS": {"uri": cloud.jwt_jwks_uri},
            "claimToHeaders": [{"header": cloud.tenant_header, "claim": cloud.jwt_tenant_claim}],
        }]}
    else:
        spec["apiKeyAuth"] = {
            "credentialRefs": [{"group": "", "kind": "Secret", "name": api_keys_secret(route.model)}],
            "extractFrom": [{"headers": [API_KEY_HEADER]}],
            # The client id (the tenant) goes upstream in this header; the key itself is stripped.
            "forwardClientIDHeader": cloud.tenant_header,
            "sanitize": True,
        }
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "SecurityPolicy",
        "metadata": _meta(route_name(route.model), _labels(plan, "gateway", route.model), serving.namespace_name(plan)),
        "spec": spec,
    }


def backend_traffic_policy(plan: FleetPlan, route: ModelRoute, cloud: GatewayCloud) -> dict:
    """Per tenant (each distinct value of the tenant header gets its own counters), counted in Redis across every
    Envoy replica: the request rate, and the daily quota where the spec sets one."""
    tenant = {"headers": [{"name": cloud.tenant_header, "type": "Distinct"}]}
    rules = [{"clientSelectors": [tenant], "limit": {"requests": route.requests_per_unit, "unit": route.unit}}]
    if route.daily_quota:
        rules.append({"clientSelectors": [tenant], "limit": {"requests": route.daily_quota, "unit": "Day"}})
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "BackendTrafficPolicy",
        "metadata": _meta(route_name(route.model), _labels(plan, "gateway", route.model), serving.namespace_name(plan)),
        "spec": {
            "targetRefs": _route_targets(route),
            "rateLimit": {"type": "Global", "global": {"rules": rules}},
        },
    }


def extension_policy(plan: FleetPlan, route: ModelRoute, cloud: GatewayCloud) -> dict:
    """Requests always go to the inspector buffered (tensor names, dtypes, shapes, sizes, deny patterns); responses
    only where the model filters PII. Headers-only phases are not asked for: each costs a round trip."""
    mode: dict[str, Any] = {"request": {"body": "Buffered"}}
    if route.inspect_responses:
        mode["response"] = {"body": "Buffered"}
    return {
        "apiVersion": ENVOY_GATEWAY_API,
        "kind": "EnvoyExtensionPolicy",
        "metadata": _meta(route_name(route.model), _labels(plan, "gateway", route.model), serving.namespace_name(plan)),
        "spec": {
            "targetRefs": _route_targets(route),
            "extProc": [{
                "backendRefs": [{"kind": "Service", "name": INSPECTOR, "port": cloud.inspector_port}],
                "processingMode": mode,
                "messageTimeout": EXT_PROC_TIMEOUT,
                "failOpen": route.fail_open,
            }],
        },
    }


# --- the inspection service -------------------------------------------------------------------------------

def _inspector_selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": INSPECTOR}


def inspector_service_account(plan: FleetPlan) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "automountServiceAccountToken": False,
    }


def inspector_deployment(plan: FleetPlan, cloud: GatewayCloud, config_sha256: str) -> dict:
    labels = _labels(plan, "gateway") | _inspector_selector()
    probe = {"grpc": {"port": cloud.inspector_port}, "periodSeconds": INSPECTOR_PROBE_PERIOD_S,
             "timeoutSeconds": 2, "failureThreshold": 3}
    container = {
        "name": "inspector",
        "image": cloud.inspector_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [f"--port={cloud.inspector_port}", "--config=/etc/modelfleet/gateway.json"],
        "ports": [{"name": "grpc", "containerPort": cloud.inspector_port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": probe,
        "livenessProbe": probe,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "runAsNonRoot": True},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/modelfleet", "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(INSPECTOR, labels, serving.namespace_name(plan)),
        "spec": {
            "replicas": cloud.inspector_replicas,
            "selector": {"matchLabels": _inspector_selector()},
            "template": {
                "metadata": {"labels": labels, "annotations": {serving.CONFIG_HASH_ANNOTATION: config_sha256}},
                "spec": {
                    "serviceAccountName": INSPECTOR,
                    "automountServiceAccountToken": False,
                    "nodeSelector": {serving.POOL_LABEL: "system"},
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": serving.ZONE_KEY, "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": _inspector_selector()}}],
                    "securityContext": {"runAsNonRoot": True, "runAsUser": INSPECTOR_UID,
                                        "runAsGroup": INSPECTOR_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": INSPECTOR}}],
                },
            },
        },
    }


def inspector_config_map(plan: FleetPlan, config_json: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "data": {"gateway.json": config_json},
    }


def inspector_service(plan: FleetPlan, cloud: GatewayCloud) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {
            "type": "ClusterIP",
            "selector": _inspector_selector(),
            "ports": [{"name": "grpc", "port": cloud.inspector_port, "targetPort": "grpc", "protocol": "TCP",
                       "appProtocol": "kubernetes.io/h2c"}],
        },
    }


def inspector_disruption_budget(plan: FleetPlan) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), serving.namespace_name(plan)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _inspector_selector()}},
    }


# --- network policies ---------------------------------------------------------------------------------------

def _dns() -> dict:
    return {"to": [{"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}]}


def inspector_network_policy(plan: FleetPlan, cloud: GatewayCloud) -> dict:
    """The inspector answers only Envoy, and calls nobody (it decides from its config alone)."""
    ns = serving.namespace_name(plan)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(INSPECTOR, _labels(plan, "gateway"), ns),
        "spec": {
            "podSelector": {"matchLabels": _inspector_selector()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [peers.envoy_peer(ns)],
                         "ports": [{"protocol": "TCP", "port": cloud.inspector_port}]}],
            "egress": [],
        },
    }


def envoy_network_policy(plan: FleetPlan, region: RegionPlan, cloud: GatewayCloud) -> dict:
    """The Envoy pods (in Envoy Gateway's namespace) reach DNS, Triton, the inspector, the rate limit service and
    their controller; with JWT also the issuer's JWKS over HTTPS. Ingress: the load balancer, from anywhere the
    load balancer admits (its scheme and security groups decide), on the listener port only."""
    ns = serving.namespace_name(plan)
    egress = [
        _dns(),
        {"to": [{"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: ns}},
                 "podSelector": {"matchLabels": {"app.kubernetes.io/name": "triton"}}}],
         "ports": [{"protocol": "TCP", "port": serving.HTTP_PORT}, {"protocol": "TCP", "port": serving.GRPC_PORT}]},
        {"to": [{"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: ns}},
                 "podSelector": {"matchLabels": _inspector_selector()}}],
         "ports": [{"protocol": "TCP", "port": cloud.inspector_port}]},
        # The rate limit service and the xDS server of Envoy Gateway, both in its namespace.
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy-ratelimit"}}}],
         "ports": [{"protocol": "TCP", "port": RATELIMIT_GRPC_PORT}]},
        {"to": [{"podSelector": {"matchLabels": {"control-plane": "envoy-gateway"}}}],
         "ports": [{"protocol": "TCP", "port": XDS_PORT}]},
    ]
    if cloud.jwt_jwks_uri:
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(f"envoy-{ns}", _labels(plan, "gateway"), peers.ENVOY_NAMESPACE),
        "spec": {
            "podSelector": {"matchLabels": peers.envoy_pod_labels(ns)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": ENVOY_LISTENER_PORT}]},
                        # Envoy's readiness endpoint, for the kubelet and the load balancer's health checks.
                        {"ports": [{"protocol": "TCP", "port": ENVOY_READINESS_PORT}]}],
            "egress": egress,
        },
    }


def ratelimit_network_policy(plan: FleetPlan, region: RegionPlan, cloud: GatewayCloud) -> dict:
    """The rate limit service: asked by the Envoy pods, talks to Redis in the region's network and to DNS."""
    ns = serving.namespace_name(plan)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("envoy-ratelimit", _labels(plan, "gateway"), peers.ENVOY_NAMESPACE),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy-ratelimit"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": peers.envoy_pod_labels(ns)}}],
                         "ports": [{"protocol": "TCP", "port": RATELIMIT_GRPC_PORT}]},
                        {"from": [{"podSelector": {"matchLabels": {"control-plane": "envoy-gateway"}}}]}],
            "egress": [_dns(), {"to": [{"ipBlock": {"cidr": region.cidr}}],
                                "ports": [{"protocol": "TCP", "port": cloud.redis_port}]},
                       {"to": [{"podSelector": {"matchLabels": {"control-plane": "envoy-gateway"}}}],
                        "ports": [{"protocol": "TCP", "port": XDS_PORT}]}],
        },
    }


# Envoy Gateway's fixed ports: the Envoy listener a Gateway port 443 maps to (unprivileged: 443 + 10000), Envoy's
# readiness (19001), the rate limit service's gRPC (8081), and the controller's xDS (18000).
ENVOY_LISTENER_PORT = 10443
ENVOY_READINESS_PORT = 19001
RATELIMIT_GRPC_PORT = 8081
XDS_PORT = 18000


# --- assembly -------------------------------------------------------------------------------------------------

def region_objects(plan: FleetPlan, region: RegionPlan, cloud: GatewayCloud, routes: tuple[ModelRoute, ...],
                   config_json: str, config_sha256: str, secrets_identity: Mapping[str, Any]) -> list[dict]:
    """Every gateway object in one region's cluster (the charts aside), in apply order."""
    objects = [
        envoy_proxy(plan, region, cloud), gateway_class(plan), gateway(plan), client_traffic_policy(plan, cloud),
        secrets_service_account(plan, secrets_identity), secret_store(plan, region), tls_external_secret(plan),
        inspector_service_account(plan), inspector_config_map(plan, config_json),
        inspector_deployment(plan, cloud, config_sha256), inspector_service(plan, cloud),
        inspector_disruption_budget(plan), inspector_network_policy(plan, cloud),
        envoy_network_policy(plan, region, cloud), ratelimit_network_policy(plan, region, cloud),
    ]
    for route in routes:
        objects += [api_keys_external_secret(plan, route), http_route(plan, route), grpc_route(plan, route),
                    security_policy(plan, route, cloud), backend_traffic_policy(plan, route, cloud),
                    extension_policy(plan, route, cloud)]
    return objects


def envoy_gateway_values(cloud: GatewayCloud, redis_host: str, redis_auth_secret: str) -> dict:
    """Values of the gateway-helm chart: Envoy Gateway's own config with the global rate limit on Redis (TLS, and
    the AUTH token from a Secret the rate limit service reads as REDIS_AUTH: envoyproxy/ratelimit's settings)."""
    return {
        "config": {"envoyGateway": {
            "rateLimit": {"backend": {"type": "Redis", "redis": {"url": f"{redis_host}:{cloud.redis_port}"}}},
            "provider": {"type": "Kubernetes", "kubernetes": {"rateLimitDeployment": {"container": {"env": [
                {"name": "REDIS_TLS", "value": "true"},
                {"name": "REDIS_AUTH", "valueFrom": {"secretKeyRef": {"name": redis_auth_secret, "key": "token"}}},
            ]}}}},
        }},
        "deployment": {"pod": {"nodeSelector": {serving.POOL_LABEL: "system"}}},
    }
