"""Each model's Triton `config.pbtxt`, rendered from its spec and checked before any server sees it.

Pure and deterministic: the same spec (and tuning settings) always gives the same bytes. The text is
produced by Triton's own protobuf schema (`tritonclient.grpc.model_config_pb2.ModelConfig`) through
`google.protobuf.text_format`, so it is canonical and every field name is one the server knows. Every
rendered config is parsed back and checked against the rules the server enforces at load time; a
violation raises `ModelConfigError` naming the spec file and the config field.

No Pulumi here. The model repository helpers at the bottom lay out `<repo>/<model>/config.pbtxt` and
`<repo>/<model>/<version>/...` from a model's local source directory.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from google.protobuf import text_format

from modelfleet.spec import ModelSpec

try:
    from tritonclient.grpc import model_config_pb2 as mc
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "modelfleet.triton.config needs Triton's model-config schema from tritonclient[grpc]; "
        "install it with scripts/install_triton.sh (or pip install 'tritonclient[grpc]==2.73.0')"
    ) from exc

CPU = "cpu"
WARMUP_NAME = "zeros"

# How each backend of the spec is named to Triton: (backend, platform). Exactly one is set.
BACKENDS: dict[str, tuple[str, str]] = {
    "python": ("python", ""),
    "onnxruntime": ("onnxruntime", ""),
    "tensorrt": ("", "tensorrt_plan"),
    "pytorch": ("", "pytorch_libtorch"),
}
# The file Triton loads from `<model>/<version>/` for each backend when no default_model_filename is set.
ARTEFACTS: dict[str, str] = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "pytorch": "model.pt",
}
KNOWN_BACKENDS = {"python", "onnxruntime", "tensorrt", "pytorch", "openvino", "tensorflow", "fil", "identity"}
KNOWN_PLATFORMS = {"tensorrt_plan", "pytorch_libtorch", "onnxruntime_onnx", "tensorflow_savedmodel",
                   "tensorflow_graphdef", "ensemble"}


class ModelConfigError(ValueError):
    """A rendered config breaks a rule Triton enforces; `str()` names the spec file and the config field."""

    def __init__(self, where: str, field: str, message: str):
        self.where, self.field, self.message = where, field, message
        super().__init__(f"{where} {field}: {message}" if field else f"{where}: {message}")


class ArtefactMissingError(FileNotFoundError):
    """A model's source directory lacks a file its backend loads; `str()` names the path."""


@dataclass(frozen=True)
class TunedSettings:
    """Measured settings that override the spec's batching and instance choices for one hardware class.

    The tuning issue builds one from a Model Analyzer result; `None` keeps the spec's value.
    """

    max_batch_size: int | None = None
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_delay_us: int | None = None
    instance_count: int | None = None


def spec_file(spec: ModelSpec) -> str:
    return f"models/{spec.name}.yaml"


def _dtype(name: str) -> int:
    return mc.DataType.Value("TYPE_STRING" if name == "BYTES" else f"TYPE_{name}")


def _dynamic_batching_requested(spec: ModelSpec) -> bool:
    """Batching is on when the spec asks for it; the default `dynamic: true` only applies to batching models."""
    batching = spec.batching
    if not batching.dynamic:
        return False
    explicit = "dynamic" in batching.model_fields_set or bool(
        batching.preferred_batch_sizes or batching.priority_levels or batching.queue_policy
    )
    return spec.max_batch_size > 0 or explicit


def build_config(spec: ModelSpec, hardware_class: str, tuning: TunedSettings | None = None) -> mc.ModelConfig:
    """The `ModelConfig` message for `spec` on `hardware_class` (`cpu` or a GPU class), before validation."""
    tuning = tuning or TunedSettings()
    backend, platform = BACKENDS[spec.backend]
    config = mc.ModelConfig(name=spec.name, backend=backend, platform=platform)
    config.max_batch_size = spec.max_batch_size if tuning.max_batch_size is None else tuning.max_batch_size
    config.version_policy.specific.versions.append(spec.version)

    for tensor in spec.inputs:
        config.input.add(name=tensor.name, data_type=_dtype(tensor.dtype), dims=tensor.dims)
    for tensor in spec.outputs:
        config.output.add(name=tensor.name, data_type=_dtype(tensor.dtype), dims=tensor.dims)

    batching = spec.batching
    if _dynamic_batching_requested(spec):
        dyn = config.dynamic_batching
        sizes = batching.preferred_batch_sizes if tuning.preferred_batch_sizes is None else tuning.preferred_batch_sizes
        dyn.preferred_batch_size.extend(sorted(sizes))
        dyn.max_queue_delay_microseconds = (
            batching.max_queue_delay_us if tuning.max_queue_delay_us is None else tuning.max_queue_delay_us
        )
        if batching.priority_levels:
            dyn.priority_levels = batching.priority_levels
            # Requests that name no priority wait behind every request that names one.
            dyn.default_priority_level = batching.priority_levels
        if batching.queue_policy is not None:
            policy = batching.queue_policy
            dyn.default_queue_policy.timeout_action = mc.ModelQueuePolicy.TimeoutAction.Value(policy.timeout_action)
            dyn.default_queue_policy.default_timeout_microseconds = policy.default_timeout_us
            dyn.default_queue_policy.max_queue_size = policy.max_queue_size

    kind = mc.ModelInstanceGroup.Kind.KIND_CPU if hardware_class == CPU else mc.ModelInstanceGroup.Kind.KIND_GPU
    config.instance_group.add(count=tuning.instance_count or 1, kind=kind)

    if batching.response_cache:
        config.response_cache.enable = True

    warmup = config.model_warmup.add(name=WARMUP_NAME, batch_size=1)
    for tensor in spec.inputs:
        sample = warmup.inputs[tensor.name]
        sample.data_type = _dtype(tensor.dtype)
        sample.dims.extend(1 if d == -1 else d for d in tensor.dims)
        sample.zero_data = True
    return config


def render_config(spec: ModelSpec, hardware_class: str, tuning: TunedSettings | None = None,
                  where: str | None = None) -> str:
    """The validated, canonical `config.pbtxt` text of `spec` on `hardware_class`."""
    config = build_config(spec, hardware_class, tuning)
    text = text_format.MessageToString(config)
    validate_config(text, where or spec_file(spec), expected_name=spec.name)
    return text


def parse_config(text: str, where: str) -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ModelConfigError(where, "", f"not a valid Triton model config: {exc}") from None
    return config


def validate_config(config: str | mc.ModelConfig, where: str, expected_name: str | None = None) -> mc.ModelConfig:
    """Parse `config` with Triton's schema and apply the semantic rules the server checks at load time.

    Returns the parsed message; raises `ModelConfigError(where, field, message)` on the first violation.
    """
    if isinstance(config, str):
        parsed = parse_config(config, where)
    else:
        parsed = parse_config(text_format.MessageToString(config), where)
        if parsed != config:  # pragma: no cover - protobuf round trip is lossless
            raise ModelConfigError(where, "", "config does not survive a text round trip")

    def fail(field: str, message: str) -> None:
        raise ModelConfigError(where, field, message)

    c = parsed
    if not c.name:
        fail("name", "must be set")
    if expected_name is not None and c.name != expected_name:
        fail("name", f"must be the model's directory name {expected_name!r}, got {c.name!r}")
    if bool(c.backend) == bool(c.platform):
        fail("backend", "set exactly one of backend or platform")
    if c.backend and c.backend not in KNOWN_BACKENDS:
        fail("backend", f"unknown backend {c.backend!r}; known: {', '.join(sorted(KNOWN_BACKENDS))}")
    if c.platform and c.platform not in KNOWN_PLATFORMS:
        fail("platform", f"unknown platform {c.platform!r}; known: {', '.join(sorted(KNOWN_PLATFORMS))}")
    if c.max_batch_size < 0:
        fail("max_batch_size", f"must be >= 0, got {c.max_batch_size}")

    _check_tensors(c, fail)
    _check_batching(c, fail)

    for i, group in enumerate(c.instance_group):
        if group.count < 1:
            fail(f"instance_group[{i}].count", f"must be >= 1, got {group.count}")
        if group.kind == mc.ModelInstanceGroup.Kind.KIND_CPU and group.gpus:
            fail(f"instance_group[{i}].gpus", "KIND_CPU instances cannot name GPUs")

    policy = c.version_policy
    if policy.HasField("specific"):
        if not policy.specific.versions:
            fail("version_policy.specific.versions", "must list at least one version")
        bad = [v for v in policy.specific.versions if v < 1]
        if bad:
            fail("version_policy.specific.versions", f"versions must be >= 1, got {bad[0]}")
    if policy.HasField("latest") and policy.latest.num_versions < 1:
        fail("version_policy.latest.num_versions", f"must be >= 1, got {policy.latest.num_versions}")

    _check_warmup(c, fail)
    return parsed


def _check_tensors(c: mc.ModelConfig, fail) -> None:
    names: list[str] = []
    for kind, tensors in (("input", c.input), ("output", c.output)):
        if not tensors:
            fail(kind, "at least one is required")
        for i, t in enumerate(tensors):
            field = f"{kind}[{i}]"
            if not t.name:
                fail(f"{field}.name", "must be set")
            if t.data_type == mc.DataType.TYPE_INVALID:
                fail(f"{field}.data_type", f"model {kind} {t.name!r} must specify 'data_type'")
            if not t.dims:
                fail(f"{field}.dims", f"model {kind} {t.name!r} must specify 'dims'")
            bad = [d for d in t.dims if d == 0 or d < -1]
            if bad:
                fail(f"{field}.dims", f"each dimension must be a positive size or -1 (variable), got {bad[0]}")
            names.append(t.name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        fail("input", f"tensor names must be unique across inputs and outputs; repeated: {', '.join(repeated)}")


def _check_batching(c: mc.ModelConfig, fail) -> None:
    if not c.HasField("dynamic_batching"):
        return
    if c.HasField("sequence_batching"):
        fail("dynamic_batching", "a model cannot have both dynamic and sequence batching")
    dyn = c.dynamic_batching
    if c.max_batch_size == 0:
        fail("dynamic_batching", "dynamic batching needs max_batch_size > 0 (the model does not batch); "
                                 "set max_batch_size or batching.dynamic: false")
    sizes = list(dyn.preferred_batch_size)
    for size in sizes:
        if size < 1:
            fail("dynamic_batching.preferred_batch_size", f"must be >= 1, got {size}")
        if size > c.max_batch_size:
            fail("dynamic_batching.preferred_batch_size",
                 f"dynamic batching preferred size must be <= max batch size: {size} > {c.max_batch_size}")
    if len(set(sizes)) != len(sizes):
        fail("dynamic_batching.preferred_batch_size", f"sizes must be distinct, got {sizes}")
    if dyn.priority_levels == 0:
        if dyn.default_priority_level != 0:
            fail("dynamic_batching.default_priority_level", "must be 0 when priority_levels is 0")
        if dyn.priority_queue_policy:
            fail("dynamic_batching.priority_queue_policy", "needs priority_levels > 0")
    else:
        if not 1 <= dyn.default_priority_level <= dyn.priority_levels:
            fail("dynamic_batching.default_priority_level",
                 f"must be between 1 and priority_levels ({dyn.priority_levels}), got {dyn.default_priority_level}")
        bad = [k for k in dyn.priority_queue_policy if not 1 <= k <= dyn.priority_levels]
        if bad:
            fail("dynamic_batching.priority_queue_policy",
                 f"priority {bad[0]} is outside 1..priority_levels ({dyn.priority_levels})")


def _check_warmup(c: mc.ModelConfig, fail) -> None:
    inputs = {t.name: t for t in c.input}
    for i, warmup in enumerate(c.model_warmup):
        field = f"model_warmup[{i}]"
        if warmup.batch_size < 1:
            fail(f"{field}.batch_size", f"must be >= 1, got {warmup.batch_size}")
        if warmup.batch_size > max(1, c.max_batch_size):
            fail(f"{field}.batch_size", f"must be <= max_batch_size ({c.max_batch_size}), got {warmup.batch_size}")
        if set(warmup.inputs) != set(inputs):
            fail(f"{field}.inputs", f"must give exactly the model inputs {sorted(inputs)}, got {sorted(warmup.inputs)}")
        for name, sample in warmup.inputs.items():
            if sample.data_type != inputs[name].data_type:
                fail(f"{field}.inputs[{name}].data_type", "must match the input's data_type")
            if [d for d in sample.dims if d < 1] or len(sample.dims) != len(inputs[name].dims):
                fail(f"{field}.inputs[{name}].dims", f"must be concrete sizes of the input's shape, got {list(sample.dims)}")
            if sample.WhichOneof("input_data_type") is None:
                fail(f"{field}.inputs[{name}]", "must set zero_data, random_data or input_data_file")


# --- the model repository ------------------------------------------------------------------------------

def artefact_paths(spec: ModelSpec, source_dir: Path) -> list[Path]:
    """The files Triton needs from `source_dir` (the model's directory: `<version>/<artefact>`)."""
    return [source_dir / str(spec.version) / ARTEFACTS[spec.backend]]


def check_artefacts(spec: ModelSpec, source_dir: Path) -> None:
    version_dir = source_dir / str(spec.version)
    if not version_dir.is_dir():
        raise ArtefactMissingError(
            f"{spec_file(spec)}: model {spec.name} version {spec.version} has no directory {version_dir} "
            "(build the examples with: python examples/build_models.py build/model-artifacts)")
    for path in artefact_paths(spec, source_dir):
        if not path.is_file():
            raise ArtefactMissingError(
                f"{spec_file(spec)}: the {spec.backend} backend loads {path}, which does not exist "
                "(build the examples with: python examples/build_models.py build/model-artifacts)")


def write_model(repository: Path, spec: ModelSpec, config_text: str, source_dir: Path, *, link: bool = False) -> Path:
    """Lay out one model as Triton expects: `<repository>/<model>/config.pbtxt` and
    `<repository>/<model>/<version>/...` copied (or symlinked, `link=True`) from `source_dir/<version>/`."""
    check_artefacts(spec, source_dir)
    model_dir = repository / spec.name
    version_src = source_dir / str(spec.version)
    version_dst = model_dir / str(spec.version)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version_dst.mkdir(parents=True)
    for item in sorted(version_src.iterdir()):
        if item.name == "__pycache__":
            continue
        target = version_dst / item.name
        if link:
            target.symlink_to(item.resolve(), target_is_directory=item.is_dir())
        elif item.is_dir():
            shutil.copytree(item, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(item, target)
    (model_dir / "config.pbtxt").write_text(config_text)
    return model_dir


def build_repository(repository: Path, models: Iterable[tuple[ModelSpec, str, Path]], *, link: bool = False) -> Path:
    """A model repository holding each `(spec, config_text, source_dir)`; other entries are left alone."""
    repository.mkdir(parents=True, exist_ok=True)
    for spec, text, source in models:
        write_model(repository, spec, text, source, link=link)
    return repository


def local_source(spec: ModelSpec, root: Path) -> Path:
    """The model's `source.local` directory, resolved against the project root."""
    if not spec.source.local:
        raise ArtefactMissingError(f"{spec_file(spec)}: source.local is not set; name the directory holding "
                                   f"{spec.version}/{ARTEFACTS[spec.backend]}")
    path = Path(spec.source.local)
    return path if path.is_absolute() else root / path
