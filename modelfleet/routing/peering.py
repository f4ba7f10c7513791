"""The cloud half of the second failover layer (docs/adr/0003-global-routing.md §6): Envoy Gateway objects that
make a region's gateway send a model's overflow and failures to its peer region's gateway over mutual TLS.

Pure, like `gateway.manifests`: `with_peering` takes the region's gateway objects and returns them with
- per peer region a `Backend` (gateway.envoyproxy.io/v1alpha1) on the peer's regional name and peer port, with
  `fallback: true`: Envoy Gateway puts it in priority 1 behind the route's own Triton (priority 0), used when
  fewer than 72 % of the primary's hosts are healthy (overprovisioning factor 1.4) — all of it when none is;
- a `BackendTLSPolicy` (gateway.networking.k8s.io/v1) on that Backend: TLS with the fleet's peer CA as the only
  trust anchor and the peer's name (`envoy_failover.peer_name`) as SNI and verified SAN; the client certificate
  Envoy presents is the EnvoyProxy's `backendTLS.clientCertificateRef`, which Envoy Gateway applies to every
  backend that has a TLS policy (Triton's Services have none, so only peers see it);
- each model's HTTPRoute and GRPCRoute with the peer's Backend as a second backendRef (`with_fallback`, additive:
  the model's own backends stay as they are); the peer is `ModelRouting.fallback`, the nearest region inside the
  residency set for a resident region, never the region itself;
- each model's BackendTrafficPolicy split per route kind, because the active check differs: HTTP checks the
  model's readiness (`/v2/models/<model>/ready`, on its own Triton and through the peer's listener alike); gRPC a
  TCP connect (a gRPC health request carries no model, so through the peer it could not name the model's Triton);
  both with outlier detection (consecutive 5xx / gateway errors eject a host) and one retry on failures before the
  request reached an upstream. The numbers are `envoy_failover.SETTINGS`, the ones the local Envoy runs with;
- a second Gateway listener `peer` (HTTPS, PEER_PORT) whose `ClientTrafficPolicy` requires a client certificate
  from the fleet peer CA, and per model `peer-<model>` routes on it that reach only the model's own Triton: no API
  key (the first gateway stripped it; mTLS authenticates the gateway), no fallback (no loops), no second count of
  the tenant's limits. The listener is reached through the region's global entry load balancer (routing.endpoint);
- the region's peer certificate, synced like the listener's (ExternalSecret from the secret manager, PEER_SECRET).

Where the peer certificates come from: one fleet peer CA per stack, kept by whoever keeps the gateway's listener
certificate (an offline CA, or the cloud's private CA: AWS Private CA, Google CAS). Each region's secret
`modelfleet-<env>-<region>-gateway-peer-tls` holds {"tls.crt", "tls.key", "ca.crt"}: a certificate for
`<cloud>-<region>.peer.modelfleet` with serverAuth and clientAuth, and the CA. Pulumi declares the secret empty (no
key in the state); the region's secret reader may read it; renewal is a new secret version.
"""

from __future__ import annotations

import copy
from typing import Any

from modelfleet import serving
from modelfleet.gateway import manifests
from modelfleet.plan import FleetPlan, RegionPlan
from modelfleet.routing.envoy_failover import SETTINGS, FailoverSettings, peer_name

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
ENVOY_GATEWAY_GROUP = "gateway.envoyproxy.io"
PEER_LISTENER = "peer"
PEER_PORT = 8443  # unprivileged: Envoy Gateway shifts only ports below 1024 (EnvoyProxy useListenerPortAsContainerPort)
PEER_SECRET = "peer-tls"  # kubernetes.io/tls with ca.crt: the region's peer certificate and the fleet peer CA
PEER_SECRET_ID = "peer-tls"
# Only failures before an upstream saw the request: inference is never repeated behind a client's back.
RETRY_ON = ("connect-failure", "refused-stream")


def container_port(port: int) -> int:
    """The Envoy container port Envoy Gateway opens for a Gateway listener port."""
    return port + manifests.ENVOY_PORT_OFFSET if port < 1024 else port


def backend_name(peer: str) -> str:
    return f"peer-{peer.replace(':', '-')}"


def fallbacks(plan: FleetPlan, region: RegionPlan) -> dict[str, str]:
    """model -> the peer region its gateway in `region` falls back to, for the models placed there."""
    if plan.routing is None or plan.gateway is None:
        return {}
    placed = {p.model for p in region.placements}
    return {m.model: dict(m.fallback)[region.ref] for m in plan.routing.models
            if m.model in placed and region.ref in dict(m.fallback)}


def _labels(plan: FleetPlan, model: str | None = None) -> dict[str, str]:
    return manifests._labels(plan, "global-routing", model)


def _ns(plan: FleetPlan) -> str:
    return serving.namespace_name(plan)


def backend(plan: FleetPlan, peer: str) -> dict:
    return {
        "apiVersion": manifests.ENVOY_GATEWAY_API,
        "kind": "Backend",
        "metadata": manifests._meta(backend_name(peer), _labels(plan), _ns(plan)),
        "spec": {
            "endpoints": [{"fqdn": {"hostname": plan.routing.region(peer).name, "port": PEER_PORT}}],
            "fallback": True,
        },
    }


def backend_tls_policy(plan: FleetPlan, peer: str) -> dict:
    return {
        "apiVersion": f"{GATEWAY_API_GROUP}/v1",
        "kind": "BackendTLSPolicy",
        "metadata": manifests._meta(backend_name(peer), _labels(plan), _ns(plan)),
        "spec": {
            "targetRefs": [{"group": ENVOY_GATEWAY_GROUP, "kind": "Backend", "name": backend_name(peer)}],
            "validation": {"caCertificateRefs": [{"group": "", "kind": "Secret", "name": PEER_SECRET}],
                           "hostname": peer_name(peer)},
        },
    }


def peer_secret(plan: FleetPlan, region: RegionPlan) -> dict:
    return manifests._external_secret(plan, PEER_SECRET, manifests.secret_id(plan, region, PEER_SECRET_ID),
                                      _labels(plan), _ns(plan), template={"type": "kubernetes.io/tls"})


def peer_client_traffic_policy(plan: FleetPlan) -> dict:
    """Only on the peer listener (a listener's policy takes precedence over the Gateway's): a client certificate
    from the fleet peer CA is required. The tenant headers are kept here — the first gateway set them."""
    largest = max((r.max_request_bytes for r in plan.gateway.routes), default=0)
    return {
        "apiVersion": manifests.ENVOY_GATEWAY_API,
        "kind": "ClientTrafficPolicy",
        "metadata": manifests._meta(PEER_LISTENER, _labels(plan), _ns(plan)),
        "spec": {
            "targetRefs": [{"group": GATEWAY_API_GROUP, "kind": "Gateway", "name": manifests.GATEWAY_NAME,
                            "sectionName": PEER_LISTENER}],
            "tls": {"minVersion": "1.2", "clientValidation": {
                "caCertificateRefs": [{"group": "", "kind": "Secret", "name": PEER_SECRET}]}},
            "connection": {"bufferLimit": str(largest)},
        },
    }


def peer_route(model_route: dict) -> dict:
    """The model's route on the peer listener: its own Triton only, any host name, no fallback."""
    out = copy.deepcopy(model_route)
    out["metadata"]["name"] = f"peer-{model_route['metadata']['name']}"
    out["spec"]["parentRefs"] = [{**manifests._parent(), "sectionName": PEER_LISTENER}]
    out["spec"].pop("hostnames", None)
    return out


def with_fallback(route: dict, peer: str) -> dict:
    """The route with the peer's Backend as an extra backendRef in every rule (priority 1 by `fallback`)."""
    out = copy.deepcopy(route)
    for rule in out["spec"]["rules"]:
        rule["backendRefs"].append({"group": ENVOY_GATEWAY_GROUP, "kind": "Backend", "name": backend_name(peer)})
    return out


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def health_check(kind: str, ready_path: str, settings: FailoverSettings = SETTINGS) -> dict:
    active: dict[str, Any] = {"type": "HTTP", "http": {"path": ready_path}} if kind == "HTTPRoute" else \
        {"type": "TCP", "tcp": {}}
    active |= {"timeout": _ms(settings.health_timeout_s), "interval": _ms(settings.health_interval_s),
               "unhealthyThreshold": settings.unhealthy_threshold, "healthyThreshold": settings.healthy_threshold}
    return {
        "active": active,
        "passive": {"consecutive5XxErrors": settings.consecutive_5xx,
                    "consecutiveGatewayErrors": settings.consecutive_gateway_errors,
                    "interval": _ms(settings.outlier_interval_s), "baseEjectionTime": _ms(settings.base_ejection_s),
                    "maxEjectionPercent": 100},
    }


def with_health(policy: dict, kind: str, ready_path: str, settings: FailoverSettings = SETTINGS) -> dict:
    """The model's BackendTrafficPolicy for one route kind, with the failover health checks and retry."""
    out = copy.deepcopy(policy)
    out["spec"]["targetRefs"] = [t for t in out["spec"]["targetRefs"] if t["kind"] == kind]
    if kind != "HTTPRoute":
        out["metadata"]["name"] += "-grpc"
    out["spec"]["healthCheck"] = health_check(kind, ready_path, settings)
    out["spec"]["retry"] = {"numRetries": settings.retries, "retryOn": {"triggers": list(RETRY_ON)}}
    return out


def with_peering(plan: FleetPlan, region: RegionPlan, objects: list[dict]) -> list[dict]:
    """The region's gateway objects with the second failover layer; unchanged without global routing."""
    peers_of = fallbacks(plan, region)
    if not peers_of:
        return objects
    by_route = {manifests.route_name(plan.model(m).kube_name): m for m in peers_of}
    ready = {r.model: f"{r.http_path_prefix}/ready" for r in plan.gateway.routes}
    out: list[dict] = []
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        model = by_route.get(name)
        if kind == "EnvoyProxy":
            obj = copy.deepcopy(obj)
            obj["spec"]["backendTLS"] = {"clientCertificateRef": {
                "group": "", "kind": "Secret", "name": PEER_SECRET, "namespace": _ns(plan)}}
        elif kind == "Gateway":
            obj = copy.deepcopy(obj)
            obj["spec"]["listeners"].append({
                "name": PEER_LISTENER, "protocol": "HTTPS", "port": PEER_PORT,
                "tls": {"mode": "Terminate", "certificateRefs": [{"group": "", "kind": "Secret", "name": PEER_SECRET}]},
                "allowedRoutes": {"namespaces": {"from": "Same"}}})
        elif kind == "NetworkPolicy" and name == f"envoy-{_ns(plan)}":
            obj = copy.deepcopy(obj)
            port = [{"protocol": "TCP", "port": container_port(PEER_PORT)}]
            obj["spec"]["ingress"].append({"ports": port})
            # Peers are other regions' entry load balancers, on the internet: any address, this port only.
            obj["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                          "ports": [{"protocol": "TCP", "port": PEER_PORT}]})
        elif model and kind in ("HTTPRoute", "GRPCRoute"):
            out.append(peer_route(obj))
            obj = with_fallback(obj, peers_of[model])
        elif model and kind == "BackendTrafficPolicy":
            out.append(with_health(obj, "HTTPRoute", ready[model]))
            obj = with_health(obj, "GRPCRoute", ready[model])
        out.append(obj)
    out.append(peer_secret(plan, region))
    out.append(peer_client_traffic_policy(plan))
    for peer in sorted(set(peers_of.values())):
        out += [backend(plan, peer), backend_tls_policy(plan, peer)]
    return out


def secret_ids(plan: FleetPlan, region: RegionPlan) -> dict[str, str]:
    """The secret-manager secret the region's peer certificate lives in, when it has peers."""
    return {PEER_SECRET_ID: manifests.secret_id(plan, region, PEER_SECRET_ID)} if fallbacks(plan, region) else {}


def with_backend_api(plan: FleetPlan, values: dict) -> dict:
    """Envoy Gateway's chart values with the `Backend` API on (off by default: extensionApis.enableBackend)."""
    if plan.routing is None:
        return values
    # Rebuilt, not deep-copied: the values hold deploy-time Outputs (the Redis URL).
    config = values["config"]
    return {**values, "config": {**config, "envoyGateway": {**config["envoyGateway"],
                                                            "extensionApis": {"enableBackend": True}}}}
