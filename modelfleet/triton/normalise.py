"""A `ModelConfig` as the server holds it after loading: Triton's normalisation, for comparing two configs.

`modelfleet import` promises that a spec renders back to the same config as the one imported, "the same" meaning
equal after what Triton itself fills in at load time, compared as protobuf messages (not as text). The steps
follow triton-inference-server/core `src/model_config_utils.cc`: `AutoCompleteBackendFields` (the platform and
backend pair, the default model file), `NormalizeModelConfig` (version policy, preferred batch sizes, sequence idle
time, pinned memory) and `NormalizeInstanceGroup` (a group when there is none, group names, AUTO kinds, counts).
Backend-side auto-completion (tensors read from a model file) is not reproduced: it needs the backend.
"""

from __future__ import annotations

from modelfleet.triton.config import (CPU, DEFAULT_FILENAME, PLATFORM_BACKEND, SEQUENCE_IDLE_DEFAULT_US, mc)

_BACKEND_PLATFORM = {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx", "pytorch": "pytorch_libtorch"}
# SetDefaultInstanceCount: these backends get two CPU instances by default, every other one.
_TWO_CPU_INSTANCES = {"tensorflow", "onnxruntime"}


def normalise(config: mc.ModelConfig, hardware_class: str = CPU) -> mc.ModelConfig:
    """A normalised copy of `config` as Triton would hold it on a node of `hardware_class` (`cpu`: no GPUs)."""
    c = mc.ModelConfig()
    c.CopyFrom(config)
    # AutoCompleteBackendFields
    if c.platform in PLATFORM_BACKEND and not c.backend:
        c.backend = PLATFORM_BACKEND[c.platform]
    if c.backend in _BACKEND_PLATFORM and not c.platform:
        c.platform = _BACKEND_PLATFORM[c.backend]
    if c.platform in DEFAULT_FILENAME and not c.default_model_filename:
        c.default_model_filename = DEFAULT_FILENAME[c.platform]
    if c.backend == "python" and not c.default_model_filename:
        c.default_model_filename = "model.py"
    # NormalizeModelConfig
    if not c.HasField("version_policy"):
        c.version_policy.latest.num_versions = 1
    if c.HasField("dynamic_batching") and not c.dynamic_batching.preferred_batch_size and c.max_batch_size > 0:
        c.dynamic_batching.preferred_batch_size.append(c.max_batch_size)
    if c.HasField("sequence_batching"):
        seq = c.sequence_batching
        if seq.max_sequence_idle_microseconds == 0:
            seq.max_sequence_idle_microseconds = SEQUENCE_IDLE_DEFAULT_US
        if seq.HasField("oldest") and not seq.oldest.preferred_batch_size and c.max_batch_size > 0:
            seq.oldest.preferred_batch_size.append(c.max_batch_size)
    if c.HasField("ensemble_scheduling"):
        c.model_transaction_policy.SetInParent()  # the served config of an ensemble always carries one
        return c
    if not c.optimization.HasField("input_pinned_memory"):
        c.optimization.input_pinned_memory.enable = True
    if not c.optimization.HasField("output_pinned_memory"):
        c.optimization.output_pinned_memory.enable = True
    # NormalizeInstanceGroup, with no preferred groups from the backend
    kinds = mc.ModelInstanceGroup.Kind
    if not c.instance_group:
        c.instance_group.add(name=c.name)
    for i, group in enumerate(c.instance_group):
        if not group.name:
            group.name = f"{c.name}_{i}"
        if group.kind == kinds.KIND_AUTO:
            group.kind = kinds.KIND_CPU if hardware_class == CPU else kinds.KIND_GPU
        if group.count < 1:
            backend = c.backend or PLATFORM_BACKEND.get(c.platform, "")
            group.count = 2 if group.kind == kinds.KIND_CPU and backend in _TWO_CPU_INSTANCES else 1
    return c


def differences(left: mc.ModelConfig, right: mc.ModelConfig) -> list[str]:
    """Field-by-field differences between two configs, as `path: left != right` lines (empty when equal)."""
    from google.protobuf import json_format

    a = json_format.MessageToDict(left, preserving_proto_field_name=True)
    b = json_format.MessageToDict(right, preserving_proto_field_name=True)
    out: list[str] = []

    def walk(x, y, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                walk(x.get(key), y.get(key), f"{path}.{key}" if path else key)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif x != y:
            out.append(f"{path}: {_short(x)} != {_short(y)}")

    walk(a, b, "")
    return out


def _short(value) -> str:
    text = "(not set)" if value is None else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
