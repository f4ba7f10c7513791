"""The Triton-specific part of a model spec: what a `config.pbtxt` can say beyond inputs, outputs and batching.

`ModelSpec.triton` holds these; `modelfleet.triton.config` renders them through Triton's protobuf schema and
checks the rules the server applies at load time. Field names follow Triton's `model_config.proto` (shortened
where the proto's nesting adds nothing), so a Triton user recognises them; `modelfleet import` writes them from
an existing repository. Every default renders nothing: a spec that leaves `triton:` out gets the config it got
before these fields existed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DataType = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]
Dims = list[Annotated[int, Field(ge=-1, le=2**31 - 1)]]
ConcreteDims = list[Annotated[int, Field(ge=1, le=2**31 - 1)]]
Count = Annotated[int, Field(ge=1, le=1024)]
Micros = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- instance groups ------------------------------------------------------------------------------------------

class RateLimiterResource(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    count: Annotated[int, Field(ge=1, le=2**32 - 1)] = 1
    # `global` in Triton: shared by every device instead of counted per device.
    shared: bool = Field(False, alias="global")


class RateLimiterSpec(_Strict):
    resources: list[RateLimiterResource] = Field(default_factory=list)
    priority: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0


class InstanceGroupSpec(_Strict):
    """One `instance_group` entry. `kind` left out follows the model's hardware (GPU class or cpu)."""

    name: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    kind: Literal["GPU", "CPU", "MODEL", "AUTO"] | None = None
    count: Count = 1
    gpus: list[Annotated[int, Field(ge=0, le=63)]] = Field(default_factory=list)
    profile: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="TensorRT optimisation profiles this group's instances use.")
    rate_limiter: RateLimiterSpec | None = None
    passive: bool = False
    host_policy: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _gpus_need_gpu_kind(self) -> InstanceGroupSpec:
        if self.gpus and self.kind in ("CPU", "MODEL"):
            raise ValueError(f"gpus: a KIND_{self.kind} group cannot name GPUs; remove gpus or use kind GPU")
        return self


# --- optimization ----------------------------------------------------------------------------------------------

class AcceleratorSpec(_Strict):
    """An execution accelerator, e.g. `{name: tensorrt, parameters: {precision_mode: FP16}}` or `openvino`."""

    name: Annotated[str, Field(min_length=1)]
    parameters: dict[str, str] = Field(default_factory=dict)


class AcceleratorsSpec(_Strict):
    gpu: list[AcceleratorSpec] = Field(default_factory=list)
    cpu: list[AcceleratorSpec] = Field(default_factory=list)


class CudaSpec(_Strict):
    graphs: bool = False
    busy_wait_events: bool = False
    output_copy_stream: bool = False


class OptimizationSpec(_Strict):
    graph_level: int | None = Field(None, description="Backend graph optimisation level (e.g. 1 = TF XLA).")
    priority: Literal["DEFAULT", "MAX", "MIN"] | None = None
    cuda: CudaSpec | None = None
    execution_accelerators: AcceleratorsSpec | None = None
    input_pinned_memory: bool | None = None
    output_pinned_memory: bool | None = None
    gather_kernel_buffer_threshold: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    eager_batching: bool | None = None


# --- sequence batching -----------------------------------------------------------------------------------------

class ControlSpec(_Strict):
    """One control signal; exactly one of the three value pairs, as `[false, true]`."""

    kind: Literal["START", "END", "READY", "CORRID"]
    int32_false_true: list[int] = Field(default_factory=list)
    fp32_false_true: list[float] = Field(default_factory=list)
    bool_false_true: list[bool] = Field(default_factory=list)
    data_type: DataType | None = Field(None, description="CORRID only: the correlation id's type.")

    @model_validator(mode="after")
    def _one_pair(self) -> ControlSpec:
        pairs = [p for p in (self.int32_false_true, self.fp32_false_true, self.bool_false_true) if p]
        if self.kind == "CORRID":
            if pairs or self.data_type is None:
                raise ValueError("a CORRID control gives data_type (e.g. UINT64) and no false/true values")
        elif len(pairs) != 1 or len(pairs[0]) != 2:
            raise ValueError(f"a {self.kind} control gives exactly one of int32_false_true, fp32_false_true or "
                             "bool_false_true, as two values [false, true]")
        return self


class ControlInputSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    controls: Annotated[list[ControlSpec], Field(min_length=1)]


class InitialStateSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    dtype: DataType
    dims: ConcreteDims = Field(default_factory=list)
    zero_data: bool = False
    data_file: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> InitialStateSpec:
        if self.zero_data == (self.data_file is not None):
            raise ValueError("give exactly one of zero_data: true or data_file")
        return self


class StateSpec(_Strict):
    """Implicit state: Triton feeds `output_name` of one request back as `input_name` of the next in a sequence."""

    input_name: Annotated[str, Field(min_length=1)]
    output_name: Annotated[str, Field(min_length=1)]
    dtype: DataType
    dims: Dims
    initial_state: list[InitialStateSpec] = Field(default_factory=list)
    use_same_buffer_for_input_output: bool = False
    use_growable_memory: bool = False


class SequenceBatchingSpec(_Strict):
    """Stateful models: every request of a sequence (one correlation id) goes to the same instance."""

    strategy: Literal["direct", "oldest"] | None = Field(
        None, description="Left out: Triton's default (direct), rendered with no strategy block.")
    max_sequence_idle_us: Micros = Field(0, description="0: Triton's default (1 s).")
    max_queue_delay_us: Micros = 0
    minimum_slot_utilization: Annotated[float, Field(ge=0, le=1)] = 0.0  # direct only
    max_candidate_sequences: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0  # oldest only
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)  # oldest only
    preserve_ordering: bool = False  # oldest only
    control_inputs: list[ControlInputSpec] = Field(default_factory=list)
    states: list[StateSpec] = Field(default_factory=list)
    iterative_sequence: bool = False

    @model_validator(mode="after")
    def _strategy_fields(self) -> SequenceBatchingSpec:
        if self.strategy != "oldest" and (self.max_candidate_sequences or self.preferred_batch_sizes
                                          or self.preserve_ordering):
            raise ValueError("max_candidate_sequences, preferred_batch_sizes and preserve_ordering need "
                             "strategy: oldest")
        if self.strategy != "direct" and self.minimum_slot_utilization:
            raise ValueError("minimum_slot_utilization needs strategy: direct")
        if self.strategy is None and self.max_queue_delay_us:
            raise ValueError("max_queue_delay_us needs a strategy (direct or oldest)")
        return self


# --- ensembles -------------------------------------------------------------------------------------------------

class EnsembleStepSpec(_Strict):
    """One step: run `model` (another spec in models/), mapping its tensors to the ensemble's."""

    model: Annotated[str, Field(min_length=1)]
    model_version: Annotated[int, Field(ge=-1)] = -1
    input_map: Annotated[dict[str, str], Field(min_length=1)] = Field(
        description="The member model's input name -> the ensemble tensor it reads.")
    output_map: Annotated[dict[str, str], Field(min_length=1)] = Field(
        description="The member model's output name -> the ensemble tensor it writes.")


# --- warmup ----------------------------------------------------------------------------------------------------

class WarmupInputSpec(_Strict):
    dtype: DataType
    dims: ConcreteDims = Field(description="Concrete sizes: a -1 dimension of the input needs a real size here.")
    zero_data: bool = False
    random_data: bool = False
    input_data_file: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> WarmupInputSpec:
        if self.zero_data + self.random_data + (self.input_data_file is not None) != 1:
            raise ValueError("give exactly one of zero_data: true, random_data: true or input_data_file")
        return self


class WarmupSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    batch_size: Annotated[int, Field(ge=1)] = 1
    inputs: dict[str, WarmupInputSpec] = Field(default_factory=dict)
    count: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0


# --- the section -----------------------------------------------------------------------------------------------

class TritonSpec(_Strict):
    """Triton settings beyond the common ones; each is rendered into config.pbtxt as Triton names it."""

    platform: Literal["tensorflow_savedmodel", "tensorflow_graphdef"] | None = Field(
        None, description="tensorflow only: which TensorFlow format (default savedmodel).")
    default_model_filename: Annotated[str, Field(min_length=1)] | None = None
    version_policy: Literal["specific", "latest", "all"] = Field(
        "specific", description="specific: exactly the spec's version; latest: the newest version directory; "
                                "all: every version directory.")
    instance_groups: list[InstanceGroupSpec] = Field(
        default_factory=list, description="Empty: one group of the hardware's kind, its count from the tuning "
                                          "record (or 1).")
    parameters: dict[Annotated[str, Field(min_length=1)], str] = Field(
        default_factory=dict, description="String parameters the backend or model.py reads.")
    optimization: OptimizationSpec | None = None
    decoupled: bool = Field(False, description="model_transaction_policy.decoupled: zero or many responses "
                                               "per request.")
    sequence_batching: SequenceBatchingSpec | None = None
    ensemble: list[EnsembleStepSpec] = Field(
        default_factory=list, description="backend: ensemble only: the steps, each naming another spec.")
    warmup: Literal["auto", "off", "custom"] = Field(
        "auto", description="auto: one zero-filled request at batch 1 (-1 dims as 1), except where Triton "
                            "cannot warm a model that way (decoupled, sequence batching, ensembles); off: none; "
                            "custom: the requests in warmup_requests.")
    warmup_requests: list[WarmupSpec] = Field(default_factory=list, description="With warmup: custom.")

    @model_validator(mode="after")
    def _warmup_requests_with_custom(self) -> TritonSpec:
        if self.warmup == "custom" and not self.warmup_requests:
            raise ValueError("warmup_requests: warmup: custom needs at least one request (name, batch_size, inputs)")
        if self.warmup != "custom" and self.warmup_requests:
            raise ValueError(f"warmup: is {self.warmup}; set it to custom to send warmup_requests")
        return self
