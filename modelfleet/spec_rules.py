"""Rules of a model spec that span its sections (backend, tensors, batching, the `triton:` section).

Each failure is a ValueError whose message starts with the field path it is about (`triton.warmup: ...`), which
the loader turns into `file:line field: message`. Rules about the rendered config as Triton checks it at load time
live in `modelfleet.triton.config.validate_config`; these are the ones a spec author can fix at the field.
"""

from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelfleet.spec import ModelSpec, TensorSpec


def check_model(spec: ModelSpec) -> None:
    _check_tensors(spec)
    _check_backend_sections(spec)
    _check_batching(spec)
    _check_warmup(spec)
    _check_canary(spec)


def _check_canary(spec: ModelSpec) -> None:
    """A canary serves another version of the same model: Triton must load exactly one version per Deployment."""
    canary = spec.rollout.canary_version
    if canary is None:
        return
    if canary == spec.version:
        raise ValueError(f"rollout.canary_version: {canary} is the stable version itself; name the new version "
                         "directory the canary serves (or use strategy: rolling)")
    if spec.triton.version_policy != "specific":
        raise ValueError(f"triton.version_policy: {spec.triton.version_policy} would load every released version in "
                         "the stable Deployment too (the canary's included); a canary needs version_policy: specific")


def _check_tensors(spec: ModelSpec) -> None:
    from modelfleet.spec import AUTO_COMPLETING

    for kind in ("inputs", "outputs"):
        tensors: list[TensorSpec] = getattr(spec, kind)
        if not tensors and spec.backend not in AUTO_COMPLETING:
            raise ValueError(f"{kind}: the {spec.backend} backend does not fill in its {kind} itself; declare at "
                             f"least one (only {', '.join(sorted(AUTO_COMPLETING))} may leave them out)")
        for i, t in enumerate(tensors):
            where = f"{kind}[{i}]"
            if kind == "outputs":
                for attr in ("optional", "allow_ragged_batch", "format"):
                    if getattr(t, attr):
                        raise ValueError(f"{where}.{attr}: only inputs have it; remove it from output {t.name!r}")
            elif t.label_filename:
                raise ValueError(f"{where}.label_filename: only outputs have labels; remove it from input {t.name!r}")
            if t.reshape is not None:
                _check_reshape(where, t, spec.max_batch_size)


def _check_reshape(where: str, t: TensorSpec, max_batch_size: int) -> None:
    """Triton's rule (model_config_utils.cc ValidateIOShape): dims and reshape hold as many elements, chunk by chunk
    between variable (-1) dimensions; `reshape: []` (a scalar) needs one element and a batching model."""
    assert t.reshape is not None
    if not t.reshape:
        if max_batch_size == 0:
            raise ValueError(f"{where}.reshape: an empty reshape (scalar) needs max_batch_size > 0")
        if prod(t.dims) != 1:
            raise ValueError(f"{where}.reshape: an empty reshape (scalar) needs dims of one element, got {t.dims}")
        return

    def chunks(dims: list[int]) -> list[int]:
        out, run = [], 1
        for d in dims:
            if d == -1:
                out.append(run)
                run = 1
            else:
                run *= d
        return out + [run]

    if chunks(t.dims) != chunks(t.reshape):
        raise ValueError(f"{where}.reshape: {t.reshape} does not hold the same elements as dims {t.dims}")


def _check_backend_sections(spec: ModelSpec) -> None:
    triton = spec.triton
    if triton.platform and spec.backend != "tensorflow":
        raise ValueError(f"triton.platform: only the tensorflow backend has a platform choice, not {spec.backend}")
    if spec.backend == "ensemble":
        if not triton.ensemble:
            raise ValueError("triton.ensemble: an ensemble lists its steps (model, input_map, output_map)")
        for field in ("instance_groups", "optimization"):
            if getattr(triton, field):
                raise ValueError(f"triton.{field}: Triton refuses it on an ensemble (its steps' models have their own)")
        if triton.warmup_requests:
            raise ValueError("triton.warmup: Triton refuses warmup on an ensemble; warm its steps' models instead")
        if spec.name in {step.model for step in triton.ensemble}:
            raise ValueError(f"triton.ensemble: a step cannot run the ensemble itself ({spec.name})")
    elif triton.ensemble:
        raise ValueError(f"triton.ensemble: only backend: ensemble has steps (this model's backend is {spec.backend})")
    gpu_groups = [g for g in triton.instance_groups if g.kind == "GPU" or g.gpus]
    if gpu_groups and not spec.hardware.is_gpu:
        raise ValueError("triton.instance_groups: a GPU group needs a GPU hardware class; set hardware.gpu_class "
                         "or use kind CPU")


def _check_batching(spec: ModelSpec) -> None:
    seq = spec.triton.sequence_batching
    if seq is not None:
        if "dynamic" in spec.batching.model_fields_set and spec.batching.dynamic:
            raise ValueError("batching.dynamic: a model has either dynamic or sequence batching; set dynamic: false "
                             "or remove triton.sequence_batching")
        too_big = [s for s in seq.preferred_batch_sizes if s > spec.max_batch_size]
        if too_big:
            raise ValueError(f"triton.sequence_batching.preferred_batch_sizes: {too_big} exceed max_batch_size "
                             f"{spec.max_batch_size}")
    if spec.batching.response_cache and spec.triton.decoupled:
        raise ValueError("batching.response_cache: Triton's response cache does not serve decoupled models; "
                         "turn one of them off")


def _check_warmup(spec: ModelSpec) -> None:
    warmups = spec.triton.warmup_requests
    inputs = {t.name: t for t in spec.inputs}
    required = {t.name for t in spec.inputs if not t.optional}
    for i, w in enumerate(warmups):
        where = f"triton.warmup_requests[{i}]"
        if w.batch_size > max(1, spec.max_batch_size):
            raise ValueError(f"{where}.batch_size: must be <= max_batch_size ({spec.max_batch_size}), got {w.batch_size}")
        if spec.inputs and not (required <= set(w.inputs) <= set(inputs)):
            raise ValueError(f"{where}.inputs: must give every required input {sorted(required)} and no others, "
                             f"got {sorted(w.inputs)}")
        for name, sample in w.inputs.items():
            t = inputs.get(name)
            if t is None:
                continue
            if sample.dtype != t.dtype:
                raise ValueError(f"{where}.inputs: input {name!r} is {t.dtype}, not {sample.dtype}")
            # Warmup requests are shaped like client requests: by dims, not by reshape.
            fits = len(sample.dims) == len(t.dims) and all(d in (-1, s) for d, s in zip(t.dims, sample.dims))
            if not fits:
                raise ValueError(f"{where}.inputs: input {name!r} needs concrete sizes for its dims {t.dims} "
                                 f"(a size for each -1), got {sample.dims}")
