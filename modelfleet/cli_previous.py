"""`modelfleet plan --previous PLAN.json`: the plan's warnings, plus what dropping regions from the stack does.

The baseline is the JSON plan of what is deployed (CI keeps the last applied `plan --format json` as an
artefact): offline, without the Pulumi state, it is the honest record of which regions exist and which are
protected.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from modelfleet.plan import FleetPlan
from modelfleet.removal import removed_region_warnings


def read_previous(path: Path) -> dict:
    """The previous plan's JSON; ValueError with the fix when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError("no such file; pass the JSON of `modelfleet plan --format json` of the deployed stack") \
            from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON plan ({exc}); pass the output of `modelfleet plan --format json`") from None
    regions = data.get("region_plans") if isinstance(data, dict) else None
    if not isinstance(regions, list) or not all(isinstance(r, dict) and isinstance(r.get("region"), str)
                                                for r in regions):
        raise ValueError("has no region_plans list; pass the output of `modelfleet plan --format json`")
    return data


def with_removed_regions(plan: FleetPlan, previous: Path) -> FleetPlan:
    extra = removed_region_warnings(read_previous(previous), (r.ref for r in plan.regions))
    return dataclasses.replace(plan, warnings=plan.warnings + extra)
