"""The gateway's inspection-service image: the stack names a released digest, not the example's placeholder.

The example stacks ship with `modelfleet:gateway.inspector_image_digest: sha256:000…0` (a well-formed digest that
names no image: the release step has not pushed one yet). The program carries the stack's digest into the deployment
as a `modelfleet:fleet:GatewayRelease` component whose props are also its outputs (like DeployerAccess and Cost): a
plain config value, so it is known during `pulumi preview` even before the registry exists, when the inspector
Deployment's image (registry URL @ digest) is still unknown. Expected properties:

    {"inspectorImageDigest": "sha256:<64 hex>", "regions": ["aws:us-east-1", ...]}
"""

from __future__ import annotations

import re

from pulumi_policy import EnforcementLevel, ReportViolation, StackValidationArgs, StackValidationPolicy

from ._util import get, items, short

GATEWAY_RELEASE_TYPE = "modelfleet:fleet:GatewayRelease"
# A digest of one repeated hex digit is no image's sha256 (the examples use zeros; a hand-typed 'ffff…' is as empty).
_PLACEHOLDER = re.compile(r"^sha256:([0-9a-f])\1{63}$")


def _released(args: StackValidationArgs, report: ReportViolation) -> None:
    for r in args.resources:
        if r.resource_type != GATEWAY_RELEASE_TYPE:
            continue
        digest = str(get(r.props, "inspectorImageDigest", default=""))
        if not _PLACEHOLDER.match(digest):
            continue
        regions = ", ".join(str(x) for x in items(get(r.props, "regions")))
        report(f"{short(r.urn)}: modelfleet:gateway.inspector_image_digest is the example's placeholder {digest[:15]}…, "
               f"which names no image: the gateway's inspector pods in {regions or 'every region'} could never pull "
               "it, and fail-closed models would answer 503. Fix: build and push deploy/gateway-inspector.Dockerfile, "
               "then `pulumi config set --path 'modelfleet:gateway.inspector_image_digest' \"$(crane digest "
               "$REPOSITORY:$TAG)\"` (README, 'The gateway in the cloud').", r.urn)


gateway_image_released = StackValidationPolicy(
    name="gateway-image-released",
    description="The gateway's inspection-service image digest is a released image, not the example's placeholder.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_released,
)

POLICIES = [gateway_image_released]
