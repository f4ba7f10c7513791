"""A canary by weight: a second Triton Deployment serves the spec's `rollout.canary_version` beside the stable
`version`, and the gateway splits each model's requests between them, 100 - p to the stable and p to the canary.

One model repository holds both: `<model>/config.pbtxt` loads only the stable version (`version_policy: specific`),
`<model>/configs/canary.pbtxt` only the canary's, and the canary's Triton runs with `--model-config-name=canary`
(Triton's custom model configuration: it reads `configs/<name>.pbtxt` and falls back to config.pbtxt for models
without one, such as an ensemble's steps; triton-inference-server/server docs/user_guide/model_configuration.md,
"Custom Model Configuration"). So the stable Deployment is untouched by a canary, and removing the canary removes
only the second Deployment.

Pure: names, weights and the canary's spec; the plan sizes it, serving/gateway declare it.
"""

from __future__ import annotations

import math

from modelfleet.spec import ModelSpec

CONFIG_NAME = "canary"
CONFIG_KEY = f"configs/{CONFIG_NAME}.pbtxt"  # relative to the model's folder in the repository
SUFFIX = "-canary"


def config_key(model: str) -> str:
    """Where the canary's config sits in a model repository, and its key beside the models' own configs (a Triton
    model name holds no '/', so it never equals a model's name)."""
    return f"{model}/{CONFIG_KEY}"


def canary_spec(model: ModelSpec) -> ModelSpec:
    """The spec the canary's config is rendered from: the same model at the canary's version. Rendering it with the
    stable's function keeps every other setting (batching, instances, tuning) identical between the two."""
    assert model.rollout.canary_version is not None
    return model.model_copy(update={"version": model.rollout.canary_version})


def weights(percent: int) -> tuple[int, int]:
    """(stable, canary) backend weights: Gateway API weights are proportions, so percentages that sum to 100."""
    return 100 - percent, percent


def share(rps: float, percent: int) -> tuple[float, float]:
    """A region's requests per second split like the routes split them: what each Deployment is sized for."""
    return rps * (100 - percent) / 100, rps * percent / 100


def max_replicas(stable_max: int, percent: int) -> int:
    """The canary's ceiling: its share of the model's, at least one replica."""
    return max(1, math.ceil(stable_max * percent / 100))
