"""`modelfleet import`: an existing Triton model repository becomes one spec per model.

For each `<repository>/<model>/`, the model's config (its `config.pbtxt`, or for a config-less model the fields
Triton itself fills in from the files: the backend from `model.onnx`, `model.plan`, `model.savedmodel/`,
`model.graphdef`, `model.pt`, `model.py` or `model.json`) is turned into a spec. The spec is then rendered back
and both configs are compared as protobuf messages after Triton's normalisation (`modelfleet.triton.normalise`):
anything the spec could not say shows up as a difference naming the model and the config field, so nothing is
dropped silently.

What a config cannot tell (owner, SLO, where the repository lives in each cloud) comes from the command's options;
the written spec says so in its header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from google.protobuf import text_format
from pydantic import ValidationError

from modelfleet.spec import ModelSpec
from modelfleet.triton.config import CPU, ModelConfigError, build_config, mc, validate_config
from modelfleet.triton.normalise import differences, normalise

DEFAULT_GPU_CLASS = "nvidia-l4"
_GPU_ONLY = {"tensorrt", "tensorrtllm", "vllm"}
# Config-less models: the file in the version folder that tells Triton the backend (AutoCompleteBackendFields).
_CONFIGLESS = (("model.savedmodel", "platform", "tensorflow_savedmodel"),
               ("model.graphdef", "platform", "tensorflow_graphdef"),
               ("model.plan", "backend", "tensorrt"), ("model.onnx", "backend", "onnxruntime"),
               ("model.pt", "platform", "pytorch_libtorch"), ("model.py", "backend", "python"),
               ("model.json", "backend", "vllm"))
_SPEC_BACKEND = {"tensorrt_plan": "tensorrt", "pytorch_libtorch": "pytorch", "onnxruntime_onnx": "onnxruntime",
                 "tensorflow_savedmodel": "tensorflow", "tensorflow_graphdef": "tensorflow", "ensemble": "ensemble"}


class RepositoryImportError(ValueError):
    """A model folder cannot be imported; `str()` names the folder (and the config field where there is one)."""


@dataclass
class ImportOptions:
    source_prefix: str | None = None  # s3://bucket/prefix or gs://bucket/prefix holding the repository
    owner: str = "unassigned"
    p99_ms: float = 100.0


@dataclass
class Imported:
    name: str
    path: Path  # the model folder
    data: dict  # the spec, as written
    spec: ModelSpec
    original: mc.ModelConfig  # the normalised original
    rendered: mc.ModelConfig  # the normalised rendering of the spec
    differences: list[str] = field(default_factory=list)
    configless: bool = False

    @property
    def equivalent(self) -> bool:
        return not self.differences


def model_folders(repository: Path) -> list[Path]:
    """The model folders of a repository: subfolders holding a config.pbtxt or a numeric version folder."""
    return sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / "config.pbtxt").is_file() or any(v.is_dir() and v.name.isdigit() for v in p.iterdir())))


def read_original(model_dir: Path) -> tuple[mc.ModelConfig, bool]:
    """The model's config as written, or for a config-less model what Triton fills in; and whether it was
    config-less."""
    path = model_dir / "config.pbtxt"
    config = mc.ModelConfig()
    if path.is_file():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as exc:
            raise RepositoryImportError(f"{path}: not a valid Triton model config: {exc}") from None
        if not config.name:
            config.name = model_dir.name  # Triton names a model by its folder when the config does not
        return config, False
    config.name = model_dir.name
    versions = _versions(model_dir)
    content = {p.name for p in (model_dir / str(versions[0])).iterdir()} if versions else set()
    for filename, field_name, value in _CONFIGLESS:
        if filename in content:
            setattr(config, field_name, value)
            return config, True
    raise RepositoryImportError(f"{model_dir}: no config.pbtxt and no model file Triton recognises in its version folder "
                       f"(one of {', '.join(f for f, _, _ in _CONFIGLESS)}); write a config.pbtxt")


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _dtype(value: int) -> str:
    name = mc.DataType.Name(value).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _tensor(t, is_input: bool) -> dict:
    out: dict = {"name": t.name, "dtype": _dtype(t.data_type), "dims": list(t.dims)}
    if t.HasField("reshape"):
        out["reshape"] = list(t.reshape.shape)
    if t.is_shape_tensor:
        out["is_shape_tensor"] = True
    if is_input:
        if t.optional:
            out["optional"] = True
        if t.format:
            out["format"] = mc.ModelInput.Format.Name(t.format).removeprefix("FORMAT_")
        if t.allow_ragged_batch:
            out["allow_ragged_batch"] = True
    elif t.label_filename:
        out["label_filename"] = t.label_filename
    return out


def _queue_policy(p) -> dict:
    return {"timeout_action": mc.ModelQueuePolicy.TimeoutAction.Name(p.timeout_action),
            "default_timeout_us": p.default_timeout_microseconds, "max_queue_size": p.max_queue_size,
            "allow_timeout_override": p.allow_timeout_override}


def _batching(c: mc.ModelConfig) -> dict:
    out: dict = {"dynamic": c.HasField("dynamic_batching")}
    if c.HasField("dynamic_batching"):
        d = c.dynamic_batching
        out["preferred_batch_sizes"] = list(d.preferred_batch_size)
        out["max_queue_delay_us"] = d.max_queue_delay_microseconds
        if d.preserve_ordering:
            out["preserve_ordering"] = True
        if d.priority_levels:
            out["priority_levels"] = d.priority_levels
            out["default_priority_level"] = d.default_priority_level
        if d.HasField("default_queue_policy"):
            out["queue_policy"] = _queue_policy(d.default_queue_policy)
        if d.priority_queue_policy:
            out["priority_queue_policy"] = {int(k): _queue_policy(v) for k, v in sorted(d.priority_queue_policy.items())}
    if c.response_cache.enable:
        out["response_cache"] = True
    return out


def _sequence(s: mc.ModelSequenceBatching) -> dict:
    out: dict = {}
    if s.max_sequence_idle_microseconds:
        out["max_sequence_idle_us"] = s.max_sequence_idle_microseconds
    strategy = s.WhichOneof("strategy_choice")
    if strategy == "direct":
        out |= {"strategy": "direct", "max_queue_delay_us": s.direct.max_queue_delay_microseconds,
                "minimum_slot_utilization": s.direct.minimum_slot_utilization}
    elif strategy == "oldest":
        out |= {"strategy": "oldest", "max_queue_delay_us": s.oldest.max_queue_delay_microseconds,
                "max_candidate_sequences": s.oldest.max_candidate_sequences,
                "preferred_batch_sizes": list(s.oldest.preferred_batch_size),
                "preserve_ordering": s.oldest.preserve_ordering}
    controls = []
    for ci in s.control_input:
        items = []
        for ctl in ci.control:
            item: dict = {"kind": mc.ModelSequenceBatching.Control.Kind.Name(ctl.kind).removeprefix("CONTROL_SEQUENCE_")}
            for name in ("int32_false_true", "fp32_false_true", "bool_false_true"):
                if getattr(ctl, name):
                    item[name] = list(getattr(ctl, name))
            if ctl.data_type:
                item["data_type"] = _dtype(ctl.data_type)
            items.append(item)
        controls.append({"name": ci.name, "controls": items})
    if controls:
        out["control_inputs"] = controls
    states = []
    for st in s.state:
        state: dict = {"input_name": st.input_name, "output_name": st.output_name, "dtype": _dtype(st.data_type),
                       "dims": list(st.dims)}
        inits = []
        for init in st.initial_state:
            item = {"name": init.name, "dtype": _dtype(init.data_type), "dims": list(init.dims)}
            if init.WhichOneof("state_data") == "zero_data":
                item["zero_data"] = True
            else:
                item["data_file"] = init.data_file
            inits.append(item)
        if inits:
            state["initial_state"] = inits
        if st.use_same_buffer_for_input_output:
            state["use_same_buffer_for_input_output"] = True
        if st.use_growable_memory:
            state["use_growable_memory"] = True
        states.append(state)
    if states:
        out["states"] = states
    if s.iterative_sequence:
        out["iterative_sequence"] = True
    return out


def _groups(c: mc.ModelConfig) -> list[dict]:
    out = []
    for g in c.instance_group:
        group: dict = {"name": g.name, "kind": mc.ModelInstanceGroup.Kind.Name(g.kind).removeprefix("KIND_"),
                       "count": g.count}
        if g.gpus:
            group["gpus"] = list(g.gpus)
        if g.profile:
            group["profile"] = list(g.profile)
        if g.HasField("rate_limiter"):
            group["rate_limiter"] = {"resources": [{"name": r.name, "count": r.count, "global": getattr(r, "global")}
                                                   for r in g.rate_limiter.resources],
                                     "priority": g.rate_limiter.priority}
        if g.passive:
            group["passive"] = True
        if g.host_policy:
            group["host_policy"] = g.host_policy
        out.append(group)
    return out


def _optimization(o: mc.ModelOptimizationPolicy) -> dict:
    out: dict = {}
    if o.HasField("graph"):
        out["graph_level"] = o.graph.level
    if o.priority:
        out["priority"] = mc.ModelOptimizationPolicy.ModelPriority.Name(o.priority).removeprefix("PRIORITY_")
    if o.HasField("cuda"):
        out["cuda"] = {"graphs": o.cuda.graphs, "busy_wait_events": o.cuda.busy_wait_events,
                       "output_copy_stream": o.cuda.output_copy_stream}
    if o.HasField("execution_accelerators"):
        acc = o.execution_accelerators
        out["execution_accelerators"] = {
            "gpu": [{"name": a.name, "parameters": dict(sorted(a.parameters.items()))} for a in acc.gpu_execution_accelerator],
            "cpu": [{"name": a.name, "parameters": dict(sorted(a.parameters.items()))} for a in acc.cpu_execution_accelerator],
        }
    for name in ("input_pinned_memory", "output_pinned_memory"):
        if o.HasField(name):
            out[name] = getattr(o, name).enable
    if o.gather_kernel_buffer_threshold:
        out["gather_kernel_buffer_threshold"] = o.gather_kernel_buffer_threshold
    if o.eager_batching:
        out["eager_batching"] = True
    return out


def _warmup(c: mc.ModelConfig) -> list[dict]:
    out = []
    for w in c.model_warmup:
        inputs = {}
        for name, sample in sorted(w.inputs.items()):
            item: dict = {"dtype": _dtype(sample.data_type), "dims": list(sample.dims)}
            kind = sample.WhichOneof("input_data_type")
            item[kind] = sample.input_data_file if kind == "input_data_file" else True
            inputs[name] = item
        entry: dict = {"name": w.name, "batch_size": w.batch_size, "inputs": inputs}
        if w.count:
            entry["count"] = w.count
        out.append(entry)
    return out


def _spec_backend(c: mc.ModelConfig, where: str) -> str:
    from typing import get_args

    from modelfleet.spec import Backend

    backend = _SPEC_BACKEND.get(c.platform) or c.backend
    if backend not in get_args(Backend):
        raise RepositoryImportError(f"{where} backend: {c.backend or c.platform!r} is not a backend modelfleet serves "
                           f"(known: {', '.join(get_args(Backend))})")
    return backend


def _is_gpu(raw: mc.ModelConfig, backend: str) -> bool:
    """Whether the model is meant for GPUs: a GPU-only backend, a GPU instance group, or GPU optimisations
    (a GPU execution accelerator such as TensorRT, CUDA settings)."""
    kinds = mc.ModelInstanceGroup.Kind
    o = raw.optimization
    return (backend in _GPU_ONLY or any(g.kind == kinds.KIND_GPU or g.gpus for g in raw.instance_group)
            or bool(o.execution_accelerators.gpu_execution_accelerator) or o.HasField("cuda"))


def spec_data(raw: mc.ModelConfig, model_dir: Path, options: ImportOptions, where: str) -> tuple[dict, str]:
    """The spec (as YAML data) for the model whose config is `raw`, and its hardware class."""
    backend = _spec_backend(raw, where)
    hardware_class = DEFAULT_GPU_CLASS if _is_gpu(raw, backend) else CPU
    c = normalise(raw, hardware_class)  # instance groups as Triton makes them, so counts and names match
    triton: dict = {}
    if raw.platform == "tensorflow_graphdef":
        triton["platform"] = raw.platform
    if raw.default_model_filename:
        triton["default_model_filename"] = raw.default_model_filename
    policy = raw.version_policy.WhichOneof("policy_choice")
    versions = _versions(model_dir)
    version = max(versions) if versions else 1
    if policy == "specific" and raw.version_policy.specific.versions:
        version = raw.version_policy.specific.versions[0]
    else:
        triton["version_policy"] = "all" if policy == "all" else "latest"
    if backend != "ensemble":
        triton["instance_groups"] = _groups(c)
    if raw.parameters:
        triton["parameters"] = {k: v.string_value for k, v in sorted(raw.parameters.items())}
    if raw.HasField("optimization"):
        triton["optimization"] = _optimization(raw.optimization)
    if raw.model_transaction_policy.decoupled:
        triton["decoupled"] = True
    if raw.HasField("sequence_batching"):
        triton["sequence_batching"] = _sequence(raw.sequence_batching)
    if raw.HasField("ensemble_scheduling"):
        triton["ensemble"] = [{"model": s.model_name, "model_version": s.model_version,
                               "input_map": dict(sorted(s.input_map.items())),
                               "output_map": dict(sorted(s.output_map.items()))}
                              for s in raw.ensemble_scheduling.step]
    requests = _warmup(raw)
    triton["warmup"] = "custom" if requests else "off"
    if requests:
        triton["warmup_requests"] = requests

    source: dict = {"local": str(model_dir)}
    if options.source_prefix:
        scheme = options.source_prefix.split("://", 1)[0]
        cloud = {"s3": "aws", "gs": "gcp"}.get(scheme)
        if cloud is None:
            raise RepositoryImportError(f"--source-prefix: must be s3://bucket/prefix or gs://bucket/prefix, "
                               f"got {options.source_prefix!r}")
        source[cloud] = f"{options.source_prefix.rstrip('/')}/{raw.name}"
    data: dict = {
        "name": raw.name,
        "owner": options.owner,
        "description": f"Imported from {where}",
        "source": source,
        "version": version,
        "backend": backend,
    }
    if raw.input:
        data["inputs"] = [_tensor(t, True) for t in raw.input]
    if raw.output:
        data["outputs"] = [_tensor(t, False) for t in raw.output]
    data["max_batch_size"] = raw.max_batch_size
    data["hardware"] = ({"gpu_class": CPU, "gpus_per_replica": 0} if hardware_class == CPU
                        else {"gpu_class": hardware_class, "gpus_per_replica": 1})
    data["slo"] = {"p99_ms": options.p99_ms}
    data["batching"] = _batching(raw)
    data["triton"] = triton
    return data, hardware_class


def import_model(model_dir: Path, options: ImportOptions) -> Imported:
    raw, configless = read_original(model_dir)
    where = f"{model_dir / 'config.pbtxt'}" if not configless else str(model_dir)
    if raw.name != model_dir.name:
        raise RepositoryImportError(f"{where} name: {raw.name!r} differs from its folder {model_dir.name!r}; Triton serves "
                           "the model under its folder name")
    data, hardware_class = spec_data(raw, model_dir, options, where)
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise RepositoryImportError(f"{where} {path}: {first['msg']}") from None
    try:
        rendered = validate_config(build_config(spec, hardware_class), where, expected_name=spec.name)
    except ModelConfigError as exc:
        raise RepositoryImportError(str(exc)) from None
    original = normalise(raw, hardware_class)
    back = normalise(rendered, hardware_class)
    return Imported(spec.name, model_dir, data, spec, original, back, differences(original, back), configless)


def spec_text(item: Imported, options: ImportOptions) -> str:
    """The spec file: a header saying where it came from and what to review, then the spec."""
    header = [f"# Imported by `modelfleet import` from {item.path}.",
              f"# Review: owner ({options.owner}) and slo.p99_ms ({options.p99_ms:g}) are placeholders from the "
              "command line;",
              "# traffic, scaling and hardware are modelfleet defaults."]
    if item.configless:
        header.append("# The model had no config.pbtxt: its backend fills in the tensors at load time.")
    if item.differences:
        header.append("# NOT equivalent to the original: these config fields could not be expressed:")
        header += [f"#   {d}" for d in item.differences]
    else:
        header.append("# Renders to the original config (equal after Triton's normalisation).")
    body = yaml.safe_dump(item.data, sort_keys=False, default_flow_style=None, width=120)
    return "\n".join(header) + "\n" + body


def import_repository(repository: Path, options: ImportOptions) -> tuple[list[Imported], list[str]]:
    """Every model of `repository`, imported; and the problems of the folders that could not be."""
    items, problems = [], []
    for folder in model_folders(repository):
        try:
            items.append(import_model(folder, options))
        except RepositoryImportError as exc:
            problems.append(str(exc))
    return items, problems
