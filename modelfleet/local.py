"""The local stack: the plan's own Triton configs, served by a real tritonserver on this machine."""

from __future__ import annotations

from pathlib import Path

from modelfleet.plan import FleetPlan
from modelfleet.render import model_configs
from modelfleet.triton.config import CPU, build_repository, local_source


def repository_dir(root: Path, stack: str) -> Path:
    return root / "build" / "serve" / stack / "model-repository"


def build_local_repository(plan: FleetPlan, root: Path, repository: Path) -> Path:
    """Lay out every model of the stack with exactly the config `modelfleet render` writes for CPU, and its
    artefacts linked from `source.local`. Raises ModelConfigError or ArtefactMissingError naming the file."""
    configs = model_configs(plan)
    return build_repository(
        repository,
        [(model, configs[(model.name, CPU)], local_source(model, root)) for model in plan.models],
        link=True,
    )
