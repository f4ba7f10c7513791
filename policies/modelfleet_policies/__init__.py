"""The modelfleet policies, one module per area. `policies/__main__.py` serves them to the Pulumi CLI;
`modelfleet.review` runs the very same objects offline against the recorded resources."""

from __future__ import annotations

from . import cost, deployer, encryption, gateway, governance, gpu, identity, kubernetes, monitoring, network, nodes, routing

PACK_NAME = "modelfleet-policies"

AREAS = {
    "network": network.POLICIES,
    "nodes": nodes.POLICIES,
    "encryption": encryption.POLICIES,
    "identity": identity.POLICIES,
    "gpu": gpu.POLICIES,
    "kubernetes": kubernetes.POLICIES,
    "cost": cost.POLICIES,
    "governance": governance.POLICIES,
    "monitoring": monitoring.POLICIES,
    "deployer": deployer.POLICIES,
    "gateway": gateway.POLICIES,
    "routing": routing.POLICIES,
}

POLICIES = tuple(policy for policies in AREAS.values() for policy in policies)

__all__ = ["AREAS", "PACK_NAME", "POLICIES"]
