"""The metric names monitoring reads, and who exports each: the contract with Triton, the gateway (Envoy),
the DCGM exporter, kube-state-metrics and the drift exporter. One place, so a renamed metric breaks one line.

Triton 2.51 exports only counters for latency (checked against a real scrape of the local server), so latency
SLOs are measured at the gateway: Envoy's per-upstream-cluster histogram `upstream_rq_time` (milliseconds).
"""

from __future__ import annotations

import re

# --- Triton (:8002/metrics), label `model` -----------------------------------------------------------------
TRITON_SUCCESS = "nv_inference_request_success"
TRITON_FAILURE = "nv_inference_request_failure"
TRITON_QUEUE_US = "nv_inference_queue_duration_us"
TRITON_REQUEST_US = "nv_inference_request_duration_us"
TRITON_COMPUTE_INFER_US = "nv_inference_compute_infer_duration_us"
TRITON_INFERENCES = "nv_inference_count"  # items, counting each item of a batch
TRITON_EXECUTIONS = "nv_inference_exec_count"  # model executions (batches)
TRITON_PENDING = "nv_inference_pending_request_count"
TRITON_METRICS = (TRITON_SUCCESS, TRITON_FAILURE, TRITON_QUEUE_US, TRITON_REQUEST_US, TRITON_COMPUTE_INFER_US,
                  TRITON_INFERENCES, TRITON_EXECUTIONS, TRITON_PENDING)

# --- the gateway: Envoy's cluster stats, label `envoy_cluster_name` ------------------------------------------
# The local Envoy names one upstream cluster per model, `triton-<model>` (modelfleet.gateway.envoy_config). Envoy
# Gateway names a route's cluster after the route and its rule, `<kind>/<namespace>/<route>/rule/<index>`
# (envoyproxy/gateway internal/gatewayapi/helpers.go `irRouteDestinationName`: `httproute/ns/triton-<kube name>/rule/0`
# and `grpcroute/...`); several backends of one rule (a canary split) share that cluster. `upstream_selector` matches
# the path segment `triton-<model or kube name>` at any position and any rule index.
ENVOY_RQ_XX = "envoy_cluster_upstream_rq_xx"  # label envoy_response_code_class: 1..5
ENVOY_RQ_TIME_BUCKET = "envoy_cluster_upstream_rq_time_bucket"
ENVOY_RQ_TIME_COUNT = "envoy_cluster_upstream_rq_time_count"
# 429s. The global rate limit filter (Envoy Gateway's BackendTrafficPolicy) charges its verdicts to the route's
# upstream cluster (`cluster.<name>.ratelimit.over_limit`); the local one (the local stack) to its stat prefix,
# `modelfleet_<rule>_<model>` (modelfleet.gateway.envoy_config).
ENVOY_RATELIMIT_OVER = "envoy_cluster_ratelimit_over_limit"
ENVOY_LOCAL_RATELIMITED = "envoy_http_local_rate_limit_rate_limited"
ENVOY_METRICS = (ENVOY_RQ_XX, ENVOY_RQ_TIME_BUCKET, ENVOY_RQ_TIME_COUNT, ENVOY_RATELIMIT_OVER, ENVOY_LOCAL_RATELIMITED)
# Envoy's default histogram buckets (ms), source/common/stats/histogram_impl.h `supportedBuckets`. A latency SLO
# is measured at the largest bucket not above the p99 target: never laxer than the SLO.
ENVOY_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
                    1800000, 3600000)

# --- the DCGM exporter: label `pod` (its Kubernetes mapping) -------------------------------------------------
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # percent

# --- kube-state-metrics: labels namespace, pod, container ----------------------------------------------------
KSM_POD_PHASE = "kube_pod_status_phase"
KSM_RESTARTS = "kube_pod_container_status_restarts_total"

# --- drift (exported by the gateway's inspection service): labels model, feature ------------------------------
DRIFT_PSI = "modelfleet_drift_psi"
DRIFT_KS = "modelfleet_drift_ks"
DRIFT_SAMPLES = "modelfleet_drift_window_samples"  # samples in the current window; statistics need a full one
DRIFT_METRICS = (DRIFT_PSI, DRIFT_KS, DRIFT_SAMPLES)


def literal(name: str) -> str:
    """`name` as a literal inside a PromQL regex: Triton names may hold `.`; a one-character class needs no
    backslash (which PromQL strings would need doubled)."""
    return re.sub(r"([^A-Za-z0-9_-])", r"[\1]", name)


def upstream_selector(model: str, kube_name: str) -> str:
    """A matcher for the gateway's upstream clusters of `model`: the local one (Triton's name) and Envoy Gateway's
    (the route's name, from the Kubernetes name), every rule (regex matches are anchored in PromQL)."""
    names = sorted({literal(model), literal(kube_name)})
    alternatives = names[0] if len(names) == 1 else f"({'|'.join(names)})"
    return f'envoy_cluster_name=~"(.*/)?triton-{alternatives}(/.*)?"'


def local_ratelimit_selector(model: str) -> str:
    return f'envoy_local_http_ratelimit_prefix=~"modelfleet_[a-z]+_{literal(model)}"'


def pod_selector(kube_name: str) -> str:
    """A matcher for the pods of a model's Deployment: `triton-<kube name>-<replicaset hash>-<pod hash>`."""
    return f'pod=~"triton-{kube_name}-[a-z0-9]+-[a-z0-9]+"'


def latency_bucket_ms(p99_ms: float) -> float:
    fitting = [b for b in ENVOY_BUCKETS_MS if b <= p99_ms]
    if not fitting:
        raise ValueError(f"slo.p99_ms {p99_ms:g} is below the gateway's smallest latency bucket "
                         f"({ENVOY_BUCKETS_MS[0]:g} ms); it cannot be measured")
    return fitting[-1]


def le_matcher(bucket_ms: float) -> str:
    """Envoy prints bucket bounds without a trailing `.0` (`le="50"`, `le="0.5"`); accept either form."""
    text = f"{bucket_ms:g}"
    return f'le=~"{text}(\\\\.0+)?"' if "." not in text else f'le="{text}"'
