"""What global routing adds to each region's cluster, as Kubernetes objects (pure, like `gateway.manifests`).

- The global entry: an internet-facing LoadBalancer Service in front of the region's Envoy pods (Envoy
  Gateway's). Pulumi owns it, so `pulumi up` waits for its address (the Kubernetes provider awaits a LoadBalancer
  Service until the cloud reports one) and Route53's records can alias it in the same run; the gateway's own load
  balancer (internal by default) stays as the stack says. Route53's health checkers and clients come from the
  internet, so this one is public; everything behind it is authenticated by the gateway.
- Per model, an open health route `/health/<model>`, rewritten to the model's `routing.health_check_path` on its
  own Triton: Route53 can send neither credentials nor headers, and each model has its own Triton, so each
  model's record is checked against the model itself.
"""

from __future__ import annotations

from modelfleet import serving
from modelfleet.gateway import manifests, peers
from modelfleet.plan import FleetPlan, RegionPlan
from modelfleet.routing import peering

ENTRY_SERVICE = "modelfleet-global-entry"
HEALTH_PREFIX = "/health"


def health_path(model: str) -> str:
    """What Route53 probes through the gateway for this model."""
    return f"{HEALTH_PREFIX}/{model}"


def hostnames(plan: FleetPlan) -> list[str]:
    """Every name a client or health checker sends as Host/SNI to a region's gateway."""
    names = [plan.gateway.hostname] if plan.gateway else []
    if plan.routing:
        names += [n for n in plan.routing.certificate_names if n not in names]
    return names


def entry_service(plan: FleetPlan, region: RegionPlan) -> dict:
    gw = plan.gateway
    ns = serving.namespace_name(plan)
    # AWS: the in-tree controller makes an internet-facing NLB (TCP passthrough; Envoy terminates TLS). GKE: an
    # external passthrough network load balancer, no annotation needed.
    annotations = {manifests.LB_TYPE_ANNOTATION: "nlb"} if region.cloud == "aws" else {}
    meta = {"name": ENTRY_SERVICE, "namespace": peers.ENVOY_NAMESPACE,
            "labels": manifests._labels(plan, "global-routing")}
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",  # client addresses reach Envoy (audit, limits); no second hop
            "selector": peers.envoy_pod_labels(ns),
            # The peer listener too: other regions' gateways fail over to this one through it (mTLS,
            # routing.peering).
            "ports": [{"name": "https", "protocol": "TCP", "port": gw.http_port,
                       "targetPort": peering.container_port(gw.http_port)},
                      {"name": "peer", "protocol": "TCP", "port": peering.PEER_PORT,
                       "targetPort": peering.container_port(peering.PEER_PORT)}],
        },
    }


def health_route(plan: FleetPlan, model: str) -> dict:
    spec = plan.model(model)
    return {
        "apiVersion": manifests.GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {"name": f"health-{model}", "namespace": serving.namespace_name(plan),
                     "labels": manifests._labels(plan, "global-routing", model)},
        "spec": {
            "parentRefs": [manifests._parent()],
            "hostnames": hostnames(plan),
            "rules": [{
                "matches": [{"path": {"type": "Exact", "value": health_path(model)}}],
                "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                    "type": "ReplaceFullPath", "replaceFullPath": spec.routing.health_check_path}}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": serving.workload_name(model),
                                 "port": serving.HTTP_PORT, "weight": 100}],
            }],
        },
    }


def objects(plan: FleetPlan, region: RegionPlan) -> list[dict]:
    return [entry_service(plan, region)] + [health_route(plan, m.name) for m in plan.models]
