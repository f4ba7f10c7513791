"""Kubernetes workloads for Triton, as plain data: one function per object, each returning the manifest dict.

Pure and deterministic, no Pulumi: `components/serving.py` declares exactly these dicts as typed
`pulumi_kubernetes` resources, `modelfleet.render` writes them as YAML for review, and the tests validate
them with `kubernetes-validate --strict` for the cluster's Kubernetes version. Every number comes from the
plan (`Placement`, `PoolPlan`), the spec or a constant below; nothing is computed in a component.

Per region (cluster): a Namespace for the environment, the Triton ServiceAccount carrying the cloud identity,
and KEDA (a Helm release). Per model in that region: Deployment, Service, PodDisruptionBudget,
NetworkPolicy and a KEDA ScaledObject. Why KEDA: docs/adr/0002-autoscaling.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Mapping

import yaml

from modelfleet.catalogue import hardware
from modelfleet import canary, versions
from modelfleet.gateway import peers
from modelfleet.plan import LABEL_PREFIX, TRITON_SERVICE_ACCOUNT, FleetPlan, Placement, PoolPlan, RegionPlan
from modelfleet.spec import ModelSpec
from modelfleet.triton.config import server_flags

# --- pinned images and charts: the only place they live ---------------------------------------------------
# Triton 25.08 (server 2.60). The digest is the one a public project pins for this tag and checks against
# `docker image inspect` RepoDigests; it was NOT re-resolved against nvcr.io from here (no registry access).
# Re-check before a first production rollout: `crane digest nvcr.io/nvidia/tritonserver:25.08-py3`.
TRITON_IMAGE_REPOSITORY = "nvcr.io/nvidia/tritonserver"
TRITON_IMAGE_TAG = "25.08-py3"
TRITON_IMAGE_DIGEST = "sha256:f836551575df7c9fb71144073845c6b3911de57db91a8c95e0687a4d2ac9f7a5"
TRITON_IMAGE = f"{TRITON_IMAGE_REPOSITORY}:{TRITON_IMAGE_TAG}@{TRITON_IMAGE_DIGEST}"
# The image's own user: Triton's build.py creates `triton-server` and fails the image build unless its uid and gid
# are 1000 (triton-inference-server/server build.py, "Make sure that this user to given ID 1000"), and copies the
# server's files with --chown=1000:1000. Running as that uid keeps runAsNonRoot true with files it can read.
TRITON_UID = 1000

KEDA_CHART, KEDA_CHART_VERSION, KEDA_CHART_REPOSITORY, KEDA_NAMESPACE = (
    versions.KEDA.chart, versions.KEDA.version, versions.KEDA.repository, versions.KEDA.namespace)
KEDA_TESTED_KUBERNETES = versions.KEDA_KUBERNETES

# --- contracts with the gateway and monitoring (label selectors and names they must use) ----------------
PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}
PROMETHEUS_URL = f"http://prometheus-operated.{PROMETHEUS_NAMESPACE}.svc:9090"
GATEWAY_REQUESTS_METRIC = "modelfleet_gateway_requests_total"  # counter with a `model` label, wakes scale-to-zero
# OTLP/HTTP traces: the collector Service the opentelemetry-collector chart names after its release.
OTEL_TRACES_URL = f"http://{versions.OPENTELEMETRY_COLLECTOR.chart}.{versions.OPENTELEMETRY_COLLECTOR.namespace}.svc:4318/v1/traces"

# --- the serving shape --------------------------------------------------------------------------------
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
SERVICE_ACCOUNT = TRITON_SERVICE_ACCOUNT  # the plan names it; the cloud identity trusts exactly it
COMPONENT = "inference"
ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"
POOL_LABEL = f"{LABEL_PREFIX}/pool"
CONFIG_HASH_ANNOTATION = f"{LABEL_PREFIX}/config-sha256"
OWNER_ANNOTATION = f"{LABEL_PREFIX}/owner"
TRITON_MODEL_ANNOTATION = f"{LABEL_PREFIX}/triton-model"  # the Triton name, where the Kubernetes name differs
SLO_P99_ANNOTATION = f"{LABEL_PREFIX}/slo-p99-ms"
SLO_AVAILABILITY_ANNOTATION = f"{LABEL_PREFIX}/slo-availability"
RESOURCE_SHARE = 0.75  # of a node's CPU and memory per GPU (or per node on CPU); the rest is daemons and system
SHM_SIZE = "1Gi"  # python backend tensors cross /dev/shm
TMP_SIZE = "20Gi"  # Triton downloads an s3:// or gs:// repository to a local temp dir
EXIT_TIMEOUT_S = 30  # in-flight requests drain this long on SIGTERM
PROBE_PERIOD_S = 10
PDB_MAX_UNAVAILABLE = 1  # replicas a voluntary disruption may take at once (pod_disruption_budget)
QUEUE_SHARE_OF_P99 = 0.25  # scale out when the average queue time per request passes this share of the p99 SLO
METRIC_WINDOW = "1m"
POLLING_INTERVAL_S = 15
COOLDOWN_S = 300  # idle time before a scale-to-zero model goes to zero
FALLBACK_FAILURES = 3  # failed polls (45 s) before KEDA falls back to the plan's replicas

# Annotations binding the ServiceAccount to the cloud identity; the values are Outputs at deploy time.
IDENTITY_ANNOTATION = {"aws": "eks.amazonaws.com/role-arn", "gcp": "iam.gke.io/gcp-service-account"}


class ServingError(ValueError):
    """The plan or a spec cannot be turned into a workload; `str()` names the file and field."""


def namespace_name(plan: FleetPlan) -> str:
    return f"modelfleet-{plan.environment}"


def workload_name(kube_name: str) -> str:
    """Objects are named after the model's Kubernetes name (`ModelSpec.kube_name`), never its Triton name, which
    may hold characters a DNS label or a label value cannot (`_`, `.`, capitals)."""
    return f"triton-{kube_name}"


def selector_labels(kube_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": kube_name}


def _labels(plan: FleetPlan, model: str | None = None, component: str = COMPONENT) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/part-of": "modelfleet",
        "app.kubernetes.io/managed-by": "pulumi",
        f"{LABEL_PREFIX}/environment": plan.environment,
    }
    if model:
        labels |= selector_labels(model) | {"app.kubernetes.io/component": component, f"{LABEL_PREFIX}/model": model}
    return dict(sorted(labels.items()))


def _meta(name: str, labels: dict[str, str], namespace: str | None = None,
          annotations: Mapping[str, Any] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = labels
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _version(v: str) -> tuple[int, int]:
    major, minor = v.split(".")[:2]
    return int(major), int(minor)


# --- the decisions for one model in one region ------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """Everything the objects of one model in one region are built from."""

    model: ModelSpec
    placement: Placement
    pool: PoolPlan
    cloud: str
    region: str
    namespace: str
    name: str
    repository: str  # the bucket prefix holding <model>/config.pbtxt and <model>/<version>/
    cpu: str
    memory: str
    gpus: int
    startup_failure_threshold: int
    queue_target_us: int
    config_sha256: str | None
    kubernetes_version: str
    # The pods' `app.kubernetes.io/instance`: the model's Kubernetes name, or `<name>-canary` for its canary, so the
    # stable Service, PDB and NetworkPolicy never select canary pods (and the two Deployments' selectors never
    # overlap); what selects every Triton pod by `app.kubernetes.io/name: triton` (Envoy's egress, the PodMonitor)
    # covers both.
    instance: str = ""
    version: int | None = None  # the Triton version these pods serve, when a canary splits the model's metrics
    config_name: str | None = None  # Triton's --model-config-name (the canary's configs/canary.pbtxt)
    extra_labels: tuple[tuple[str, str], ...] = ()

    @property
    def selector(self) -> dict[str, str]:
        return selector_labels(self.instance)


def workload_labels(plan: FleetPlan, w: Workload) -> dict[str, str]:
    """The model's labels, with the workload's own instance (stable or canary) and track."""
    return dict(sorted((_labels(plan, w.model.kube_name) | w.selector | dict(w.extra_labels)).items()))


def model_repository(model: ModelSpec, source: str) -> str:
    """Triton's `--model-repository`: the parent of the model's bucket folder (the spec checks that the folder
    is named after the model, and the loader that the stack's clouds all have one)."""
    return source.rstrip("/").rsplit("/", 1)[0]


def workload(plan: FleetPlan, region: RegionPlan, placement: Placement, config_text: str | None = None) -> Workload:
    model = plan.model(placement.model)
    pool = next(p for p in region.pools if p.name == placement.pool)
    offering = hardware().classes[placement.hardware_class].on(region.cloud)
    assert offering is not None, "the loader rejects hardware a region does not offer"
    slots = offering.gpus_per_node or 1
    share = max(placement.gpus_per_replica, 1) / slots * RESOURCE_SHARE
    return Workload(
        model=model,
        placement=placement,
        pool=pool,
        cloud=region.cloud,
        region=region.region,
        namespace=namespace_name(plan),
        name=workload_name(model.kube_name),
        repository=model_repository(model, placement.source),
        cpu=str(max(1, math.floor(offering.vcpus * share))),
        memory=f"{max(1, math.floor(offering.memory_gib * share))}Gi",
        gpus=placement.gpus_per_replica,
        startup_failure_threshold=math.ceil(placement.startup_budget_s / PROBE_PERIOD_S),
        queue_target_us=int(model.slo.p99_ms * 1000 * QUEUE_SHARE_OF_P99),
        config_sha256=hashlib.sha256(config_text.encode()).hexdigest() if config_text is not None else None,
        kubernetes_version=region.kubernetes_version,
        instance=model.kube_name,
        version=model.version if placement.canary else None,
    )


def canary_workload(plan: FleetPlan, region: RegionPlan, placement: Placement, config_text: str | None = None
                    ) -> Workload:
    """The canary Deployment of `placement` (modelfleet.canary): the same pods as the stable's but for the version
    (Triton reads configs/canary.pbtxt), their own name and instance label, and replicas sized for their share."""
    c = placement.canary
    assert c is not None, "only a placement with a canary has a canary workload"
    sized = dataclasses.replace(placement, rps=c.rps, min_replicas=c.min_replicas, max_replicas=c.max_replicas,
                                desired_replicas=c.desired_replicas, needed_replicas=c.needed_replicas, canary=None)
    w = workload(plan, region, sized, config_text)
    kube = w.model.kube_name
    return dataclasses.replace(w, name=workload_name(kube) + canary.SUFFIX, instance=kube + canary.SUFFIX,
                               version=c.version, config_name=canary.CONFIG_NAME,
                               extra_labels=((f"{LABEL_PREFIX}/track", "canary"),))


# --- per region -------------------------------------------------------------------------------------------

def namespace(plan: FleetPlan) -> dict:
    labels = _labels(plan) | {
        # Triton pods meet "restricted"; other tenants of the namespace are held to "baseline".
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace_name(plan), dict(sorted(labels.items())))}


def service_account(plan: FleetPlan, identity_annotations: Mapping[str, Any]) -> dict:
    """Triton's identity: IRSA (`eks.amazonaws.com/role-arn`) or GKE Workload Identity, to read the bucket."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(SERVICE_ACCOUNT, _labels(plan), namespace_name(plan), identity_annotations),
        # IRSA projects its own token and GKE uses the metadata server: the API token is not needed.
        "automountServiceAccountToken": False,
    }


def keda_release_values() -> dict:
    """Values for the KEDA chart: its pods on the system pool, CRDs installed with the chart."""
    system = {POOL_LABEL: "system"}
    return {
        "crds": {"install": True},
        "nodeSelector": system,
        "podDisruptionBudget": {"operator": {"maxUnavailable": 1}, "metricServer": {"maxUnavailable": 1}},
    }


def check_keda_supports(kubernetes_version: str) -> None:
    low, high = (_version(v) for v in KEDA_TESTED_KUBERNETES)
    if not low <= _version(kubernetes_version) <= high:
        raise ServingError(
            f"KEDA {KEDA_CHART_VERSION} is tested on Kubernetes {KEDA_TESTED_KUBERNETES[0]}-{KEDA_TESTED_KUBERNETES[1]}, "
            f"the cluster runs {kubernetes_version}: move KEDA in modelfleet/versions.py with it")


# --- per model in a region --------------------------------------------------------------------------------

def served_models(plan: FleetPlan, model: ModelSpec) -> list[ModelSpec]:
    """The models one Triton loads for `model`: itself and, for an ensemble, every model its steps run (Triton
    loads an ensemble only when its steps' models are loaded; the loader keeps them in one repository)."""
    out = [model]
    for step in model.triton.ensemble:
        member = plan.model(step.model)
        out += [m for m in served_models(plan, member) if m not in out]
    return out


def triton_args(w: Workload, served: list[ModelSpec] | None = None) -> list[str]:
    served = served or [w.model]
    args = [
        f"--model-repository={w.repository}",
        "--model-control-mode=explicit",
        *(f"--load-model={m.name}" for m in served),
    ]
    if all(m.inputs and m.outputs for m in served):
        args.append("--disable-auto-complete-config")  # the rendered config.pbtxt is the whole truth
    # else a backend fills in what the config leaves out (vllm's model.json, an ONNX file's tensors)
    args += [
        "--strict-readiness=true",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if w.gpus else 'false'}",
    ]
    if w.config_name:
        args.append(f"--model-config-name={w.config_name}")  # configs/<name>.pbtxt: the canary's version
    args += server_flags(served)
    return args + trace_args(w.model.name, w.model.monitoring.trace_sample_rate)


def trace_args(model: str, sample_rate: float) -> list[str]:
    """Triton's OpenTelemetry tracing at the spec's rate. Triton samples one request in `rate`, so the share
    becomes its inverse (0.01 -> rate=100); a share of 0 turns tracing off."""
    if sample_rate <= 0:
        return []
    return ["--trace-config=mode=opentelemetry", "--trace-config=level=TIMESTAMPS",
            f"--trace-config=rate={max(1, round(1 / sample_rate))}",
            f"--trace-config=opentelemetry,url={OTEL_TRACES_URL}",
            f"--trace-config=opentelemetry,resource=service.name=triton-{model}"]


def _probe(path: str, period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def tolerations(pool: PoolPlan) -> list[dict]:
    """Tolerate each of the pool's taints by key and effect, whatever its value (`operator: Exists`).

    The value must not matter: on GPU nodes GKE adds its own `nvidia.com/gpu=present:NoSchedule` next to (or
    instead of) the plan's `nvidia.com/gpu=true:NoSchedule`; an `Equal` toleration of `true` would leave Triton
    unschedulable there. Exists on the key and effect tolerates both, and nothing else."""
    seen = dict.fromkeys((t.key, t.effect) for t in pool.taints)
    return [{"key": key, "operator": "Exists", "effect": effect} for key, effect in seen]


def deployment(plan: FleetPlan, w: Workload) -> dict:
    labels = workload_labels(plan, w)
    selector = w.selector
    requests: dict[str, Any] = {"cpu": w.cpu, "memory": w.memory}
    limits: dict[str, Any] = {"memory": w.memory}  # no CPU limit: throttling only adds latency
    if w.gpus:
        requests["nvidia.com/gpu"] = str(w.gpus)
        limits["nvidia.com/gpu"] = str(w.gpus)
    env = [{"name": "AWS_DEFAULT_REGION", "value": w.region}] if w.cloud == "aws" else []
    container = {
        "name": "tritonserver",
        "image": TRITON_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": triton_args(w, served_models(plan, w.model)),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        # Cold start: the repository download and model load must fit in the plan's startup budget.
        "startupProbe": _probe("/v2/health/ready", PROBE_PERIOD_S, w.startup_failure_threshold),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", PROBE_PERIOD_S, 3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    if not env:
        del container["env"]
    annotations = {CONFIG_HASH_ANNOTATION: w.config_sha256} if w.config_sha256 else None
    pod_spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        # No Kubernetes API token: Triton never calls the API server. This does not cut off the cloud identity.
        # On EKS, the pod identity webhook adds its own projected token volume (audience sts.amazonaws.com) to every
        # pod whose ServiceAccount carries eks.amazonaws.com/role-arn, without looking at this field
        # (aws/amazon-eks-pod-identity-webhook pkg/handler/handler.go, updatePodSpec); the kubelet mints that
        # projected token through TokenRequest whatever automount says. On GKE, workload identity answers from
        # the node's GKE metadata server, so no token is mounted at all.
        "automountServiceAccountToken": False,
        "nodeSelector": {POOL_LABEL: w.pool.name},
        "tolerations": tolerations(w.pool),
        "topologySpreadConstraints": [
            # Spread over zones and nodes, but never leave a replica pending for it: GPU capacity is scarce.
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector}}
            for key in (ZONE_KEY, HOSTNAME_KEY)
        ],
        "terminationGracePeriodSeconds": EXIT_TIMEOUT_S + 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRITON_UID,
            "runAsGroup": TRITON_UID,
            "fsGroup": TRITON_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
        ],
    }
    if not pod_spec["tolerations"]:
        del pod_spec["tolerations"]
    template_meta: dict[str, Any] = {"labels": labels}
    if annotations:
        template_meta["annotations"] = annotations
    rollout = w.model.rollout
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(w.name, labels, w.namespace, {
            # Who is paged and against what: read by the policy pack and the alert rules.
            OWNER_ANNOTATION: w.model.owner,
            **({TRITON_MODEL_ANNOTATION: w.model.name} if w.model.name != w.model.kube_name else {}),
            SLO_P99_ANNOTATION: f"{w.model.slo.p99_ms:g}",
            SLO_AVAILABILITY_ANNOTATION: f"{w.model.slo.availability:g}",
        }),
        "spec": {
            # No `replicas`: the ScaledObject owns it between the plan's bounds; a re-apply must not reset it.
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": rollout.max_unavailable, "maxSurge": rollout.max_surge}},
            "minReadySeconds": 10,
            # The plan's cold start and a margin: a first rollout waits for a node, the image and the model.
            "progressDeadlineSeconds": w.placement.progress_deadline_s,
            "revisionHistoryLimit": 5,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def service(plan: FleetPlan, w: Workload) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(w.name, workload_labels(plan, w), w.namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": w.selector,
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "kubernetes.io/h2c"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP",
                 "appProtocol": "http"},
            ],
        },
    }


def pod_disruption_budget(plan: FleetPlan, w: Workload) -> dict:
    """Voluntary disruptions (node drains, upgrades, the node autoscaler) take at most PDB_MAX_UNAVAILABLE
    replicas at a time. maxUnavailable, not minAvailable: a model scaled to one replica (KEDA may go that low
    for a scale-to-zero model) would block every drain of its node under a minAvailable of 1."""
    spec: dict[str, Any] = {"maxUnavailable": PDB_MAX_UNAVAILABLE,
                            "selector": {"matchLabels": w.selector}}
    if _version(w.kubernetes_version) >= (1, 31):  # GA in 1.31: a crash-looping pod must not block node drains
        spec["unhealthyPodEvictionPolicy"] = "AlwaysAllow"
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(w.name, workload_labels(plan, w), w.namespace),
        "spec": spec,
    }


# Triton's egress: DNS, and HTTPS to the object store and the cloud's token service (S3 through the VPC's gateway
# endpoint and STS keep public addresses; GCS is reached through Private Google Access on public ranges too), so
# 443 to any address. GKE's metadata server (workload identity tokens) answers on the link-local address.
OBJECT_STORE_PORT = 443
GKE_METADATA = ("169.254.169.254/32", 80)


def network_policy(plan: FleetPlan, w: Workload) -> dict:
    """Only this stack's gateway (inference ports) and Prometheus (metrics port) may reach Triton, each named by
    its namespace (a label only the API server sets) and pod labels; Triton itself reaches only DNS, HTTPS (its
    model repository and credentials) and, on GKE, the metadata server."""
    egress = [
        {"to": [{"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": OBJECT_STORE_PORT}]},
    ]
    if w.cloud == "gcp":
        egress.append({"to": [{"ipBlock": {"cidr": GKE_METADATA[0]}}],
                       "ports": [{"protocol": "TCP", "port": GKE_METADATA[1]}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(w.name, workload_labels(plan, w), w.namespace),
        "spec": {
            "podSelector": {"matchLabels": w.selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [peers.envoy_peer(w.namespace)],
                 "ports": [{"protocol": "TCP", "port": HTTP_PORT}, {"protocol": "TCP", "port": GRPC_PORT}]},
                {"from": [{"namespaceSelector": {"matchLabels": {peers.NAMESPACE_NAME_LABEL: PROMETHEUS_NAMESPACE}},
                           "podSelector": {"matchLabels": dict(PROMETHEUS_POD_LABELS)}}],
                 "ports": [{"protocol": "TCP", "port": METRICS_PORT}]},
            ],
            "egress": egress,
        },
    }


def queue_time_query(w: Workload) -> str:
    """Average time a request waited in Triton's queue (microseconds, over every replica of the model), times the
    Deployment's current replicas (kube-state-metrics).

    KEDA applies `fallback` only to AverageValue triggers (kedacore/keda discussion #6524); with AverageValue the
    HPA sets ceil(metric / target) = ceil(current x average / target), the proportional rule of a Value trigger
    (docs/adr/0002-autoscaling.md). Without kube-state-metrics or Triton's series the result is empty (not NaN,
    as `scalar()` would give): with `ignoreNullValues: false` a scaler error, so the fallback."""
    return (f"{queue_time_average_query(w.namespace, w.model.name, w.version)} * "
            f'sum(kube_deployment_status_replicas{{namespace="{w.namespace}",deployment="{w.name}"}})')


def queue_time_average_query(namespace: str, model: str, version: int | None = None) -> str:
    """Average queue time per request of `model` in `namespace`, microseconds, over all its replicas; with a canary
    each Deployment scales on its own version's series (Triton labels them `version`)."""
    match = f'namespace="{namespace}",model="{model}"' + (f',version="{version}"' if version is not None else "")
    return (f"sum(rate(nv_inference_queue_duration_us{{{match}}}[{METRIC_WINDOW}])) / "
            f"clamp_min(sum(rate(nv_inference_request_success{{{match}}}[{METRIC_WINDOW}])), 0.001)")


def scaled_object(plan: FleetPlan, w: Workload) -> dict:
    p = w.placement
    triggers: list[dict] = [{
        "type": "prometheus",
        "name": "queue-time",
        # Replicas grow in proportion to how far the fleet-wide average is above the target (queue_time_query).
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": PROMETHEUS_URL,
            "query": queue_time_query(w),
            "threshold": str(w.queue_target_us),
            # No data is an error (so the fallback) for a model that always runs; at zero replicas Triton exports
            # nothing, which for a scale-to-zero model is the normal quiet state (KEDA's default: read as 0).
            "ignoreNullValues": "true" if p.scale_to_zero else "false",
        },
    }]
    if p.scale_to_zero:
        # At zero replicas Triton exports nothing: the gateway's request rate wakes the model up.
        per_replica_rps = max(1.0, p.stable_rps / max(p.desired_replicas, 1))
        triggers.append({
            "type": "prometheus",
            "name": "gateway-demand",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": PROMETHEUS_URL,
                "query": f'sum(rate({GATEWAY_REQUESTS_METRIC}{{model="{w.model.name}"}}[2m]))',
                "threshold": f"{per_replica_rps:g}",
                "activationThreshold": "0",
            },
        })
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(w.name, workload_labels(plan, w), w.namespace),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name},
            "minReplicaCount": p.min_replicas if p.scale_to_zero else max(p.min_replicas, 1),
            "maxReplicaCount": p.max_replicas,
            "pollingInterval": POLLING_INTERVAL_S,
            "cooldownPeriod": COOLDOWN_S,
            # Prometheus unreachable or a query failing FALLBACK_FAILURES polls in a row: hold the plan's replicas
            # rather than freeze at whatever the last good reading gave.
            "fallback": {"failureThreshold": FALLBACK_FAILURES, "replicas": max(p.desired_replicas, 1)},
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}]},
                "scaleDown": {"stabilizationWindowSeconds": 300,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
            }}},
            "triggers": triggers,
        },
    }


def model_objects(plan: FleetPlan, w: Workload) -> list[dict]:
    """The objects of one model in one region, in apply order."""
    return [deployment(plan, w), service(plan, w), pod_disruption_budget(plan, w), network_policy(plan, w),
            scaled_object(plan, w)]


def region_objects(plan: FleetPlan, region: RegionPlan, identity_annotations: Mapping[str, Any],
                   configs: Mapping[str, str] | None = None) -> list[dict]:
    """Every Kubernetes object modelfleet declares in one region's cluster (KEDA's chart aside).

    `configs` maps a model to its rendered config.pbtxt (and `canary.config_key(model)` to its canary's); its hash
    rolls the pods when the config changes.
    """
    objects = [namespace(plan), service_account(plan, identity_annotations)]
    for placement in region.placements:
        text = (configs or {}).get(placement.model)
        objects += model_objects(plan, workload(plan, region, placement, text))
        if placement.canary:
            text = (configs or {}).get(canary.config_key(placement.model))
            objects += model_objects(plan, canary_workload(plan, region, placement, text))
    return objects


def placeholder_identity(cloud: str) -> dict[str, str]:
    """The identity annotation as `render` shows it: the real value is an Output known at deploy time."""
    return {IDENTITY_ANNOTATION[cloud]: f"<{cloud} identity of the region's Triton service account, set at deploy>"}


# --- validation ---------------------------------------------------------------------------------------------

# Vendored CRD schemas (pruned to what modelfleet declares; each file says its source and version), by
# `<apiVersion>/<kind>`. KEDA's ScaledObject is the one whole schema.
VENDORED_CRD_SCHEMAS = ("gateway-api-crd-schemas.yaml", "envoy-gateway-crd-schemas.yaml",
                        "external-secrets-crd-schemas.yaml", "prometheus-operator-crd-schemas.yaml")


@cache
def _crd_schema(name: str) -> dict:
    schema = yaml.safe_load(resources.files("modelfleet.data").joinpath(name).read_text())
    return _strict(schema)


@cache
def crd_schemas() -> dict[str, dict]:
    """Every custom resource kind modelfleet may declare, with its strict schema."""
    schemas = {"keda.sh/v1alpha1/ScaledObject": _crd_schema("keda-scaledobject-schema.yaml"),
               "monitoring.coreos.com/v1/PrometheusRule": _crd_schema("prometheusrule-schema.yaml")}
    for name in VENDORED_CRD_SCHEMAS:
        document = yaml.safe_load(resources.files("modelfleet.data").joinpath(name).read_text())
        schemas |= {key: _strict(schema) for key, schema in document["kinds"].items()}
    return schemas


def _strict(schema: Any) -> Any:
    """Close every object schema that lists its properties, as `kubernetes-validate --strict` does."""
    if isinstance(schema, dict):
        # `format` the keyword (a string) goes; a property named format (a schema) stays.
        out = {k: _strict(v) for k, v in schema.items() if not (k == "format" and isinstance(v, str))}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class ManifestError(ValueError):
    """A manifest fails validation; `str()` names the object, the field and the Kubernetes version."""


def validate_manifest(obj: dict, kubernetes_version: str) -> None:
    """Built-in kinds: kubernetes-validate strict for `kubernetes_version`. Custom resources: their vendored CRD
    schema (modelfleet/data, `crd_schemas`) strictly; for KEDA also the bounds its webhook checks. A custom kind
    without a vendored schema is an error, never a pass."""
    import jsonschema

    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} (Kubernetes {kubernetes_version})"
    schema = crd_schemas().get(f"{obj.get('apiVersion')}/{obj.get('kind')}")
    if schema is not None:
        try:
            jsonschema.Draft202012Validator(schema).validate(obj)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            raise ManifestError(f"{where} {path}: {exc.message}") from None
        spec = obj["spec"]
        if obj["kind"] == "ScaledObject" and spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            raise ManifestError(f"{where} spec.minReplicaCount: must be <= maxReplicaCount")
        if obj["kind"] in ("HTTPRoute", "GRPCRoute"):
            _check_route_rules(spec, where)
        _check_metadata(obj, where)
        return
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        raise ManifestError(f"{where} {path}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(f"{where}: {exc.message}") from None
    _check_metadata(obj, where)


# The route CRDs' CEL rules (x-kubernetes-validations) that JSON schema cannot say: Gateway API's standard
# grpcroutes.yaml / httproutes.yaml (tests/data/crds/grpcroute-v1.yaml quotes them).
_GRPC_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.IGNORECASE)
_GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")
MAX_ROUTE_MATCHES = 128


# Both route kinds' CRDs: a header filter's field is set exactly when its type says so, and each type at most once.
_HEADER_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")


def _check_route_rules(spec: dict, where: str) -> None:
    rules = spec.get("rules", [])
    if sum(len(rule.get("matches", [])) for rule in rules) > MAX_ROUTE_MATCHES:
        raise ManifestError(f"{where} spec.rules: more than {MAX_ROUTE_MATCHES} matches across all rules")
    for i, rule in enumerate(rules):
        for j, ref in enumerate(rule.get("backendRefs", [])):
            if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service" and "port" not in ref:
                raise ManifestError(f"{where} spec.rules.{i}.backendRefs.{j}: Must have port for Service reference")
        filters = rule.get("filters", [])
        for kind in _HEADER_FILTERS:
            field = kind[0].lower() + kind[1:]
            if sum(f["type"] == kind for f in filters) > 1:
                raise ManifestError(f"{where} spec.rules.{i}.filters: {kind} filter cannot be repeated")
            for j, f in enumerate(filters):
                if (field in f) != (f["type"] == kind):
                    raise ManifestError(f"{where} spec.rules.{i}.filters.{j}: filter.{field} must be "
                                        + (f"specified for {kind} filter.type" if f["type"] == kind else
                                           f"nil if the filter.type is not {kind}"))
        for j, match in enumerate(rule.get("matches", [])):
            method = match.get("method")
            if method is None or method.get("type", "Exact") != "Exact":
                continue
            if "service" in method and not _GRPC_SERVICE.match(method["service"]):
                raise ManifestError(f"{where} spec.rules.{i}.matches.{j}.method.service: must only contain valid "
                                    f"characters, got {method['service']!r}")
            if "method" in method and not _GRPC_METHOD.match(method["method"]):
                raise ManifestError(f"{where} spec.rules.{i}.matches.{j}.method.method: must only contain valid "
                                    f"characters, got {method['method']!r}")


def _check_metadata(obj: dict, where: str) -> None:

    name = obj["metadata"]["name"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ManifestError(f"{where} metadata.name: must be a DNS-1123 label, got {name!r}")
