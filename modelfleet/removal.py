"""Removing a region from a stack: what the deployed plan says about the regions a new plan drops.

Pure, over plan JSON (`modelfleet plan --format json`): `plan --previous` and `diff` use it with whatever baseline
they have (a saved plan, or the plan at the git base).
"""

from __future__ import annotations

from typing import Iterable


def removed_region_warnings(previous: dict, current: Iterable[str]) -> tuple[str, ...]:
    """Regions in `previous` (a `modelfleet plan --format json` of the deployed stack) missing from `current`
    (region refs such as `aws:us-east-1`).

    A protected region's cluster cannot be deleted (EKS and GKE refuse while deletion protection is on), so
    `pulumi up` would fail half-way; the way out is two deploys: `retire: true` first, then the removal. Plans
    from before `deletion_protection` was reported are judged by their environment (protection is prod's)."""
    current = set(current)
    out = []
    for region in previous.get("region_plans", []):
        ref = region.get("region")
        if ref in current:
            continue
        if region.get("deletion_protection", previous.get("environment") == "prod"):
            out.append(f"{ref} is no longer in the stack but its deployed cluster has deletion protection: "
                       f"`pulumi up` will fail to delete it. Put it back with `retire: true` "
                       f"(- {{region: {ref}, retire: true}}), deploy, then remove it")
        else:
            out.append(f"{ref} is no longer in the stack: `pulumi up` deletes its cluster, network and models")
    return tuple(out)
