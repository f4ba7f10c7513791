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

# How each backend of the spec is named to Triton: (backend, platform). Where Triton knows both it fills in the
# other at load (model_config_utils.cc AutoCompleteBackendFields; `normalise` does the same).
BACKENDS: dict[str, tuple[str, str]] = {
    "python": ("python", ""),
    "onnxruntime": ("onnxruntime", ""),
    "tensorrt": ("", "tensorrt_plan"),
    "pytorch": ("", "pytorch_libtorch"),
    "tensorflow": ("", "tensorflow_savedmodel"),
    "openvino": ("openvino", ""),
    "identity": ("identity", ""),
    "vllm": ("vllm", ""),
    "tensorrtllm": ("tensorrtllm", ""),
    "fil": ("fil", ""),
    "ensemble": ("", "ensemble"),
}
# The file Triton loads from `<model>/<version>/` for each backend when no default_model_filename is set;
# identity, tensorrtllm (engine directory named by a parameter) and ensembles need none.
ARTEFACTS: dict[str, str] = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "pytorch": "model.pt",
    "tensorflow": "model.savedmodel",
    "openvino": "model.xml",
    "vllm": "model.json",
    "fil": "xgboost.model",
}
KNOWN_BACKENDS = {b for b, _ in BACKENDS.values() if b} | {"tensorflow", "pytorch", "tensorrt"}
KNOWN_PLATFORMS = {p for _, p in BACKENDS.values() if p} | {"onnxruntime_onnx", "tensorflow_graphdef"}
# Triton's pairs of platform and backend, and the file each loads by default (AutoCompleteBackendFields).
PLATFORM_BACKEND = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch",
                    "tensorflow_savedmodel": "tensorflow", "tensorflow_graphdef": "tensorflow"}
DEFAULT_FILENAME = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx", "pytorch_libtorch": "model.pt",
                    "tensorflow_savedmodel": "model.savedmodel", "tensorflow_graphdef": "model.graphdef"}
SEQUENCE_IDLE_DEFAULT_US = 1_000_000  # Triton's default max_sequence_idle_microseconds
RESPONSE_CACHE_BYTES = 256 * 1024 * 1024


def server_flags(models: Iterable[ModelSpec]) -> list[str]:
    """The tritonserver flags the configs of `models` need, locally and in the cloud alike.

    `response_cache { enable: true }` does nothing unless the server has a cache: without `--cache-config` Triton
    loads the model and serves every request uncached, silently (docs/user_guide/response_cache.md)."""
    if any(m.batching.response_cache for m in models):
        return [f"--cache-config=local,size={RESPONSE_CACHE_BYTES}"]
    return []


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
    """Batching is on when the spec asks for it; the default `dynamic: true` only applies to batching models
    without sequence batching."""
    batching = spec.batching
    if not batching.dynamic:
        return False
    explicit = "dynamic" in batching.model_fields_set or bool(
        batching.preferred_batch_sizes or batching.priority_levels or batching.queue_policy
    )
    if spec.triton.sequence_batching is not None or spec.backend == "ensemble":
        return explicit
    return spec.max_batch_size > 0 or explicit


def _queue_policy(target: mc.ModelQueuePolicy, policy) -> None:
    target.timeout_action = mc.ModelQueuePolicy.TimeoutAction.Value(policy.timeout_action)
    target.default_timeout_microseconds = policy.default_timeout_us
    target.max_queue_size = policy.max_queue_size
    target.allow_timeout_override = policy.allow_timeout_override


def _tensor(target, tensor) -> None:
    target.name = tensor.name
    target.data_type = _dtype(tensor.dtype)
    target.dims.extend(tensor.dims)
    if tensor.reshape is not None:
        target.reshape.shape.extend(tensor.reshape)
    if tensor.is_shape_tensor:
        target.is_shape_tensor = True
    if isinstance(target, mc.ModelInput):
        if tensor.optional:
            target.optional = True
        if tensor.format:
            target.format = mc.ModelInput.Format.Value(f"FORMAT_{tensor.format}")
        if tensor.allow_ragged_batch:
            target.allow_ragged_batch = True
    elif tensor.label_filename:
        target.label_filename = tensor.label_filename


def warmup_is_safe(spec: ModelSpec) -> bool:
    """Whether the automatic zero-filled warmup is safe to add: Triton refuses warmup on ensembles; a sequence
    model's warmup request carries no correlation id or controls; a decoupled model answers with zero or many
    responses and is often a generator that parses its inputs (the vLLM model reads JSON from a BYTES input), so a
    zero-filled request can fail it, and a failed warmup fails the load. Optional inputs are left out of it."""
    return bool(spec.inputs) and not (spec.backend == "ensemble" or spec.triton.decoupled
                                      or spec.triton.sequence_batching is not None)


def build_config(spec: ModelSpec, hardware_class: str, tuning: TunedSettings | None = None) -> mc.ModelConfig:
    """The `ModelConfig` message for `spec` on `hardware_class` (`cpu` or a GPU class), before validation."""
    tuning = tuning or TunedSettings()
    backend, platform = BACKENDS[spec.backend]
    triton = spec.triton
    if triton.platform:
        platform = triton.platform
    config = mc.ModelConfig(name=spec.name, backend=backend, platform=platform)
    config.max_batch_size = spec.max_batch_size if tuning.max_batch_size is None else tuning.max_batch_size
    if triton.version_policy == "specific":
        config.version_policy.specific.versions.append(spec.version)
    elif triton.version_policy == "latest":
        config.version_policy.latest.num_versions = 1
    else:
        config.version_policy.all.SetInParent()
    if triton.default_model_filename:
        config.default_model_filename = triton.default_model_filename

    for tensor in spec.inputs:
        _tensor(config.input.add(), tensor)
    for tensor in spec.outputs:
        _tensor(config.output.add(), tensor)

    batching = spec.batching
    if _dynamic_batching_requested(spec):
        dyn = config.dynamic_batching
        sizes = batching.preferred_batch_sizes if tuning.preferred_batch_sizes is None else tuning.preferred_batch_sizes
        dyn.preferred_batch_size.extend(sizes)
        dyn.max_queue_delay_microseconds = (
            batching.max_queue_delay_us if tuning.max_queue_delay_us is None else tuning.max_queue_delay_us
        )
        if batching.preserve_ordering:
            dyn.preserve_ordering = True
        if batching.priority_levels:
            dyn.priority_levels = batching.priority_levels
            # By default requests that name no priority wait behind every request that names one.
            dyn.default_priority_level = batching.default_priority_level or batching.priority_levels
        if batching.queue_policy is not None:
            _queue_policy(dyn.default_queue_policy, batching.queue_policy)
        for level, policy in sorted(batching.priority_queue_policy.items()):
            _queue_policy(dyn.priority_queue_policy[level], policy)
    if triton.sequence_batching is not None:
        _sequence_batching(config.sequence_batching, triton.sequence_batching)
    for step in triton.ensemble:
        s = config.ensemble_scheduling.step.add(model_name=step.model, model_version=step.model_version)
        s.input_map.update(step.input_map)
        s.output_map.update(step.output_map)

    if spec.backend != "ensemble":
        _instance_groups(config, spec, hardware_class, tuning)
    for key, value in sorted(triton.parameters.items()):
        config.parameters[key].string_value = value
    if triton.optimization is not None:
        _optimization(config.optimization, triton.optimization)
    if triton.decoupled:
        config.model_transaction_policy.decoupled = True
    if batching.response_cache:
        config.response_cache.enable = True
    _warmup(config, spec)
    return config


def _instance_groups(config: mc.ModelConfig, spec: ModelSpec, hardware_class: str, tuning: TunedSettings) -> None:
    hardware_kind = "KIND_CPU" if hardware_class == CPU else "KIND_GPU"
    groups = spec.triton.instance_groups
    if not groups:
        config.instance_group.add(count=tuning.instance_count or 1, kind=mc.ModelInstanceGroup.Kind.Value(hardware_kind))
        return
    # Model Analyzer measures one group; its count replaces the spec's only where the spec has one group too.
    tuned_count = tuning.instance_count if len(groups) == 1 else None
    for g in groups:
        group = config.instance_group.add(count=tuned_count or g.count)
        if g.name:
            group.name = g.name
        group.kind = mc.ModelInstanceGroup.Kind.Value(f"KIND_{g.kind}" if g.kind else hardware_kind)
        group.gpus.extend(g.gpus)
        group.profile.extend(g.profile)
        if g.passive:
            group.passive = True
        if g.host_policy:
            group.host_policy = g.host_policy
        if g.rate_limiter is not None:
            limiter = group.rate_limiter
            limiter.priority = g.rate_limiter.priority
            for r in g.rate_limiter.resources:
                limiter.resources.add(name=r.name, count=r.count, **{"global": r.shared})
            if not g.rate_limiter.resources and not g.rate_limiter.priority:
                limiter.SetInParent()


def _optimization(target: mc.ModelOptimizationPolicy, o) -> None:
    if o.graph_level is not None:
        target.graph.level = o.graph_level
    if o.priority is not None:
        target.priority = mc.ModelOptimizationPolicy.ModelPriority.Value(f"PRIORITY_{o.priority}")
    if o.cuda is not None:
        target.cuda.graphs = o.cuda.graphs
        target.cuda.busy_wait_events = o.cuda.busy_wait_events
        target.cuda.output_copy_stream = o.cuda.output_copy_stream
        target.cuda.SetInParent()
    if o.execution_accelerators is not None:
        accelerators = target.execution_accelerators
        accelerators.SetInParent()
        for spec_list, proto_list in ((o.execution_accelerators.gpu, accelerators.gpu_execution_accelerator),
                                      (o.execution_accelerators.cpu, accelerators.cpu_execution_accelerator)):
            for a in spec_list:
                acc = proto_list.add(name=a.name)
                acc.parameters.update(a.parameters)
    if o.input_pinned_memory is not None:
        target.input_pinned_memory.enable = o.input_pinned_memory
    if o.output_pinned_memory is not None:
        target.output_pinned_memory.enable = o.output_pinned_memory
    if o.gather_kernel_buffer_threshold is not None:
        target.gather_kernel_buffer_threshold = o.gather_kernel_buffer_threshold
    if o.eager_batching is not None:
        target.eager_batching = o.eager_batching
    target.SetInParent()


def _sequence_batching(target: mc.ModelSequenceBatching, seq) -> None:
    target.SetInParent()
    target.max_sequence_idle_microseconds = seq.max_sequence_idle_us
    if seq.strategy == "direct":
        target.direct.max_queue_delay_microseconds = seq.max_queue_delay_us
        target.direct.minimum_slot_utilization = seq.minimum_slot_utilization
        target.direct.SetInParent()
    elif seq.strategy == "oldest":
        target.oldest.max_candidate_sequences = seq.max_candidate_sequences
        target.oldest.preferred_batch_size.extend(seq.preferred_batch_sizes)
        target.oldest.max_queue_delay_microseconds = seq.max_queue_delay_us
        target.oldest.preserve_ordering = seq.preserve_ordering
        target.oldest.SetInParent()
    for ci in seq.control_inputs:
        control_input = target.control_input.add(name=ci.name)
        for c in ci.controls:
            control = control_input.control.add(kind=mc.ModelSequenceBatching.Control.Kind.Value(f"CONTROL_SEQUENCE_{c.kind}"))
            control.int32_false_true.extend(c.int32_false_true)
            control.fp32_false_true.extend(c.fp32_false_true)
            control.bool_false_true.extend(c.bool_false_true)
            if c.data_type:
                control.data_type = _dtype(c.data_type)
    for st in seq.states:
        state = target.state.add(input_name=st.input_name, output_name=st.output_name, data_type=_dtype(st.dtype),
                                 dims=st.dims, use_same_buffer_for_input_output=st.use_same_buffer_for_input_output,
                                 use_growable_memory=st.use_growable_memory)
        for init in st.initial_state:
            initial = state.initial_state.add(name=init.name, data_type=_dtype(init.dtype), dims=init.dims)
            if init.zero_data:
                initial.zero_data = True
            else:
                initial.data_file = init.data_file
    if seq.iterative_sequence:
        target.iterative_sequence = True


def _warmup(config: mc.ModelConfig, spec: ModelSpec) -> None:
    mode = spec.triton.warmup
    if mode == "off" or (mode == "auto" and not warmup_is_safe(spec)):
        return
    if mode == "auto":
        warmup = config.model_warmup.add(name=WARMUP_NAME, batch_size=1)
        for tensor in spec.inputs:
            if tensor.optional:
                continue
            sample = warmup.inputs[tensor.name]
            sample.data_type = _dtype(tensor.dtype)
            sample.dims.extend(1 if d == -1 else d for d in tensor.dims)
            sample.zero_data = True
        return
    for w in spec.triton.warmup_requests:
        warmup = config.model_warmup.add(name=w.name, batch_size=w.batch_size, count=w.count)
        for name, given in w.inputs.items():
            sample = warmup.inputs[name]
            sample.data_type = _dtype(given.dtype)
            sample.dims.extend(given.dims)
            if given.zero_data:
                sample.zero_data = True
            elif given.random_data:
                sample.random_data = True
            else:
                sample.input_data_file = given.input_data_file


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
    if not (c.backend or c.platform):
        fail("backend", "set backend or platform")
    paired = PLATFORM_BACKEND.get(c.platform)
    if c.backend and paired and c.backend != paired:
        fail("backend", f"platform {c.platform} runs on the {paired} backend, not {c.backend!r}")
    if c.backend and c.backend not in KNOWN_BACKENDS:
        fail("backend", f"unknown backend {c.backend!r}; known: {', '.join(sorted(KNOWN_BACKENDS))}")
    if c.platform and c.platform not in KNOWN_PLATFORMS:
        fail("platform", f"unknown platform {c.platform!r}; known: {', '.join(sorted(KNOWN_PLATFORMS))}")
    if c.max_batch_size < 0:
        fail("max_batch_size", f"must be >= 0, got {c.max_batch_size}")

    _check_tensors(c, fail)
    _check_batching(c, fail)
    _check_sequence_batching(c, fail)
    if c.platform == "ensemble" or c.HasField("ensemble_scheduling"):
        _check_ensemble(c, fail)
    if c.model_transaction_policy.decoupled and c.response_cache.enable:
        fail("response_cache.enable", "Triton's response cache does not serve decoupled models")

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
    from modelfleet.spec import AUTO_COMPLETING

    names: list[str] = []
    backend = c.backend or PLATFORM_BACKEND.get(c.platform, c.platform)
    for kind, tensors in (("input", c.input), ("output", c.output)):
        if not tensors and backend not in AUTO_COMPLETING:
            fail(kind, f"at least one is required (the {backend} backend does not fill them in)")
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
            if t.HasField("reshape") and not t.reshape.shape and c.max_batch_size == 0:
                fail(f"{field}.reshape", "cannot be empty (a scalar) for a non-batching model")
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


def _check_sequence_batching(c: mc.ModelConfig, fail) -> None:
    if not c.HasField("sequence_batching"):
        return
    seq = c.sequence_batching
    too_big = [s for s in seq.oldest.preferred_batch_size if s > c.max_batch_size]
    if too_big:
        fail("sequence_batching.oldest.preferred_batch_size", f"must be <= max_batch_size ({c.max_batch_size}), "
                                                              f"got {too_big[0]}")
    declared = {t.name for t in c.input}
    for i, ci in enumerate(seq.control_input):
        if ci.name in declared:
            fail(f"sequence_batching.control_input[{i}].name",
                 f"{ci.name!r} is also a model input; control inputs are not declared as inputs")
    for i, st in enumerate(seq.state):
        if not st.input_name or not st.output_name:
            fail(f"sequence_batching.state[{i}]", "must set input_name and output_name")


def _check_ensemble(c: mc.ModelConfig, fail) -> None:
    """Triton's ValidateEnsembleSchedulingConfig (model_config_utils.cc): the shape of the graph as data flow."""
    if c.platform != "ensemble":
        fail("ensemble_scheduling", "only a model with platform 'ensemble' has ensemble steps")
    for field, present in (("instance_group", bool(c.instance_group)), ("optimization", c.HasField("optimization")),
                           ("model_warmup", bool(c.model_warmup))):
        if present:
            fail(field, "Triton refuses it on an ensemble")
    steps = c.ensemble_scheduling.step
    if not steps:
        fail("ensemble_scheduling.step", "an ensemble needs at least one step")
    written: dict[str, int] = {}
    read: set[str] = set()
    for i, step in enumerate(steps):
        where = f"ensemble_scheduling.step[{i}]"
        if not step.model_name:
            fail(f"{where}.model_name", "must be set")
        if not step.input_map or not step.output_map:
            fail(where, "must map at least one input and one output")
        for tensor in step.output_map.values():
            if tensor in written:
                fail(f"{where}.output_map", f"ensemble tensor {tensor!r} is already written by step {written[tensor]}")
            written[tensor] = i
        read.update(step.input_map.values())
    inputs = {t.name for t in c.input}
    ready = set(inputs)
    pending = list(range(len(steps)))
    while pending:  # run steps whose inputs are all available, until nothing more can run
        runnable = [i for i in pending if set(steps[i].input_map.values()) <= ready]
        if not runnable:
            break
        for i in runnable:
            ready.update(steps[i].output_map.values())
            pending.remove(i)
    for name in sorted(inputs - read):
        fail("input", f"ensemble input {name!r} is not used by any step")
    for t in c.output:
        if t.name not in ready:
            fail("output", f"ensemble output {t.name!r} is not written by any step that can run")
    outputs = {t.name for t in c.output}
    for tensor in sorted((set(written) | read) - outputs):
        if tensor not in read or tensor not in ready:
            fail("ensemble_scheduling.step", f"ensemble tensor {tensor!r} is unused or never written")


def _check_warmup(c: mc.ModelConfig, fail) -> None:
    inputs = {t.name: t for t in c.input}
    required = {t.name for t in c.input if not t.optional}
    for i, warmup in enumerate(c.model_warmup):
        field = f"model_warmup[{i}]"
        if warmup.batch_size < 1:
            fail(f"{field}.batch_size", f"must be >= 1, got {warmup.batch_size}")
        if warmup.batch_size > max(1, c.max_batch_size):
            fail(f"{field}.batch_size", f"must be <= max_batch_size ({c.max_batch_size}), got {warmup.batch_size}")
        if inputs and not required <= set(warmup.inputs) <= set(inputs):
            fail(f"{field}.inputs", f"must give every required model input {sorted(required)} and no others, "
                                    f"got {sorted(warmup.inputs)}")
        for name, sample in warmup.inputs.items():
            if name not in inputs:
                continue
            if sample.data_type != inputs[name].data_type:
                fail(f"{field}.inputs[{name}].data_type", "must match the input's data_type")
            if [d for d in sample.dims if d < 1] or len(sample.dims) != len(inputs[name].dims):
                fail(f"{field}.inputs[{name}].dims", f"must be concrete sizes of the input's shape, got {list(sample.dims)}")
            if sample.WhichOneof("input_data_type") is None:
                fail(f"{field}.inputs[{name}]", "must set zero_data, random_data or input_data_file")


# --- the model repository ------------------------------------------------------------------------------

def artefact_paths(spec: ModelSpec, source_dir: Path) -> list[Path]:
    """The files Triton needs from `source_dir` (the model's directory: `<version>/<artefact>`); none for backends
    that load no file of their own (an ensemble's version folder is empty)."""
    filename = spec.triton.default_model_filename or ARTEFACTS.get(spec.backend)
    return [source_dir / str(spec.version) / filename] if filename else []


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
                                   f"{spec.version}/{ARTEFACTS.get(spec.backend, '')}")
    path = Path(spec.source.local)
    return path if path.is_absolute() else root / path
