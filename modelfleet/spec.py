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


PiiDetector = Literal["email", "phone", "card", "iban", "national-id"]
PII_DETECTORS: tuple[str, ...] = ("email", "phone", "card", "iban", "national-id")
# Deny patterns run on every BYTES element of every request: bounded so a pattern stays cheap to match.
MAX_DENY_PATTERN_CHARS = 200


class RateLimitSpec(Strict):
    """Per tenant and per model: every tenant gets its own buckets of these sizes."""

    # Envoy's token buckets (local and global) count in uint32: no bucket, rate or quota above UINT32_MAX.
    requests_per_second: Annotated[int, Field(ge=1, le=MAX_RPS)] = Field(
        50, description="Sustained requests per second per tenant (whole numbers: Envoy's token buckets count "
                        "whole tokens).")
    burst: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = Field(
        None, description="Bucket size; default: one second's worth (requests_per_second).")
    requests_per_day: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = Field(
        None, description="Daily quota per tenant; none: no quota.")

    @model_validator(mode="after")
    def _burst_covers_a_second(self) -> RateLimitSpec:
        if self.burst is not None and self.burst < self.requests_per_second:
            raise ValueError(f"burst: {self.burst} must be >= requests_per_second ({self.requests_per_second}); "
                             "a smaller bucket could never serve the declared rate")
        return self


class InspectionSpec(Strict):
    """Checks on each request body, before Triton sees it (the gateway's ext_proc service)."""

    tensors: bool = Field(True, description="Input names, dtypes and shapes must match the model's `inputs`.")
    max_element_bytes: Annotated[int, Field(ge=1, le=INT32_MAX)] = Field(
        4096, description="Longest BYTES element (one string) a request may carry, in bytes.")
    max_elements: Annotated[int, Field(ge=1, le=INT32_MAX)] = Field(
        65536, description="Most elements in one input tensor (batch included).")
    deny_patterns: list[Annotated[str, Field(min_length=1, max_length=MAX_DENY_PATTERN_CHARS)]] = Field(
        default_factory=list, description="Python regular expressions; a BYTES input element that matches one is "
                                          "refused with 400 (case-insensitive).")

    @field_validator("deny_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
        return patterns


class PiiSpec(Strict):
    """PII in the model's BYTES outputs: masked (replaced by [REDACTED:<kind>]) or the response refused."""

    mode: Literal["off", "mask", "block"] = "mask"
    detectors: list[PiiDetector] = Field(default_factory=lambda: list(PII_DETECTORS))

    @field_validator("detectors")
    @classmethod
    def _unique(cls, detectors: list[str]) -> list[str]:
        if len(set(detectors)) != len(detectors):
            raise ValueError("list each detector once")
        return detectors


class AuditSpec(Strict):
    """Every request gets one audit line (not switchable); payloads only on request."""

    payloads: bool = Field(False, description="Also log request bodies (truncated); off by default: payloads may "
                                              "hold personal data.")


AuthMethod = Literal["api-key", "jwt"]
SCOPE = r"^[a-z][-a-z0-9:.]{0,62}$"


class GatewaySpec(Strict):
    """How the gateway admits, limits, inspects and audits requests to this model."""

    auth: Annotated[list[AuthMethod], Field(min_length=1)] = Field(
        default_factory=lambda: ["api-key"], description="Accepted credentials: api-key, jwt (issuer and audiences "
                                                         "from the stack's gateway.jwt), or both.")
    scope: Annotated[str, Field(pattern=SCOPE)] | None = Field(
        None, description="Scope a key or token needs for this model; default `infer:<model>`.")
    rate_limit: RateLimitSpec = RateLimitSpec()
    max_request_bytes: Annotated[int, Field(gt=0, le=64 * 1_048_576)] = 1_048_576
    inspection: InspectionSpec = InspectionSpec()
    pii: PiiSpec = PiiSpec()
    fail_mode: Literal["closed", "open"] = Field(
        "closed", description="When the inspection service is down, for the requests it must judge (locally, plain "
                              "HTTP requests Envoy vouches for itself never reach it: modelfleet.gateway."
                              "native_inspect): closed refuses (503), open serves them uninspected.")
    audit: AuditSpec = AuditSpec()

    @field_validator("auth", mode="before")
    @classmethod
    def _one_method_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("auth")
    @classmethod
    def _unique_methods(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("list each method once")
        return value


class MonitoringSpec(Strict):
    dashboards: bool = True
    drift_detection: bool = False
    alert_routes: list[Annotated[str, Field(pattern=DNS_LABEL)]] = Field(
        default_factory=list, description="Extra Alertmanager receivers for this model's alerts (besides its owner); "
                                          "each one's webhook URL is read from the secret of the same name.")
    drift_sample_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        0.05, description="Share of requests whose inputs the gateway samples for drift (with drift_detection).")
    drift_window: Annotated[int, Field(ge=100, le=100_000)] = Field(
        2000, description="Sampled inputs (each row of a batch counts) per sliding window the drift statistics "
                          "are computed over.")
    drift_psi_threshold: Annotated[float, Field(gt=0)] = Field(
        0.2, description="Population stability index above which a feature has drifted (0.1 moderate, 0.2 major).")
    drift_ks_threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.2, description="Kolmogorov-Smirnov statistic above which a numeric feature has drifted.")
    trace_sample_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        0.01, description="Share of requests Triton and the gateway trace (OpenTelemetry).")


# Route53 geolocation continent codes (lower-case here): clients there are answered only from the listed regions.
CONTINENTS = ("af", "an", "as", "eu", "na", "oc", "sa")
Continent = Literal["af", "an", "as", "eu", "na", "oc", "sa"]
REGION_KEY = r"^(aws|gcp):[a-z0-9-]+$"
STACK_REF = r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$"  # Pulumi's fully qualified org/project/stack
HEALTH_PATH = r"^/v2/health/(ready|live)$"


class CanarySpec(Strict):
    """A regional canary: this share of the model's DNS answers goes to one region (weighted records)."""

    region: Annotated[str, Field(pattern=REGION_KEY)] = Field(description="A region of the stack, e.g. gcp:europe-west4.")
    percent: Annotated[int, Field(ge=1, le=50)] = 5


class RoutingSpec(Strict):
    """How clients find this model: `<model>.<dns_domain>`, routed by Route53 over the stack's regions."""

    policy: Literal["latency", "failover"] = Field(
        "latency", description="latency: every region, the nearest healthy one answers; failover: the first two "
                               "regions of the stack as primary and secondary.")
    health_check_path: Annotated[str, Field(pattern=HEALTH_PATH)] = Field(
        "/v2/health/ready", description="Probed through the gateway by Route53 (no credentials: only the open "
                                        "health paths, which Route53's checkers can call).")
    residency: dict[Continent, Annotated[list[Annotated[str, Field(pattern=REGION_KEY)]], Field(min_length=1)]] = Field(
        default_factory=dict, description="Data residency: clients on a continent (Route53 code: eu, na, ...) are "
                                          "answered only by these regions, never failing over outside them.")
    canary: CanarySpec | None = None

    @model_validator(mode="after")
    def _residency_and_canary(self) -> RoutingSpec:
        if self.residency and self.canary:
            raise ValueError("canary: a canary cannot be combined with residency (it would send resident clients "
                             "abroad); remove one")
        if self.residency and self.policy == "failover":
            raise ValueError("residency: needs policy latency (failover names two regions for every client)")
        seen = [r for regions in self.residency.values() for r in regions]
        dup = sorted({r for r in seen if seen.count(r) > 1})
        if dup:
            raise ValueError(f"residency: {', '.join(dup)} listed under two continents; a region holds one "
                             "continent's data")
        return self


class RolloutSpec(Strict):
    """How a new model version reaches clients. rolling: the Deployment's rolling update of `version`. canary: a
    second Deployment serves `canary_version` (another version directory of the same model repository) beside the
    stable `version`, and the gateway's routes split each model's traffic between them by weight (modelfleet.canary)."""

    strategy: Literal["rolling", "canary"] = "rolling"
    max_unavailable: Annotated[int, Field(ge=0, le=INT32_MAX)] = 0
    max_surge: Annotated[int, Field(ge=1, le=INT32_MAX)] = 1
    canary_percent: Annotated[int, Field(ge=1, le=50)] = Field(
        10, description="strategy canary: the canary's share of requests, in percent (the stable keeps the rest).")
    canary_version: Annotated[int, Field(ge=1, le=INT64_MAX)] | None = Field(
        None, description="strategy canary: the Triton version the canary serves: a directory source.local/<n>/ "
                          "released beside the stable `version`.")

    @model_validator(mode="after")
    def _canary_named(self) -> RolloutSpec:
        if self.strategy == "canary" and self.canary_version is None:
            raise ValueError("canary_version: strategy canary needs the Triton version the canary serves (a "
                             "version directory under source.local, e.g. canary_version: 2)")
        if self.strategy != "canary" and self.canary_version is not None:
            raise ValueError("canary_version: only with strategy: canary; set strategy: canary or remove it")
        return self


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


IAM_ROLE_ARN = r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$"


class SourceSpec(Strict):
    """Where Triton finds the model repository on each cloud; one string is shorthand for one cloud.

    `aws` is one bucket (`s3://bucket/prefix`, for stacks with one AWS region: the bucket must be in it), or a
    bucket per region (`{us-east-1: s3://..., eu-west-1: s3://...}`, each bucket in its region). Triton's S3 client
    signs every request for the region it runs in (AWS_DEFAULT_REGION, triton-inference-server/core
    src/filesystem/implementations/s3.h), so a cluster can only read a bucket of its own region. GCS buckets are
    read from any region: `gcp` is always one bucket."""

    # Checked whole in `_aws_buckets` (before the types), so each mistake gets one clear error, not one per
    # member of the union.
    aws: str | dict[str, str] | None = None
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

    @field_validator("aws", mode="before")
    @classmethod
    def _aws_buckets(cls, value: object) -> object:
        s3 = BUCKET_URI.format(scheme="s3")
        if value is None or isinstance(value, str):
            if value is not None and not re.fullmatch(s3, value):
                raise ValueError(f"must be an S3 URI such as s3://bucket/prefix, got {value!r}")
            return value
        if not isinstance(value, dict) or not value:
            raise ValueError("must be s3://bucket/prefix, or a bucket per AWS region such as "
                             "{us-east-1: s3://bucket/prefix}")
        known = regions()["aws"]
        for region, uri in value.items():
            if region not in known:
                raise ValueError(f"unknown AWS region {region!r}; key each bucket by an AWS region: "
                                 f"{', '.join(sorted(known))}")
            if not isinstance(uri, str) or not re.fullmatch(s3, uri):
                raise ValueError(f"{region}: must be an S3 URI such as s3://bucket/prefix, got {uri!r}")
        return value

    def on(self, cloud: str) -> str | dict[str, str] | None:
        """As written: a URI, or (AWS) the bucket of each region."""
        return getattr(self, cloud)

    def uri(self, cloud: str, region: str) -> str | None:
        """The repository Triton reads in `region` of `cloud`: that region's bucket, or the one bucket."""
        value = getattr(self, cloud)
        return value.get(region) if isinstance(value, dict) else value

    def uris(self, cloud: str) -> list[str]:
        value = getattr(self, cloud)
        return sorted(value.values()) if isinstance(value, dict) else [value] if value else []


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
            for uri in self.source.uris(cloud):
                if uri.rstrip("/").rsplit("/", 1)[-1] == self.name and uri.rstrip("/").count("/") >= 3:
                    continue
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
    retire: bool = Field(
        False, description="First step of removing the region: turns its deletion protection off. Deploy, then "
                           "remove the region from the stack and deploy again.")

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
    admin_role_arns: list[Annotated[str, Field(pattern=IAM_ROLE_ARN)]] = Field(
        default_factory=list, description="IAM roles (CI, break-glass) given cluster-admin EKS access entries; "
                                          "whoever runs `pulumi up` gets one as well, so do not list that role "
                                          "here (EKS allows one access entry per principal).")

    placeholder: bool = Field(
        False, description="Marks the deployer access as not yet decided (the example stacks); `modelfleet check` "
                           "flags it: advisory in dev, mandatory elsewhere. Remove it once the access is chosen.")

    @field_validator("public_access_cidrs")
    @classmethod
    def _never_the_whole_internet(cls, cidrs: list[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
        wide = [str(c) for c in cidrs if c.prefixlen < 8]
        if wide:
            raise ValueError(f"must name your deployers' egress ranges, not the internet: {', '.join(wide)} "
                             "is too wide (use /8 or narrower)")
        for cidr in cidrs:
            reason = not_public_egress(cidr)
            if reason:
                raise ValueError(f"{cidr} is {reason}, which can never be a deployer's public egress address; "
                                 "list the public address range your CI runner's traffic leaves from, or leave the "
                                 "list empty and deploy from inside each region's network")
        return cidrs


IMAGE_DIGEST = r"^sha256:[0-9a-f]{64}$"
HTTPS_URL = r"^https://[A-Za-z0-9.-]+(:\d+)?(/\S*)?$"


class JwtIssuerSpec(Strict):
    """The OIDC issuer whose tokens the gateway accepts for models with `gateway.auth: [jwt]`."""

    issuer: Annotated[str, Field(pattern=HTTPS_URL)] = Field(description="The tokens' `iss`, e.g. "
                                                                         "https://auth.example.com/")
    audiences: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = Field(
        description="Accepted `aud` values; a token must carry one of them.")
    jwks_uri: Annotated[str, Field(pattern=HTTPS_URL)] | None = Field(
        None, description="Where the issuer's signing keys are; default <issuer>/.well-known/jwks.json.")
    jwks_file: str | None = Field(
        None, description="Local stack only: a JWKS file read at start (the local machine may have no network).")
    tenant_claim: Annotated[str, Field(min_length=1)] = "sub"
    scope_claim: Annotated[str, Field(min_length=1)] = "scope"


class StackGatewaySpec(Strict):
    """The stack's gateway: where it listens and how it is reached."""

    http_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="Listener for KServe v2 HTTP; default 8080 locally, 443 in the cloud.")
    grpc_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="Listener for inference.GRPCInferenceService; default 8081 locally, 443 in the cloud "
                          "(one TLS listener carries both, told apart by content type).")
    tls: bool | None = Field(None, description="Terminate TLS at the gateway; default on in the cloud, off locally "
                                               "(loopback only). Cloud environments cannot turn it off.")
    load_balancer: Literal["internal", "external"] = Field(
        "internal", description="internal: reachable only from the region's network; external: from the internet.")
    hostname: Annotated[str, Field(pattern=DNS_NAME)] | None = Field(
        None, description="The gateway's DNS name; default api.<dns_domain>.")
    jwt: JwtIssuerSpec | None = None
    inspector_image_digest: Annotated[str, Field(pattern=IMAGE_DIGEST)] | None = Field(
        None, description="Cloud stacks: the digest of the inspection service image the release step pushed to each "
                          "region's registry (README, gateway in the cloud); required there, never a tag.")


# Ranges a public endpoint never sees as a source address (IANA special-purpose registry, RFC 6890 and updates).
# EKS public access CIDRs and GKE authorized networks match the client's public egress address, so an entry here
# locks the deployer out while looking configured.
NOT_PUBLIC_EGRESS = (
    ("0.0.0.0/8", "'this network' (RFC 1122)"),
    ("10.0.0.0/8", "a private range (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT shared space (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("172.16.0.0/12", "a private range (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "a documentation range (RFC 5737, TEST-NET-1)"),
    ("192.168.0.0/16", "a private range (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking space (RFC 2544)"),
    ("198.51.100.0/24", "a documentation range (RFC 5737, TEST-NET-2)"),
    ("203.0.113.0/24", "a documentation range (RFC 5737, TEST-NET-3)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
)


def not_public_egress(cidr: ipaddress.IPv4Network) -> str | None:
    """Why `cidr` overlaps a range no public egress comes from, or None when it is all public."""
    for special, why in NOT_PUBLIC_EGRESS:
        if cidr.overlaps(ipaddress.IPv4Network(special)):
            return why
    return None
class HealthCheckSpec(Strict):
    """Route53's health checkers: a region is unhealthy after `failure_threshold` failed probes, each
    `request_interval_s` apart (Route53 allows 10 or 30 s)."""

    request_interval_s: Literal[10, 30] = 30
    failure_threshold: Annotated[int, Field(ge=1, le=10)] = 3


class StackRoutingSpec(Strict):
    """Global routing: one Route53 zone for dns_domain, a health-checked record set per model."""

    enabled: bool | None = Field(None, description="Default: on in cloud stacks. Each region's gateway then also "
                                                   "gets an internet-facing load balancer for <model>.<dns_domain> "
                                                   "(Route53's checkers and clients come from the internet).")
    existing_zone: Annotated[str, Field(pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")] | None = \
        Field(None, description="Use this existing public hosted zone (looked up by name) instead of creating one "
                                "for dns_domain.")
    ttl_s: Annotated[int, Field(ge=10, le=3600)] = Field(60, description="TTL of the records modelfleet owns.")
    health_check: HealthCheckSpec = HealthCheckSpec()
    provider_region: str = Field("us-east-1", description="Route53 is global; its API is served from us-east-1.")

    @field_validator("provider_region")
    @classmethod
    def _aws_region(cls, value: str) -> str:
        known = regions()["aws"]
        if value not in known:
            raise ValueError(f"unknown AWS region {value!r}; known: {', '.join(sorted(known))}")
        return value


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
    gateway: StackGatewaySpec = StackGatewaySpec()
    routing: StackRoutingSpec = StackRoutingSpec()
    role: Literal["all", "regional", "global"] = Field(
        "all", description="The scale path (docs/adr/0003-global-routing.md): all = every region and the global "
                           "routing in this stack; regional = only `role_region`'s resources, exporting its gateway "
                           "entry for a global stack; global = only the global routing, reading each region's entry "
                           "from the stack in `region_stacks`. Every stack of a split fleet lists all its regions.")
    role_region: Annotated[str, Field(pattern=REGION_KEY)] | None = Field(
        None, description="role regional: the one region of `regions` this stack deploys.")
    region_stacks: dict[Annotated[str, Field(pattern=REGION_KEY)], Annotated[str, Field(pattern=STACK_REF)]] = Field(
        default_factory=dict, description="role global: each region's stack, fully qualified (org/project/stack).")

    @property
    def routing_enabled(self) -> bool:
        return self.environment != "local" and bool(self.regions) and self.routing.enabled is not False

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
    def _role_fits(self) -> StackSpec:
        refs = [r.region for r in self.regions]
        if self.role != "regional" and self.role_region is not None:
            raise ValueError(f"role_region: only a regional stack names its region (role is {self.role}); remove it")
        if self.role != "global" and self.region_stacks:
            raise ValueError(f"region_stacks: only a global stack reads other stacks (role is {self.role}); "
                             "remove it")
        if self.role == "all":
            return self
        if not self.routing_enabled:
            raise ValueError(f"role: {self.role} splits a fleet around its global routing, which this stack turns "
                             "off (routing.enabled or environment); use role: all")
        if self.role == "regional" and self.role_region not in refs:
            raise ValueError(f"role_region: a regional stack deploys one of its regions ({', '.join(refs)}); "
                             f"got {self.role_region or 'nothing'}: set role_region to one of them")
        if self.role == "global" and set(self.region_stacks) != set(refs):
            missing = sorted(set(refs) - set(self.region_stacks))
            extra = sorted(set(self.region_stacks) - set(refs))
            raise ValueError("region_stacks: a global stack reads every region's entry from its regional stack; "
                             + (f"add {', '.join(missing)}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"remove {', '.join(extra)} (not in regions)" if extra else ""))
        return self

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
        if self.environment != "local" and self.gateway.tls is False:
            raise ValueError("gateway.tls: the gateway terminates TLS in every cloud environment; remove tls: false")
        if self.environment != "local" and not self.gateway.inspector_image_digest:
            raise ValueError("gateway.inspector_image_digest: required in a cloud environment; set it to the "
                             "sha256:... digest the release step printed when it pushed the inspection service image")
        if self.environment == "local" and self.gateway.jwt and not self.gateway.jwt.jwks_file:
            raise ValueError("gateway.jwt.jwks_file: the local gateway reads the issuer's keys from a file "
                             "(this machine may have no network); set it to a JWKS file")
        if self.environment != "local" and self.gateway.jwt and self.gateway.jwt.jwks_file:
            raise ValueError("gateway.jwt.jwks_file: only the local stack reads keys from a file; "
                             "use jwks_uri in the cloud")
        keys = [r.region for r in self.regions]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"regions: listed twice: {', '.join(dup)}")
        return self

    @property
    def nat_layout(self) -> Literal["per-zone", "single"]:
        return self.nat_gateways or ("per-zone" if self.environment == "prod" else "single")
