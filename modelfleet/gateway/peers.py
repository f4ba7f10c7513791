"""Who the gateway's pods are, for the NetworkPolicies of Triton and of the gateway itself.

Envoy Gateway runs the Envoy pods of a Gateway in its own namespace (the chart's, modelfleet/versions.py), labelled
with the owning Gateway. Only the API server sets `kubernetes.io/metadata.name`, and only Envoy Gateway's controller
creates pods in its namespace, so a peer with both selectors is this stack's Envoy and nothing else: a pod in
Triton's namespace cannot claim the labels and get in.
"""

from __future__ import annotations

from modelfleet import versions

GATEWAY_NAME = "modelfleet"
ENVOY_NAMESPACE = versions.ENVOY_GATEWAY.namespace
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Labels Envoy Gateway puts on the Envoy pods it creates for a Gateway (internal/infrastructure/kubernetes/proxy).
OWNING_GATEWAY_NAME = "gateway.envoyproxy.io/owning-gateway-name"
OWNING_GATEWAY_NAMESPACE = "gateway.envoyproxy.io/owning-gateway-namespace"


def envoy_pod_labels(namespace: str) -> dict[str, str]:
    """The Envoy pods of the Gateway `GATEWAY_NAME` in `namespace` (Triton's namespace)."""
    return {
        "app.kubernetes.io/name": "envoy",
        OWNING_GATEWAY_NAME: GATEWAY_NAME,
        OWNING_GATEWAY_NAMESPACE: namespace,
    }


def envoy_peer(namespace: str) -> dict:
    """The NetworkPolicy peer that is this stack's Envoy pods (both selectors in one peer: AND)."""
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: ENVOY_NAMESPACE}},
            "podSelector": {"matchLabels": envoy_pod_labels(namespace)}}


def namespace_peer(namespace: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}}}
