"""What `__main__.py` runs under `pulumi up`: the stack's spec from the engine's config, turned into a plan."""

from __future__ import annotations

from pathlib import Path

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env

from modelfleet.loader import SpecError, load_fleet
from modelfleet.plan import FleetPlan, build_plan


def current_plan(root: Path | None = None) -> FleetPlan:
    """The plan of the stack being deployed. Spec problems stop the program with the same one-line-per-problem
    report `modelfleet validate` prints, not a traceback."""
    config_map = {**get_config_env(), **CONFIG.get()}
    try:
        fleet = load_fleet(root or Path.cwd(), pulumi.get_stack(), config_map)
    except SpecError as exc:
        raise pulumi.RunError(f"the fleet spec has problems:\n{exc}") from None
    return build_plan(fleet)
