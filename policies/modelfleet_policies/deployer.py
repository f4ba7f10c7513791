"""Deployer access: the stack has decided how `pulumi up` reaches its cluster APIs.

The example stacks ship with `modelfleet:cluster_endpoint.placeholder: true` (private endpoints, no deployer CIDR
chosen yet). The program carries that decision into the deployment as a `modelfleet:fleet:DeployerAccess` component
whose props are also its outputs (like the Cost component), so the CLI's policy run and the offline review read the
same values. Expected properties:

    {"placeholder": true, "privateOnly": true, "publicAccessCidrs": []}
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from ._util import get, items, short, truthy

DEPLOYER_ACCESS_TYPE = "modelfleet:fleet:DeployerAccess"


def _decided(args: StackValidationArgs, report: ReportViolation) -> None:
    for r in args.resources:
        if r.resource_type != DEPLOYER_ACCESS_TYPE or not truthy(get(r.props, "placeholder")):
            continue
        cidrs = [str(c) for c in items(get(r.props, "publicAccessCidrs"))]
        now = f"public to {', '.join(cidrs)}" if cidrs else "private only"
        report(f"{short(r.urn)}: the deployer's access to the cluster APIs is still the example's placeholder "
               f"(endpoints {now}). Fix: deploy from inside each region's network with private endpoints (README, "
               "'Deploying'), or list your CI runner's public egress in modelfleet:cluster_endpoint."
               "public_access_cidrs; then delete modelfleet:cluster_endpoint.placeholder from the stack.", r.urn)


deployer_access_decided = StackValidationPolicy(
    name="deployer-access-decided",
    description="The stack's deployer access to the cluster APIs is decided, not the example's placeholder.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_decided,
)

POLICIES = [deployer_access_decided]
