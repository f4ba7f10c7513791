"""The typed fleet spec: one `ModelSpec` per file in `models/`, one `StackSpec` per `stacks/Pulumi.<stack>.yaml`.

Everything is strict (unknown keys are errors) and immutable. Defaults are the safe production choice, so a
newcomer's three-line spec gets private, monitored, gated serving. Checks that need more than one file (a stack
naming an unknown model, a GPU class a region does not offer) live in `modelfleet.loader`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from modelfleet import versions
from modelfleet.catalogue import CLOUDS, Cloud, hardware, regions
from modelfleet.spec_triton import DataType, TritonSpec


class Strict(BaseModel):
    # strict: "64" is not a number and `true` is not an integer (YAML ints still fill float fields);
    # allow_inf_nan off: `.inf` and `.nan` parse as YAML floats and would crash every later step.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# Upper bounds of the fields values end up in: Triton's model_config.proto (tritonclient 2.51) and the
# Kubernetes API's int32 fields (replicas, maxSurge, KEDA's maxReplicaCount).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1  # ModelInput.dims, ModelVersionPolicy.Specific.versions
UINT32_MAX = 2**32 - 1  # ModelQueuePolicy.max_queue_size
UINT64_MAX = 2**64 - 1  # max_queue_delay_microseconds, default_timeout_microseconds, priority_levels
# A request stream no single model serves; above it the replica arithmetic only measures typos (1e20).
MAX_RPS = 10_000_000
MAX_P99_MS = 600_000  # ten minutes: beyond it a request is a batch job, not an online SLO
# CIDRs are written as strings in YAML: they parse from text even in strict mode.
CIDR = Annotated[ipaddress.IPv4Network, Field(strict=False)]


DNS_LABEL = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
# Triton names a model by its repository folder: letters, digits, '_', '-' and '.', no path separators.
MODEL_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
# Tensor names as exporters write them (`input.1`, `308`, `x:0`, `InceptionV3/Predictions/Softmax`): no spaces.
TENSOR_NAME = r"^\S+$"
KUBE_NAME_MAX = 40  # room for the prefixes and suffixes of the objects named after a model
# GCP labels are the stricter of the two clouds' rules; tags that pass here are valid on both.
LABEL = r"^[a-z][-_a-z0-9]{0,62}$"
LABEL_VALUE = r"^[-_a-z0-9]{1,63}$"  # not empty: the required-tags policy counts an empty value as missing
DNS_NAME = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
GCP_PROJECT_ID = r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"
KUBERNETES_MINOR = r"^1\.\d{2}$"
# Tags modelfleet sets on every resource itself (plan.build_plan); a stack's required_tags must not override them.
OWN_TAGS = ("managed-by", "stack")

# Bytes per element on the wire; BYTES elements carry at least their 4-byte length prefix.
ELEMENT_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
                 "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2, "BYTES": 4}
Backend = Literal["python", "onnxruntime", "tensorrt", "pytorch", "tensorflow", "openvino", "identity", "vllm",
                  "tensorrtllm", "fil", "ensemble"]
# Backends that fill in a model's inputs and outputs themselves when the config leaves them out.
AUTO_COMPLETING = {"onnxruntime", "tensorrt", "tensorflow", "openvino", "python", "vllm"}
Environment = Literal["dev", "staging", "prod", "local"]


class TensorSpec(Strict):
    name: Annotated[str, Field(pattern=TENSOR_NAME, max_length=256)]
    dtype: DataType
    dims: Annotated[list[Annotated[int, Field(le=INT64_MAX)]], Field(min_length=1)] = Field(
        description="Shape of one item, without the batch dimension; -1 marks a variable-size dimension."
    )
    optional: bool = Field(False, description="Inputs only: requests may leave this tensor out.")
    reshape: list[Annotated[int, Field(ge=-1)]] | None = Field(
        None, description="The shape the backend sees; [] reshapes a [1] tensor to a scalar.")
    format: Literal["NHWC", "NCHW"] | None = Field(None, description="Image inputs only.")
    label_filename: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="Outputs only: a labels file in the model folder (for classification results).")
    is_shape_tensor: bool = False
    allow_ragged_batch: bool = Field(False, description="Inputs only: batch requests of different shapes.")

    @field_validator("dims")
    @classmethod
    def _dims_positive_or_variable(cls, dims: list[int]) -> list[int]:
        bad = [d for d in dims if d == 0 or d < -1]
        if bad:
            raise ValueError(f"each dimension must be a positive size or -1 (variable), got {bad[0]}")
        return dims

    @model_validator(mode="after")
    def _one_item_fits_a_message(self) -> TensorSpec:
        # Triton's warmup allocates one item of every input at load (zero_data), and a gRPC/protobuf message
        # carries at most 2 GiB: an item larger than that can neither load nor travel.
        size = ELEMENT_BYTES[self.dtype]
        for d in self.dims:
            size *= max(d, 1)
        if size > INT32_MAX:
            raise ValueError(f"dims: one item of {self.name} ({' x '.join(str(d) for d in self.dims)} {self.dtype}) "
                             f"is {size:,} bytes; at most {INT32_MAX:,} (2 GiB, the largest gRPC message) fit")
        return self


class HardwareSpec(Strict):
    gpu_class: str = Field("nvidia-l4", description="A class from modelfleet/data/hardware.yaml, or `cpu`.")
    gpus_per_replica: Annotated[int, Field(ge=0, le=8)] = 1
    capacity: Literal["on-demand", "spot"] = "on-demand"

    @field_validator("gpu_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        known = sorted(hardware().classes)
        if value not in known:
            raise ValueError(f"unknown hardware class {value!r}; known: {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _gpus_match_class(self) -> HardwareSpec:
        if self.gpu_class == "cpu" and self.gpus_per_replica != 0:
            raise ValueError("gpus_per_replica: must be 0 when gpu_class is cpu")
        if self.gpu_class != "cpu" and self.gpus_per_replica < 1:
            raise ValueError(f"gpus_per_replica: must be at least 1 on {self.gpu_class}")
        return self

    @property
    def is_gpu(self) -> bool:
        return self.gpu_class != "cpu"


class SloSpec(Strict):
    p99_ms: Annotated[float, Field(gt=0, le=MAX_P99_MS)]
    availability: Annotated[float, Field(gt=0, lt=1)] = 0.999


class TrafficSpec(Strict):
    rps: Annotated[float, Field(ge=0, le=MAX_RPS)] = Field(0, description="Expected requests per second in each region.")
    by_region: dict[str, Annotated[float, Field(ge=0, le=MAX_RPS)]] = Field(
        default_factory=dict, description="Per-region overrides, keyed `aws:us-east-1`."
    )

    @field_validator("by_region")
    @classmethod
    def _known_regions(cls, by_region: dict[str, float]) -> dict[str, float]:
        for key in by_region:
            cloud, _, name = key.partition(":")
            if cloud not in CLOUDS or name not in regions()[cloud]:
                raise ValueError(f"{key!r} is not a region; write cloud:region as in the stack's "
                                 "modelfleet:regions, e.g. aws:us-east-1")
        return by_region

    def rps_in(self, region_key: str) -> float:
        return self.by_region.get(region_key, self.rps)


class ScalingSpec(Strict):
    min_replicas: Annotated[int, Field(ge=0, le=INT32_MAX)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=INT32_MAX)] = 4
    scale_to_zero: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas: {self.min_replicas} must be <= max_replicas ({self.max_replicas})")
        if self.min_replicas == 0 and not self.scale_to_zero:
            raise ValueError("min_replicas: 0 needs scale_to_zero: true; set it, or min_replicas >= 1")
        return self


class QueuePolicySpec(Strict):
    timeout_action: Literal["REJECT", "DELAY"] = "REJECT"
    default_timeout_us: Annotated[int, Field(ge=0, le=UINT64_MAX)] = 0
    max_queue_size: Annotated[int, Field(ge=0, le=UINT32_MAX)] = 0
    allow_timeout_override: bool = Field(False, description="Requests may set a shorter timeout of their own.")


class BatchingSpec(Strict):
    dynamic: bool = True
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=INT32_MAX)]] = Field(default_factory=list)
    max_queue_delay_us: Annotated[int, Field(ge=0, le=UINT64_MAX)] = 100
    priority_levels: Annotated[int, Field(ge=0, le=UINT64_MAX)] = 0
    default_priority_level: Annotated[int, Field(ge=1)] | None = Field(
        None, description="The priority of requests that name none; default: the lowest (priority_levels).")
    queue_policy: QueuePolicySpec | None = None
    priority_queue_policy: dict[Annotated[int, Field(ge=1)], QueuePolicySpec] = Field(
        default_factory=dict, description="Per priority level, overriding queue_policy.")
    preserve_ordering: bool = False
    response_cache: bool = False

    @model_validator(mode="after")
    def _priorities(self) -> BatchingSpec:
        levels = self.priority_levels
        if self.default_priority_level is not None and not 1 <= self.default_priority_level <= levels:
            raise ValueError(f"default_priority_level: must be between 1 and priority_levels ({levels}), "
                             f"got {self.default_priority_level}")
        bad = sorted(k for k in self.priority_queue_policy if k > levels)
        if bad:
            raise ValueError(f"priority_queue_policy: priority {bad[0]} is outside 1..priority_levels ({levels})")
        return self


class GatewaySpec(Strict):
    auth: Literal["api-key", "jwt"] = "api-key"
    rate_limit_rps: Annotated[float, Field(gt=0, le=MAX_RPS)] = 50
    daily_quota: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None
    max_request_bytes: Annotated[int, Field(gt=0, le=INT32_MAX)] = 1_048_576
    pii_filter: bool = True
    audit_log: bool = True


class MonitoringSpec(Strict):
    dashboards: bool = True
    drift_detection: bool = False
    alert_routes: list[str] = Field(default_factory=list, description="Alertmanager receivers for this model's alerts.")


class RoutingSpec(Strict):
    policy: Literal["latency", "failover"] = "latency"
    health_check_path: str = "/v2/health/ready"


class RolloutSpec(Strict):
    strategy: Literal["rolling", "canary"] = "rolling"
    max_unavailable: Annotated[int, Field(ge=0, le=INT32_MAX)] = 0
    max_surge: Annotated[int, Field(ge=1, le=INT32_MAX)] = 1
    canary_percent: Annotated[int, Field(ge=1, le=50)] = 10


class ConcurrencyRange(Strict):
    min: Annotated[int, Field(ge=1)] = 1
    max: Annotated[int, Field(ge=1, le=4096)] = 64

    @model_validator(mode="after")
    def _ordered(self) -> ConcurrencyRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class TuningSpec(Strict):
    """How `modelfleet tune` searches this model's Triton settings with Model Analyzer."""

    objective: Literal["throughput", "latency"] = Field(
        "throughput", description="throughput: the most infer/s within the p99 SLO; latency: the lowest p99 "
                                  "among variants within 10% of that throughput.")
    max_batch_sizes: list[Annotated[int, Field(ge=1, le=INT32_MAX)]] = Field(
        default_factory=list, description="Candidates; empty means the model's max_batch_size and a quarter of it.")
    instance_counts: list[Annotated[int, Field(ge=1, le=16)]] = Field(default_factory=lambda: [1, 2])
    concurrency: ConcurrencyRange = ConcurrencyRange()
    queue_delays_us: list[Annotated[int, Field(ge=0, le=UINT64_MAX)]] = Field(default_factory=lambda: [0, 100, 1000])
    preferred_batch_sizes: list[list[Annotated[int, Field(ge=1, le=INT32_MAX)]]] = Field(
        default_factory=list, description="Candidate preferred_batch_size lists to sweep; empty: not swept.")
    accept_unmet_slo: bool = Field(
        False, description="Size replicas from a record whose best variant missed the p99 SLO (normally refused).")

    def batch_sizes_for(self, max_batch_size: int) -> list[int]:
        """The max_batch_size candidates to search for a model whose spec allows `max_batch_size`."""
        if max_batch_size == 0:
            return [0]
        return sorted(set(self.max_batch_sizes or [max(1, max_batch_size // 4), max_batch_size]))


BUCKET_URI = r"^{scheme}://[a-z0-9][-a-z0-9.]{{1,61}}[a-z0-9](/\S*)?$"


class SourceSpec(Strict):
    """Where Triton finds the model repository on each cloud; one string is shorthand for one cloud."""

    aws: Annotated[str, Field(pattern=BUCKET_URI.format(scheme="s3"))] | None = None
    gcp: Annotated[str, Field(pattern=BUCKET_URI.format(scheme="gs"))] | None = None
    local: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            key = {"s3": "aws", "gs": "gcp"}.get(value.split("://", 1)[0]) if "://" in value else "local"
            if key is None:
                raise ValueError(f"must be s3://bucket/prefix, gs://bucket/prefix or a local path, got {value!r}")
            return {key: value}
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> SourceSpec:
        if not (self.aws or self.gcp or self.local):
            raise ValueError("name at least one of aws (s3://...), gcp (gs://...) or local (a path)")
        return self

    def on(self, cloud: str) -> str | None:
        return getattr(self, cloud)


class ModelSpec(Strict):
    """One model, described once. The file is `models/<name>.yaml`."""

    name: Annotated[str, Field(pattern=MODEL_NAME, max_length=128)] = Field(
        description="Triton's model name (the repository folder); Kubernetes objects use `kube_name`.")
    # At most an e-mail address's 254 characters (RFC 5321): it becomes a Kubernetes annotation, whose total
    # size per object is capped (256 KiB), and is read by people on a page.
    owner: Annotated[str, Field(min_length=1, max_length=254)] = Field(
        description="Team or e-mail that answers this model's alerts.")
    description: str = ""
    source: SourceSpec
    version: Annotated[int, Field(ge=1, le=INT64_MAX)] = 1
    backend: Backend
    inputs: list[TensorSpec] = Field(default_factory=list, description="Optional only where the backend fills "
                                                                         "them in (see AUTO_COMPLETING).")
    outputs: list[TensorSpec] = Field(default_factory=list)
    max_batch_size: Annotated[int, Field(ge=0, le=4096)] = 0
    hardware: HardwareSpec = HardwareSpec()
    slo: SloSpec
    traffic: TrafficSpec = TrafficSpec()
    scaling: ScalingSpec = ScalingSpec()
    batching: BatchingSpec = BatchingSpec()
    gateway: GatewaySpec = GatewaySpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    routing: RoutingSpec = RoutingSpec()
    rollout: RolloutSpec = RolloutSpec()
    tuning: TuningSpec = TuningSpec()
    triton: TritonSpec = TritonSpec()

    @property
    def kube_name(self) -> str:
        """The DNS-1123 label Kubernetes objects and cloud resources use for this model: the name itself when it
        already is one, else a slug plus a hash of the Triton name (stable, and distinct for distinct names)."""
        return kube_name(self.name)

    @model_validator(mode="after")
    def _triton_fits(self) -> ModelSpec:
        from modelfleet.spec_rules import check_model  # the rules between sections live in their own module

        check_model(self)
        return self

    @model_validator(mode="after")
    def _batching_fits(self) -> ModelSpec:
        too_big = [s for s in self.batching.preferred_batch_sizes if s > self.max_batch_size]
        if too_big:
            raise ValueError(
                f"batching.preferred_batch_sizes: {too_big} exceed max_batch_size {self.max_batch_size}"
            )
        for cloud in ("aws", "gcp"):
            uri = self.source.on(cloud)
            if uri and (uri.rstrip("/").rsplit("/", 1)[-1] != self.name or uri.rstrip("/").count("/") < 3):
                raise ValueError(f"source.{cloud}: must be a bucket folder named after the model, "
                                 f"e.g. .../{self.name} (Triton finds a model by its folder name), got {uri!r}")
        names = [t.name for t in self.inputs + self.outputs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"outputs: tensor names must be unique across inputs and outputs; repeated: {', '.join(dup)}")
        too_big = [s for s in self.tuning.max_batch_sizes if s > self.max_batch_size]
        if too_big:
            raise ValueError(f"tuning.max_batch_sizes: {too_big} exceed max_batch_size {self.max_batch_size}")
        smallest = min(self.tuning.batch_sizes_for(self.max_batch_size))
        too_big = [s for sizes in self.tuning.preferred_batch_sizes for s in sizes if s > smallest]
        if too_big:
            raise ValueError(f"tuning.preferred_batch_sizes: {too_big} exceed the smallest searched max_batch_size "
                             f"{smallest}: every variant must be legal")
        return self



RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def kube_name(name: str) -> str:
    if re.fullmatch(DNS_LABEL, name) and len(name) <= KUBE_NAME_MAX:
        return name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    slug = re.sub(r"^[^a-z]+", "", slug) or "model"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{slug[:KUBE_NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


class RegionEntry(Strict):
    """A region the stack runs in: `aws:us-east-1`, or a mapping that also overrides its VPC CIDR."""

    region: str
    cidr: CIDR | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        return {"region": value} if isinstance(value, str) else value

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        cloud, sep, name = value.partition(":")
        if not sep or cloud not in CLOUDS:
            raise ValueError(f"must be written cloud:region with cloud aws or gcp (e.g. aws:us-east-1), got {value!r}")
        known = regions()[cloud]
        if name not in known:
            raise ValueError(f"unknown {cloud} region {name!r}; known: {', '.join(sorted(known))}")
        return value

    @field_validator("cidr")
    @classmethod
    def _private_and_big_enough(cls, net: ipaddress.IPv4Network | None,
                                info: ValidationInfo) -> ipaddress.IPv4Network | None:
        # RFC 1918 only: `is_private` also admits loopback, link-local and 0.0.0.0/8, none of which a VPC can use.
        if net is not None and (not any(net.subnet_of(r) for r in RFC1918) or net.prefixlen > 16):
            raise ValueError(f"must be a /16 or larger inside the private ranges of RFC 1918 (10.0.0.0/8, "
                             f"172.16.0.0/12, 192.168.0.0/16), e.g. 10.20.0.0/16, got {net}")
        # An AWS VPC's primary range is /16 at most (AWS rejects a larger one); the plan carves subnets from a /16.
        if net is not None and str(info.data.get("region", "")).startswith("aws:") and net.prefixlen != 16:
            raise ValueError(f"must be exactly a /16 on AWS (the largest VPC AWS accepts), got {net}")
        return net

    @property
    def cloud(self) -> Cloud:
        return self.region.split(":", 1)[0]  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return self.region.split(":", 1)[1]


class EndpointAccess(Strict):
    public_access_cidrs: list[CIDR] = Field(
        default_factory=list, description="CIDRs allowed to reach the cluster API; empty means private only."
    )

    @field_validator("public_access_cidrs")
    @classmethod
    def _never_the_whole_internet(cls, cidrs: list[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
        wide = [str(c) for c in cidrs if c.prefixlen < 8]
        if wide:
            raise ValueError(f"must name your deployers' egress ranges, not the internet: {', '.join(wide)} "
                             "is too wide (use /8 or narrower)")
        return cidrs


class StackSpec(Strict):
    """An environment: the `modelfleet:` keys of `stacks/Pulumi.<stack>.yaml`."""

    environment: Environment
    regions: list[RegionEntry] = Field(default_factory=list)
    models: Annotated[list[str], Field(min_length=1)]
    budget_monthly_usd: Annotated[float, Field(gt=0)]
    dns_domain: Annotated[str, Field(pattern=DNS_NAME, max_length=253)]
    required_tags: dict[Annotated[str, Field(pattern=LABEL)], Annotated[str, Field(pattern=LABEL_VALUE)]] = Field(
        default_factory=dict
    )
    nat_gateways: Literal["per-zone", "single"] | None = Field(
        None, description="AWS NAT layout; defaults to per-zone in prod and single elsewhere."
    )
    cluster_endpoint: EndpointAccess = EndpointAccess()
    gcp_project: Annotated[str, Field(pattern=GCP_PROJECT_ID)] | None = Field(
        None, description="The Google Cloud project of every GCP region; required when the stack has one."
    )
    kubernetes_version: Annotated[str, Field(pattern=KUBERNETES_MINOR)] = "1.33"
    capacity_headroom: Annotated[float, Field(ge=1.0, le=3.0)] = 1.3

    @field_validator("kubernetes_version")
    @classmethod
    def _keda_runs_on_it(cls, value: str) -> str:
        low, high = versions.KEDA_KUBERNETES
        minor = tuple(int(p) for p in value.split("."))
        if not tuple(int(p) for p in low.split(".")) <= minor <= tuple(int(p) for p in high.split(".")):
            raise ValueError(f"Kubernetes {value} is outside what KEDA {versions.KEDA.version} (which scales every "
                             f"model) supports: {low} to {high}; pick one of those, or move KEDA in "
                             "modelfleet/versions.py first")
        return value

    @field_validator("required_tags")
    @classmethod
    def _not_modelfleets_own(cls, tags: dict[str, str]) -> dict[str, str]:
        own = [k for k in OWN_TAGS if k in tags]
        if own:
            raise ValueError(f"modelfleet sets {' and '.join(own)} itself on every resource (managed-by: modelfleet, "
                             f"stack: the stack's name); remove {'it' if len(own) == 1 else 'them'} from required_tags")
        return tags

    @model_validator(mode="after")
    def _regions_fit_environment(self) -> StackSpec:
        tagged = self.required_tags.get("environment")
        if tagged is not None and tagged != self.environment:
            raise ValueError(f"required_tags.environment: {tagged!r} contradicts modelfleet:environment "
                             f"{self.environment!r}; make them equal or drop the tag")
        if self.environment == "local" and self.regions:
            raise ValueError("regions: the local environment runs on this machine; remove its regions")
        if self.environment != "local" and not self.regions:
            raise ValueError(f"regions: environment {self.environment} needs at least one region, e.g. aws:us-east-1")
        if any(r.cloud == "gcp" for r in self.regions) and not self.gcp_project:
            raise ValueError("gcp_project: required, the stack has GCP regions; set it to the Google Cloud project id")
        keys = [r.region for r in self.regions]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"regions: listed twice: {', '.join(dup)}")
        return self

    @property
    def nat_layout(self) -> Literal["per-zone", "single"]:
        return self.nat_gateways or ("per-zone" if self.environment == "prod" else "single")
