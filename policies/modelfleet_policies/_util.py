"""Helpers shared by the policies: reading wire-form props safely, and recognising workloads and GPU pools.

Props arrive in camelCase wire form, wrapped by `pulumi_policy.proxy.unknown_checking_proxy`: mappings and lists
are `Mapping`/`Sequence` proxies (not `dict`/`list`), and reading a value that is unknown during preview raises
`UnknownValueError` (the analyzer turns that into an advisory "can't run during preview"). `present()` tells
whether a key is set without reading it, so "a KMS key ARN is set" holds even while the ARN is still unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Iterator

from pulumi_policy import StackValidationArgs

MODEL_LABEL = "modelfleet.io/model"
OWNER_KEY = "modelfleet.io/owner"
SLO_P99_KEY = "modelfleet.io/slo-p99-ms"
SLO_AVAILABILITY_KEY = "modelfleet.io/slo-availability"
GPU_TAINT_KEY = "nvidia.com/gpu"
COST_TYPE = "modelfleet:fleet:Cost"
WORLD = ("0.0.0.0/0", "::/0")


# ---------------------------------------------------------------- reading props


def is_map(value: Any) -> bool:
    return isinstance(value, Mapping)


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def keys(mapping: Any) -> list[str]:
    """The keys of a mapping without reading their values (which may be unknown)."""
    return list(iter(mapping)) if is_map(mapping) else []


def present(obj: Any, *path: str) -> bool:
    """Whether `path` is set (not None), reading only the parents: an unknown leaf counts as set."""
    cur = obj
    for index, key in enumerate(path):
        if not is_map(cur) or key not in keys(cur):
            return False
        if index == len(path) - 1:
            return _raw(cur, key) is not None
        cur = cur[key]
    return True


def _raw(mapping: Any, key: str) -> Any:
    """`mapping[key]` without the unknown check: the analyzer's proxy hands out its raw mapping as `__target`."""
    try:
        target = mapping["__target"]
    except KeyError:
        target = mapping
    return target[key]


def literal(obj: Any, key: str) -> Any:
    """`obj[key]` (None when absent) without the unknown check: a value unknown during preview comes back as the
    engine's placeholder, which equals no real value, so a comparison against a literal is simply false."""
    return _raw(obj, key) if is_map(obj) and key in keys(obj) else None


def get(obj: Any, *path: Any, default: Any = None) -> Any:
    """`obj[p0][p1]...`, or `default` when any step is missing or None. Unknown values raise, as in the analyzer."""
    cur = obj
    for key in path:
        if isinstance(key, int):
            if not is_list(cur) or not -len(cur) <= key < len(cur):
                return default
        elif not is_map(cur) or key not in keys(cur):
            return default
        cur = cur[key]
        if cur is None:
            return default
    return cur


def items(value: Any) -> list:
    """A list prop as a Python list; a single object (some schemas allow one or many) as a one-item list."""
    if value is None:
        return []
    if is_list(value):
        return [value[i] for i in range(len(value))]
    return [value]


def as_dict(value: Any) -> dict:
    """A mapping prop (or a JSON object string, as provider configs arrive) as a plain dict."""
    value = json_value(value)
    return {k: value[k] for k in keys(value)} if is_map(value) else {}


def json_value(value: Any) -> Any:
    """Provider config and IAM policy documents may arrive as JSON strings; anything else is returned as is."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def truthy(value: Any) -> bool:
    """True for `True` and for the string "true" (some AWS launch-template booleans are strings on the wire)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def falsy(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def config(args: Any, key: str, default: Any) -> Any:
    value = args.get_config().get(key) if args.get_config() else None
    return default if value is None else value


def short(urn: str) -> str:
    """`aws:eks/cluster:Cluster aws-us-east-1` — the type and name of a URN, for messages."""
    parts = urn.split("::")
    return f"{parts[-2].split('$')[-1]} {parts[-1]}" if len(parts) >= 4 else urn


# ---------------------------------------------------------------- Kubernetes workloads

WORKLOAD_TYPES = {
    "kubernetes:apps/v1:Deployment": ("spec", "template"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template"),
    "kubernetes:batch/v1:Job": ("spec", "template"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template"),
    "kubernetes:core/v1:Pod": (),
}
LONG_RUNNING = {"kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet",
                "kubernetes:apps/v1:ReplicaSet"}


def pod_template(resource_type: str, props: Any) -> Any:
    """The pod template (`metadata` + `spec`) of a workload, or None for other types."""
    path = WORKLOAD_TYPES.get(resource_type)
    if path is None:
        return None
    return props if not path else get(props, *path)


def containers(template: Any, init: bool = True) -> Iterator[tuple[str, Any]]:
    """(`containers[0] triton`, container) for every container of a pod template."""
    groups = ("containers", "initContainers") if init else ("containers",)
    for group in groups:
        for index, container in enumerate(items(get(template, "spec", group))):
            yield f"{group}[{index}] {get(container, 'name', default='?')}", container


def namespace_of(props: Any) -> str:
    return get(props, "metadata", "namespace", default="default")


def workload_name(props: Any, fallback: str) -> str:
    return f"{namespace_of(props)}/{get(props, 'metadata', 'name', default=fallback)}"


def labels_of(meta_owner: Any) -> dict:
    return as_dict(get(meta_owner, "metadata", "labels"))


def annotations_of(meta_owner: Any) -> dict:
    return as_dict(get(meta_owner, "metadata", "annotations"))


def is_triton(resource_type: str, props: Any) -> bool:
    """A Triton workload: labelled with its model (`modelfleet.io/model`), or running a tritonserver image."""
    template = pod_template(resource_type, props)
    if template is None:
        return False
    if MODEL_LABEL in labels_of(props) or MODEL_LABEL in labels_of(template):
        return True
    for label in ("app.kubernetes.io/name", "app.kubernetes.io/component", "app"):
        if str(labels_of(template).get(label, "")).startswith("triton"):
            return True
    return any("tritonserver" in str(get(c, "image", default="")) for _, c in containers(template))


def model_of(resource_type: str, props: Any, fallback: str) -> str:
    template = pod_template(resource_type, props)
    return str(labels_of(props).get(MODEL_LABEL) or labels_of(template).get(MODEL_LABEL) or fallback)


def selector_matches(selector: Any, labels: dict) -> bool:
    """A Kubernetes LabelSelector (`matchLabels`, `matchExpressions`) against a label set; {} selects everything."""
    if selector is None:
        return False
    for key, value in as_dict(get(selector, "matchLabels")).items():
        if labels.get(key) != value:
            return False
    for expr in items(get(selector, "matchExpressions")):
        key, op = get(expr, "key"), get(expr, "operator")
        values = [str(v) for v in items(get(expr, "values"))]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def triton_workloads(args: StackValidationArgs) -> list:
    return [r for r in args.resources if is_triton(r.resource_type, r.props)]


# ---------------------------------------------------------------- GPU hardware
# Public facts about cloud GPU hardware, so a GPU pool is recognised however it was declared (by modelfleet's
# components or by hand). tests/test_policies.py checks that every offering in modelfleet's hardware catalogue is
# known here with the same class and GPU count.

AWS_GPU_FAMILIES = {
    "g4dn": "nvidia-t4", "g5": "nvidia-a10g", "g6": "nvidia-l4", "gr6": "nvidia-l4", "g6e": "nvidia-l40s",
    "p3": "nvidia-v100", "p3dn": "nvidia-v100", "p4d": "nvidia-a100", "p4de": "nvidia-a100-80gb",
    "p5": "nvidia-h100", "p5e": "nvidia-h200", "p5en": "nvidia-h200", "p6": "nvidia-b200",
}
_AWS_MULTI_GPU = {
    "g4dn": {"12xlarge": 4, "metal": 8},
    "g5": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "g6": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "gr6": {},
    "g6e": {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8},
    "p3": {"8xlarge": 4, "16xlarge": 8},
}
GCP_ACCELERATORS = {
    "nvidia-tesla-t4": "nvidia-t4", "nvidia-l4": "nvidia-l4", "nvidia-tesla-v100": "nvidia-v100",
    "nvidia-tesla-p4": "nvidia-p4", "nvidia-tesla-p100": "nvidia-p100", "nvidia-tesla-a100": "nvidia-a100",
    "nvidia-a100-80gb": "nvidia-a100-80gb", "nvidia-h100-80gb": "nvidia-h100", "nvidia-h100-mega-80gb": "nvidia-h100",
    "nvidia-h200-141gb": "nvidia-h200", "nvidia-b200": "nvidia-b200",
}
_GCP_MACHINE_FAMILIES = {"g2": "nvidia-l4", "a2": "nvidia-a100", "a3": "nvidia-h100", "a4": "nvidia-b200"}
_G2_GPUS = {"24": 2, "48": 4, "96": 8}


def aws_gpu(instance_type: str) -> tuple[str, int] | None:
    """(class, GPUs per node) of an AWS instance type, or None for a CPU type."""
    family, _, size = instance_type.partition(".")
    cls = AWS_GPU_FAMILIES.get(family)
    if cls is None:
        return None
    if family in ("p4d", "p4de", "p5e", "p5en", "p6", "p3dn"):
        return cls, 8
    if family == "p5":
        return cls, 1 if size == "4xlarge" else 8
    if family == "p3" and size == "24xlarge":
        return cls, 8
    return cls, _AWS_MULTI_GPU.get(family, {}).get(size, 1)


def gcp_gpu(machine_type: str | None, accelerators: list) -> tuple[str, int] | None:
    """(class, GPUs per node) of a GCE machine type and its guest accelerators, or None for a CPU node."""
    for acc in accelerators:
        acc_type = get(acc, "type")
        if acc_type:
            count = int(get(acc, "count", default=1) or 1)
            return GCP_ACCELERATORS.get(acc_type, acc_type), count
    family, _, rest = (machine_type or "").partition("-")
    cls = _GCP_MACHINE_FAMILIES.get(family)
    if cls is None:
        return None
    if family == "g2":
        return cls, _G2_GPUS.get(rest.rsplit("-", 1)[-1], 1)
    match = re.search(r"-(\d+)g$", machine_type or "")
    if family == "a2" and "ultragpu" in rest:
        cls = "nvidia-a100-80gb"
    return cls, int(match.group(1)) if match else 8


class Pool:
    """A node pool (EKS managed node group or GKE node pool) as the GPU policies see it."""

    def __init__(self, kind: str, gpu: tuple[str, int] | None, labels: dict, taints: list, max_nodes: int | None,
                 how_max: str, gpu_hint: bool):
        self.kind = kind
        self.gpu_class = gpu[0] if gpu else labels.get("modelfleet.io/hardware-class") if gpu_hint else None
        self.gpus_per_node = gpu[1] if gpu else None
        self.labels = labels
        self.taints = taints
        self.max_nodes = max_nodes
        self.how_max = how_max
        self.is_gpu = gpu is not None or gpu_hint

    @property
    def max_gpus(self) -> int | None:
        if self.max_nodes is None or self.gpus_per_node is None:
            return None
        return self.max_nodes * self.gpus_per_node


EKS_NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
GKE_NODE_POOL = "gcp:container/nodePool:NodePool"


def pool_of(resource_type: str, props: Any) -> Pool | None:
    if resource_type == EKS_NODE_GROUP:
        labels = {k: str(v) for k, v in as_dict(get(props, "labels")).items()}
        gpu = next((g for g in (aws_gpu(str(t)) for t in items(get(props, "instanceTypes"))) if g), None)
        ami = str(get(props, "amiType", default="")).upper()
        hint = ("GPU" in ami or "NVIDIA" in ami or labels.get("nvidia.com/gpu.present") == "true"
                or labels.get("modelfleet.io/hardware-class", "cpu") not in ("cpu", "system"))
        taints = [{"key": get(t, "key"), "value": get(t, "value"), "effect": get(t, "effect")}
                  for t in items(get(props, "taints"))]
        max_nodes = get(props, "scalingConfig", "maxSize")
        return Pool("EKS node group", gpu, labels, taints, int(max_nodes) if max_nodes is not None else None,
                    "scalingConfig.maxSize", hint)
    if resource_type == GKE_NODE_POOL:
        node = get(props, "nodeConfig")
        labels = {k: str(v) for k, v in as_dict(get(node, "labels")).items()}
        gpu = gcp_gpu(get(node, "machineType"), items(get(node, "guestAccelerators")))
        hint = labels.get("nvidia.com/gpu.present") == "true" or labels.get(
            "modelfleet.io/hardware-class", "cpu") not in ("cpu", "system")
        taints = [{"key": get(t, "key"), "value": get(t, "value"), "effect": get(t, "effect")}
                  for t in items(get(node, "taints"))]
        total = get(props, "autoscaling", "totalMaxNodeCount")
        per_zone = get(props, "autoscaling", "maxNodeCount")
        zones = len(items(get(props, "nodeLocations"))) or 1
        if total is not None:
            max_nodes, how = int(total), "autoscaling.totalMaxNodeCount"
        elif per_zone is not None:
            max_nodes, how = int(per_zone) * zones, f"autoscaling.maxNodeCount x {zones} zone(s)"
        else:
            fixed = get(props, "nodeCount", default=get(props, "initialNodeCount"))
            max_nodes, how = (int(fixed) * zones if fixed is not None else None), f"nodeCount x {zones} zone(s)"
        return Pool("GKE node pool", gpu, labels, taints, max_nodes, how, hint)
    return None
