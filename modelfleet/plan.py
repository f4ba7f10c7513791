"""The fleet plan: every decision about a stack, computed once, as plain immutable data.

Pure functions only — no Pulumi, no I/O beyond the read-only catalogues. Components turn these values into
resources and never compute a number themselves; tests check decisions here in milliseconds.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Literal

from modelfleet.canary import max_replicas as canary_max_replicas, share as canary_share
from modelfleet.catalogue import Cloud, hardware, regions
from modelfleet.gateway.plan import GatewayPlan, gateway_plan
from modelfleet.loader import Fleet, region_networks
from modelfleet.routing.plan import RoutingPlan, routing_plan
from modelfleet.spec import ModelSpec, RegionEntry, StackSpec
from modelfleet.routing import failover as routing_failover
from modelfleet.tuning import capacity
from modelfleet.tuning.record import TuningRecord

GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = {"aws": "true", "gcp": "present"}
LABEL_PREFIX = "modelfleet.io"
# Triton's GPU image unpacks to about 20 GiB; the rest of a node's root volume caches model repositories.
IMAGE_CACHE_GIB = 40
MODEL_CACHE_GIB_PER_MODEL = 20
MIN_ROOT_VOLUME_GIB = 100

# Where Triton runs in every cluster; the serving components create the namespace and service account with
# the annotations the region's identity gives them.
TRITON_SERVICE_ACCOUNT = "triton"
# Image pulls (ECR) and credentials (STS) stay inside the VPC; S3 is a free gateway endpoint on the route tables.
AWS_INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts")
AWS_GATEWAY_ENDPOINTS = ("s3",)
EKS_CONTROL_PLANE_LOGS = ("api", "audit", "authenticator", "controllerManager", "scheduler")
# EKS picks 172.20.0.0/16 for services unless the VPC overlaps it; we decide it here so it is visible in the plan.
EKS_SERVICE_CIDRS = ("172.20.0.0/16", "10.100.0.0/16")
# Instance metadata: IMDSv2 only, one hop, so pods (one hop further) cannot read the node role's credentials
# and must use their own IRSA role.
IMDS_HOP_LIMIT = 1
GKE_RELEASE_CHANNEL = "REGULAR"
GKE_IMAGE = "COS_CONTAINERD"
# Not GKE's managed "DCGM" package: its metrics reach only Cloud Monitoring, and the GPU alerts run on the cluster's
# own Prometheus, fed by the pinned dcgm-exporter chart on both clouds (components/cluster_addons.py). One DCGM
# exporter per node, not two watching the same GPUs.
GKE_MONITORING = ("SYSTEM_COMPONENTS",)
# "DEFAULT" is the driver GKE qualifies for the node version; LATEST would float ahead of it.
GKE_GPU_DRIVER = "DEFAULT"
# The lowest-priority firewall rule GCP allows below its implied rules; anything GKE or we allow wins over it.
GCP_DENY_ALL_PRIORITY = 65534
GCP_FLOW_LOG_SAMPLING = 0.5
# GKE opens only 443 and 10250 from its control plane to the nodes. The control plane also calls the aggregated
# API servers and admission webhooks that run on them: KEDA's metrics server (6443) and webhooks (9443).
GKE_CONTROL_PLANE_TO_NODE_PORTS = (6443, 9443)
GCP_ALLOW_PRIORITY = 1000  # GCP's default priority: above the deny-all, like GKE's own allows
KMS_ROTATION_DAYS = 90
SECONDS_PER_DAY = 86_400
KMS_DELETION_WINDOW_DAYS = 30
# Cold start, in seconds (estimates to replace with measurements): Triton's start and the model repository's
# download from the bucket, the model load by backend, a fresh node becoming schedulable (GPU nodes also wait
# for the driver and device plugin), and pulling the Triton image onto a fresh node.
TRITON_START_S = 60
MODEL_LOAD_S = {"python": 120, "onnxruntime": 120, "pytorch": 180, "tensorrt": 300, "tensorflow": 180,
                "openvino": 120, "identity": 30, "fil": 120, "ensemble": 30,
                # LLM engines load many GiB of weights: a generous budget rather than a killed first start.
                "vllm": 900, "tensorrtllm": 900}
NODE_READY_S = {"cpu": 120, "gpu": 300}
IMAGE_PULL_S = 180
# GPU quotas a region must grant before its pools can reach their maximum (checked at creation: a pool whose
# autoscaler hits the quota just stays short, GKE refuses a pool whose initial nodes exceed it).
# GCP: regional quota metrics per accelerator (cloud.google.com/compute/resource-usage#gpu_quota); spot and
# preemptible VMs count against the PREEMPTIBLE_ metric.
GCP_GPU_QUOTA = {"nvidia-tesla-t4": "NVIDIA_T4_GPUS", "nvidia-l4": "NVIDIA_L4_GPUS", "nvidia-a10g": "NVIDIA_A10G_GPUS",
                 "nvidia-h100-80gb": "NVIDIA_H100_GPUS"}
# AWS: EC2 quotas count vCPUs per instance family (Service Quotas, service "ec2").
AWS_GPU_QUOTA = {
    ("g", "on-demand"): ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("g", "spot"): ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("p", "on-demand"): ("L-417A185B", "Running On-Demand P instances"),
    ("p", "spot"): ("L-7212CCBC", "All P Spot Instance Requests"),
}
# GCP APIs the program's resources call, each enabled before anything uses it (gcp.projects.Service): networks,
# firewalls, routers and NAT (compute); GKE (container); KMS keys (cloudkms); service accounts and custom roles
# (iam); project IAM members and the project lookup (cloudresourcemanager); bucket grants and objects (storage);
# GKE's logging and managed Prometheus (logging, monitoring); the gateway's image registry (artifactregistry), its
# rate-limit store (redis: Memorystore, direct peering, so no servicenetworking) and its secrets (secretmanager).
GCP_SERVICES = (
    "artifactregistry.googleapis.com", "cloudkms.googleapis.com", "cloudresourcemanager.googleapis.com",
    "cloudtrace.googleapis.com",  # the collector's googlecloud exporter (modelfleet/monitoring/tracing.py)
    "compute.googleapis.com", "container.googleapis.com", "iam.googleapis.com", "logging.googleapis.com", "monitoring.googleapis.com",
    "redis.googleapis.com", "secretmanager.googleapis.com", "storage.googleapis.com",
)
# Marks a retiring region's cluster (tag on EKS, label on GKE): the deletion-protection policy lets it through,
# since turning protection off is the first of the two deploys that remove a region.
RETIRING_LABEL = "modelfleet-retiring"
# A rollout's last steps after the first replica answers: minReadySeconds and a few readiness periods.
ROLLOUT_MARGIN_S = 60


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


@dataclass(frozen=True)
class FirewallRule:
    """One GCP ingress allow rule to the cluster's nodes."""

    name: str  # suffix of the resource name
    source_ranges: tuple[str, ...]
    protocol: str
    ports: tuple[int, ...]
    priority: int


@dataclass(frozen=True)
class AddonPlan:
    """One EKS managed add-on, at the default version EKS qualifies for the cluster's Kubernetes minor."""

    name: str
    # coredns is a Deployment: EKS reports it ACTIVE only once its pods run, so it waits for the nodes. The CNI
    # and kube-proxy (DaemonSets) come first: nodes are not Ready without them.
    after_nodes: bool
    configuration: tuple[tuple[str, str], ...] = ()  # configuration_values, as JSON


# Network policy enforcement by the VPC CNI's agent (the serving components declare NetworkPolicies).
EKS_ADDONS = (
    AddonPlan("vpc-cni", after_nodes=False, configuration=(("enableNetworkPolicy", "true"),)),
    AddonPlan("kube-proxy", after_nodes=False),
    AddonPlan("coredns", after_nodes=True),
)


@dataclass(frozen=True)
class PoolPlan:
    """One node pool: the system pool, or the pool of one hardware class and capacity type in a region."""

    name: str
    hardware_class: str  # a catalogue class, or "system"
    instance_type: str
    accelerator: str | None
    gpus_per_node: int
    min_nodes: int
    max_nodes: int
    desired_nodes: int
    capacity: Literal["on-demand", "spot"]
    disk_gib: int
    hourly_usd_per_node: float
    labels: tuple[tuple[str, str], ...]
    taints: tuple[Taint, ...]
    node_image: str  # EKS AMI type or GKE image type
    # GKE creates a regional pool with this many nodes in each zone (autoscaling bounds are totals). From the
    # pool's minimum, never from traffic: it is a create-time value (the node pool ignores later changes).
    initial_nodes_per_zone: int
    location_policy: str  # GKE autoscaler: ANY (where capacity is) or BALANCED (even zones); "" on AWS

    @property
    def is_gpu(self) -> bool:
        return self.gpus_per_node > 0

    @property
    def max_gpus(self) -> int:
        return self.max_nodes * self.gpus_per_node


@dataclass(frozen=True)
class CanaryPlan:
    """The canary Deployment of one model in one region (modelfleet.canary): the version it serves, its share of the
    region's requests, and its replicas, sized from that share like the stable's from the rest."""

    version: int
    stable_version: int
    percent: int
    rps: float
    min_replicas: int
    max_replicas: int
    desired_replicas: int
    needed_replicas: int | None = None


@dataclass(frozen=True)
class Placement:
    """One model in one region: where it runs and how many replicas (the stable Deployment's, when a canary takes
    a share of `rps`)."""

    model: str
    pool: str
    hardware_class: str
    gpus_per_replica: int
    rps: float
    min_replicas: int
    max_replicas: int
    desired_replicas: int
    tuned: bool
    source: str
    scale_to_zero: bool = False
    startup_budget_s: int = 0  # longest a replica may take from container start to ready (startup probe)
    cold_start_s: int = 0  # from zero replicas: a node, the image and the model load, before the first answer
    # Kubernetes' progressDeadlineSeconds and Pulumi's wait on the Deployment: a first rollout is a cold start
    # (new nodes, image pull, model load); shorter waits fail a `pulumi up` that would have succeeded.
    progress_deadline_s: int = 0
    deploy_timeout_s: int = 0
    # Measured sizing (modelfleet.tuning.capacity): replicas the traffic needs before the bounds, the record's
    # throughput per replica and p99 at the SLO, the record's path, and why a record was not used.
    needed_replicas: int | None = None
    throughput_per_replica: float | None = None
    p99_ms: float | None = None
    record: str = ""
    refused: str = ""
    canary: CanaryPlan | None = None

    @property
    def stable_rps(self) -> float:
        """The stable Deployment's requests per second: all of `rps` unless a canary takes its share."""
        return canary_share(self.rps, self.canary.percent)[0] if self.canary else self.rps

    def replicas(self, of: str) -> int:
        """`min_replicas`, `max_replicas` or `desired_replicas` of the stable and the canary together: what the node
        pool must hold."""
        return getattr(self, of) + (getattr(self.canary, of) if self.canary else 0)


@dataclass(frozen=True)
class BucketGrant:
    """Read access to one model's repository: `s3://bucket/prefix` or `gs://bucket/prefix`."""

    model: str
    bucket: str
    prefix: str  # without a trailing slash; "" means the whole bucket


@dataclass(frozen=True)
class IdentityPlan:
    """Who Triton is in a region: its Kubernetes service account, and the only objects it may read."""

    namespace: str
    service_account: str
    grants: tuple[BucketGrant, ...]
    cloud_account: str  # IAM role name prefix (AWS) or Google service account id (GCP)
    gcp_member: str  # the KSA as a GCP IAM member (workload identity); "" on AWS
    workload_pool: str  # GKE workload identity pool; "" on AWS
    # GCP: the project custom role holding storage.buckets.get (Triton's GetBucketMetadata); "" on AWS
    bucket_metadata_role_id: str = ""

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@dataclass(frozen=True)
class QuotaNeed:
    """A cloud quota the region must grant for its pools' maxima."""

    quota: str  # GCP metric (NVIDIA_L4_GPUS) or AWS quota code (L-DB2E81BA)
    description: str
    amount: int
    unit: str  # "GPUs" or "vCPUs"
    pools: tuple[str, ...]


@dataclass(frozen=True)
class CostLine:
    item: str
    quantity: int
    hourly_usd_each: float
    pool: str | None = None  # the node pool this line prices, if any

    @property
    def monthly_usd(self) -> float:
        return round(self.quantity * self.hourly_usd_each * hardware().hours_per_month, 2)


@dataclass(frozen=True)
class RegionPlan:
    cloud: Cloud
    region: str
    cidr: str
    zones: tuple[str, ...]
    private_subnets: tuple[str, ...]  # one per zone; nodes live here
    public_subnets: tuple[str, ...]  # one per zone, AWS only: load balancers and NAT
    pods_cidr: str  # GCP secondary range; "" on AWS, where pods take addresses from the private subnets
    services_cidr: str  # GCP secondary range; on AWS a range outside the VPC, as EKS requires
    nat_gateways: int
    kubernetes_version: str
    endpoint_public_cidrs: tuple[str, ...]
    pools: tuple[PoolPlan, ...]
    placements: tuple[Placement, ...]
    cost: tuple[CostLine, ...]
    cluster_name: str
    nat_routes: tuple[int, ...]  # per zone: the NAT gateway (index) its private subnet routes through
    master_cidr: str  # GKE control plane's /28 peering range, inside the region's range; "" on AWS
    interface_endpoints: tuple[str, ...]
    gateway_endpoints: tuple[str, ...]
    control_plane_logs: tuple[str, ...]
    log_retention_days: int
    release_channel: str  # GKE; "" on AWS
    deletion_protection: bool
    node_service_account: str  # GKE node identity's account id; "" on AWS (node role is name-prefixed)
    imds_hop_limit: int
    identity: IdentityPlan
    retiring: bool  # the stack marks the region `retire: true`: the first step of removing it
    # GKE: who reaches the control plane (the region's network, then the stack's endpoint CIDRs), as
    # (cidr, display name); the private endpoint answers from every region of the network (global access).
    master_authorized_cidrs: tuple[tuple[str, str], ...] = ()
    master_global_access: bool = False
    node_ingress: tuple[FirewallRule, ...] = ()  # GCP: allows to the nodes beyond GKE's own
    addons: tuple[AddonPlan, ...] = ()  # EKS managed add-ons
    kms_rotation_days: int = KMS_ROTATION_DAYS
    # EKS: IAM roles given cluster-admin access entries (the stack's CI/deployer roles); the identity running
    # `pulumi up` always gets one too, resolved at deploy time. () on GCP, where IAM grants cluster access.
    admin_role_arns: tuple[str, ...] = ()
    gpu_quotas: tuple[QuotaNeed, ...] = ()

    @property
    def kms_rotation_period(self) -> str:
        """GCP's rotation period: seconds, with the unit."""
        return f"{self.kms_rotation_days * SECONDS_PER_DAY}s"

    @property
    def retiring_labels(self) -> dict[str, str]:
        return {RETIRING_LABEL: "true"} if self.retiring else {}

    @property
    def endpoint_private_only(self) -> bool:
        return not self.endpoint_public_cidrs

    @property
    def key(self) -> str:
        """`aws-us-east-1`: the prefix of every resource name in this region."""
        return f"{self.cloud}-{self.region}"

    @property
    def ref(self) -> str:
        return f"{self.cloud}:{self.region}"

    @property
    def monthly_usd(self) -> float:
        return round(sum(line.monthly_usd for line in self.cost), 2)


@dataclass(frozen=True)
class FleetPlan:
    stack: str
    environment: str
    dns_domain: str
    budget_monthly_usd: float
    gcp_project: str | None
    tags: tuple[tuple[str, str], ...]
    models: tuple[ModelSpec, ...]
    regions: tuple[RegionPlan, ...]
    warnings: tuple[str, ...] = field(default=())
    capacity_headroom: float = 1.3
    gcp_services: tuple[str, ...] = ()  # APIs to enable in gcp_project before anything else (GCP regions only)
    # The stack's deployer access is the example's placeholder (modelfleet:cluster_endpoint.placeholder).
    deployer_access_placeholder: bool = False
    tuning: dict[tuple[str, str], TuningRecord] = field(default_factory=dict)  # the loader's records
    gateway: GatewayPlan | None = None  # modelfleet.gateway.plan: routes, auth, limits, inspection per model
    routing: RoutingPlan | None = None  # modelfleet.routing.plan: global records and health checks
    gateway_image_digest: str | None = None  # the inspection service image the cloud gateway runs (stack key)
    # The scale path (stack keys role, role_region, region_stacks): which part of the fleet this stack deploys.
    role: str = "all"
    role_region: str | None = None
    region_stacks: tuple[tuple[str, str], ...] = ()

    @property
    def monthly_usd(self) -> float:
        """Every region's cost and, with global routing, Route53's (`global_cost`)."""
        return round(sum(r.monthly_usd for r in self.regions) + sum(line.monthly_usd for line in self.global_cost), 2)

    @property
    def global_cost(self) -> tuple[CostLine, ...]:
        """What the fleet pays outside any region: Route53's zone and health checks (modelfleet.routing.cost)."""
        from modelfleet.routing.cost import dns_cost_lines  # the routing package imports this module

        return dns_cost_lines(self.routing, self.regions) if self.routing else ()

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    @property
    def gcp_gpus_all_regions(self) -> int:
        """GCP's project-wide GPUS_ALL_REGIONS quota must cover every GCP region's GPU pools at their maxima."""
        return sum(q.amount for r in self.regions if r.cloud == "gcp" for q in r.gpu_quotas)


def build_plan(fleet: Fleet) -> FleetPlan:
    stack = fleet.stack
    networks = region_networks(stack)
    region_plans = tuple(_region_plan(entry, networks[entry.region], stack, fleet) for entry in stack.regions)
    plan = FleetPlan(
        stack=fleet.stack_name,
        environment=stack.environment,
        dns_domain=stack.dns_domain,
        budget_monthly_usd=stack.budget_monthly_usd,
        gcp_project=stack.gcp_project,
        tags=tuple(sorted({"managed-by": "modelfleet", "stack": fleet.stack_name, **stack.required_tags}.items())),
        models=fleet.models,
        regions=region_plans,
        capacity_headroom=stack.capacity_headroom,
        deployer_access_placeholder=stack.cluster_endpoint.placeholder,
        gcp_services=GCP_SERVICES if any(r.cloud == "gcp" for r in region_plans) else (),
        tuning=dict(fleet.tuning),
        gateway=gateway_plan(stack, fleet.models),
        routing=routing_plan(stack, fleet.models),
        gateway_image_digest=stack.gateway.inspector_image_digest,
        role=stack.role,
        role_region=stack.role_region,
        region_stacks=tuple(sorted(stack.region_stacks.items())),
    )
    return FleetPlan(**{**plan.__dict__, "warnings": _warnings(plan)})


def _region_plan(entry: RegionEntry, network: ipaddress.IPv4Network, stack: StackSpec, fleet: Fleet) -> RegionPlan:
    models = fleet.models
    cloud, name = entry.cloud, entry.name
    zones = regions()[cloud][name].zones
    quarters = list(network.subnets(prefixlen_diff=2))
    sixteenths = list(network.subnets(prefixlen_diff=4))
    placements = tuple(_placement(model, entry, stack, fleet.tuning) for model in models)
    pools = (_system_pool(cloud, len(zones)),) + _serving_pools(cloud, placements, models, len(zones))
    nat = (len(zones) if stack.nat_layout == "per-zone" else 1) if cloud == "aws" else 1
    is_aws = cloud == "aws"
    prod = stack.environment == "prod"
    endpoint_cidrs = tuple(str(c) for c in stack.cluster_endpoint.public_access_cidrs)
    # The first /28 of the region's third /20: unused by the subnet (first /20) and services (second /20).
    master_cidr = "" if is_aws else str(next(sixteenths[2].subnets(new_prefix=28)))
    interface_endpoints = AWS_INTERFACE_ENDPOINTS if is_aws else ()
    return RegionPlan(
        cloud=cloud,
        region=name,
        cidr=str(network),
        zones=zones,
        private_subnets=tuple(str(s) for s in quarters[: len(zones)]) if cloud == "aws"
        else (str(next(network.subnets(prefixlen_diff=4))),),
        public_subnets=tuple(str(s) for s in list(quarters[3].subnets(prefixlen_diff=4))[: len(zones)])
        if cloud == "aws" else (),
        pods_cidr="" if is_aws else str(list(network.subnets(prefixlen_diff=1))[1]),
        services_cidr=_eks_service_cidr(network) if is_aws else str(sixteenths[1]),
        nat_gateways=nat,
        kubernetes_version=stack.kubernetes_version,
        endpoint_public_cidrs=endpoint_cidrs,
        pools=pools,
        placements=placements,
        cost=_cost(cloud, pools, nat, len(interface_endpoints) * len(zones), stack.routing_enabled),
        cluster_name=cluster_name(fleet.stack_name, entry),
        nat_routes=tuple(min(i, nat - 1) for i in range(len(zones))) if is_aws else (),
        master_cidr=master_cidr,
        interface_endpoints=interface_endpoints,
        gateway_endpoints=AWS_GATEWAY_ENDPOINTS if is_aws else (),
        control_plane_logs=EKS_CONTROL_PLANE_LOGS if is_aws else ("SYSTEM_COMPONENTS", "APISERVER", "WORKLOADS"),
        # A year of audit trail in production (CloudWatch accepts 365), a month elsewhere.
        log_retention_days=365 if prod else 30,
        release_channel="" if is_aws else GKE_RELEASE_CHANNEL,
        # A retiring region (the first step of removing it) drops its protection so the next step can delete it.
        deletion_protection=prod and not entry.retire,
        node_service_account="" if is_aws else gcp_account_id(stack.environment, "nodes", name),
        imds_hop_limit=IMDS_HOP_LIMIT,
        identity=_identity(entry, stack, placements),
        retiring=entry.retire,
        master_authorized_cidrs=() if is_aws else ((str(network), f"{cloud}-{name} network"),) + tuple(
            (cidr, f"stack endpoint access {cidr}") for cidr in endpoint_cidrs),
        master_global_access=not is_aws,
        node_ingress=() if is_aws else (FirewallRule(
            "control-plane-webhooks", (master_cidr,), "tcp", GKE_CONTROL_PLANE_TO_NODE_PORTS, GCP_ALLOW_PRIORITY),),
        addons=EKS_ADDONS if is_aws else (),
        admin_role_arns=tuple(stack.cluster_endpoint.admin_role_arns) if is_aws else (),
        gpu_quotas=_gpu_quotas(cloud, pools),
    )


def cluster_name(stack_name: str, entry: RegionEntry) -> str:
    """The EKS/GKE cluster's name; the loader checks it against each cloud's limit before any plan is built."""
    return f"{stack_name}-{entry.cloud}-{entry.name}"


def _gpu_quotas(cloud: Cloud, pools: tuple[PoolPlan, ...]) -> tuple[QuotaNeed, ...]:
    """What each quota must allow for every GPU pool of the region at its maximum size at once."""
    needs: dict[str, tuple[str, int, str, list[str]]] = {}
    for pool in pools:
        if not pool.is_gpu:
            continue
        if cloud == "gcp":
            metric = ("PREEMPTIBLE_" if pool.capacity == "spot" else "") + GCP_GPU_QUOTA[pool.accelerator or ""]
            description = f"{pool.accelerator} GPUs" + (" (spot)" if pool.capacity == "spot" else "")
            amount, unit = pool.max_gpus, "GPUs"
        else:
            metric, description = AWS_GPU_QUOTA[(pool.instance_type[0], pool.capacity)]
            vcpus = next(o.vcpus for c in hardware().classes.values() if (o := c.on("aws")) is not None
                         and o.instance_type == pool.instance_type)
            amount, unit = pool.max_nodes * vcpus, "vCPUs"
        _, total, _, names = needs.get(metric, (description, 0, unit, []))
        needs[metric] = (description, total + amount, unit, names + [pool.name])
    return tuple(QuotaNeed(metric, d, amount, unit, tuple(names))
                 for metric, (d, amount, unit, names) in sorted(needs.items()))


def _eks_service_cidr(network: ipaddress.IPv4Network) -> str:
    return next(c for c in EKS_SERVICE_CIDRS if not ipaddress.IPv4Network(c).overlaps(network))


def gcp_account_id(environment: str, role: str, region: str) -> str:
    """`<environment>-<role>-<region>`, whole: a cut id could give two regions one account."""
    account = f"{environment}-{role}-{region}"
    # Service account ids are 6-30 characters; every catalogue region fits, a longer one must not slip by.
    assert 6 <= len(account) <= 30, f"service account id {account!r} does not fit GCP's 30 characters"
    return account


def _identity(entry: RegionEntry, stack: StackSpec, placements: tuple[Placement, ...]) -> IdentityPlan:
    namespace = f"modelfleet-{stack.environment}"
    grants = []
    for placement in placements:
        bucket, _, prefix = placement.source.split("://", 1)[1].partition("/")
        grants.append(BucketGrant(placement.model, bucket, prefix.strip("/")))
    is_gcp = entry.cloud == "gcp"
    return IdentityPlan(
        namespace=namespace,
        service_account=TRITON_SERVICE_ACCOUNT,
        grants=tuple(sorted(set(grants), key=lambda g: (g.bucket, g.prefix, g.model))),
        cloud_account=gcp_account_id(stack.environment, "triton", entry.name) if is_gcp
        else f"{stack.environment}-triton-{entry.name}",
        gcp_member=f"serviceAccount:{stack.gcp_project}.svc.id.goog[{namespace}/{TRITON_SERVICE_ACCOUNT}]"
        if is_gcp else "",
        workload_pool=f"{stack.gcp_project}.svc.id.goog" if is_gcp else "",
        # Custom role ids allow letters, digits, `_` and `.` (3-64): one per environment and region, so two stacks
        # in one project never share (or delete) each other's role.
        bucket_metadata_role_id=f"modelfleet.{stack.environment}.tritonBucketMetadata.{entry.name.replace('-', '_')}"
        if is_gcp else "",
    )


def _placement(model: ModelSpec, entry: RegionEntry, stack: StackSpec | None = None,
               tuning: dict[tuple[str, str], TuningRecord] | None = None) -> Placement:
    scaling = model.scaling
    rps = model.traffic.rps_in(entry.region)
    headroom = stack.capacity_headroom if stack else 1.0
    rollout = model.rollout
    canary = None
    stable_rps = rps
    if rollout.canary_version is not None:
        # Each Deployment is sized for the share the routes send it (modelfleet.canary.weights).
        stable_rps, canary_rps = canary_share(rps, rollout.canary_percent)
        ceiling = canary_max_replicas(scaling.max_replicas, rollout.canary_percent)
        floor = min(scaling.min_replicas, 1)  # one canary replica, or none for a model that may scale to zero
        sized_canary = capacity.size(model, model.hardware.gpu_class, canary_rps, headroom, tuning or {},
                                     bounds=(floor, ceiling))
        canary = CanaryPlan(version=rollout.canary_version, stable_version=model.version,
                            percent=rollout.canary_percent, rps=canary_rps, min_replicas=floor, max_replicas=ceiling,
                            desired_replicas=sized_canary.desired, needed_replicas=sized_canary.needed)
    # Tuned: from the measured throughput per replica at the SLO; untuned: the declared bounds, running at least
    # one replica while there is traffic (modelfleet.tuning.capacity).
    sized = capacity.size(model, model.hardware.gpu_class, stable_rps, headroom, tuning or {})
    return Placement(
        model=model.name,
        pool=pool_name(model.hardware.gpu_class, model.hardware.capacity),
        hardware_class=model.hardware.gpu_class,
        gpus_per_replica=model.hardware.gpus_per_replica,
        rps=rps,
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        desired_replicas=sized.desired,
        tuned=sized.tuned,
        source=model.source.uri(entry.cloud, entry.name) or "",
        scale_to_zero=scaling.scale_to_zero,
        startup_budget_s=startup_budget_s(model),
        cold_start_s=cold_start_s(model),
        progress_deadline_s=cold_start_s(model) + ROLLOUT_MARGIN_S,
        deploy_timeout_s=cold_start_s(model) + 2 * ROLLOUT_MARGIN_S,
        needed_replicas=sized.needed,
        throughput_per_replica=sized.throughput_per_replica,
        p99_ms=sized.p99_ms,
        record=sized.record,
        refused=sized.refused,
        canary=canary,
    )


def startup_budget_s(model: ModelSpec) -> int:
    """Seconds from container start to ready: the server, the repository download and the model load."""
    return TRITON_START_S + MODEL_LOAD_S[model.backend]


def cold_start_s(model: ModelSpec) -> int:
    """Seconds from zero replicas to the first answer: a new node, the Triton image, then the startup budget."""
    node = NODE_READY_S["gpu" if model.hardware.is_gpu else "cpu"]
    return node + IMAGE_PULL_S + startup_budget_s(model)


def pool_name(hardware_class: str, capacity: str) -> str:
    prefix = "cpu" if hardware_class == "cpu" else f"gpu-{hardware_class.removeprefix('nvidia-')}"
    return prefix + ("-spot" if capacity == "spot" else "")


def _node_image(cloud: Cloud, is_gpu: bool) -> str:
    if cloud == "gcp":
        return GKE_IMAGE
    # The EKS accelerated AL2023 AMI ships the NVIDIA driver and container toolkit; the device plugin is ours.
    return "AL2023_x86_64_NVIDIA" if is_gpu else "AL2023_x86_64_STANDARD"


def _per_zone(min_nodes: int, zones: int) -> int:
    """Nodes per zone at creation: the fewest that meet the pool's minimum (0 for a pool that may be empty)."""
    return math.ceil(min_nodes / zones)


def _location_policy(cloud: Cloud, is_gpu: bool, capacity: str) -> str:
    if cloud != "gcp":
        return ""
    # GPUs and spot capacity come where they are available, not evenly.
    return "ANY" if is_gpu or capacity == "spot" else "BALANCED"


def _system_pool(cloud: Cloud, zones: int) -> PoolPlan:
    system = hardware().system_pool
    node = getattr(system, cloud)
    return PoolPlan(
        name="system", hardware_class="system", instance_type=node.instance_type, accelerator=None, gpus_per_node=0,
        min_nodes=system.min_nodes, max_nodes=system.max_nodes, desired_nodes=system.min_nodes, capacity="on-demand",
        disk_gib=MIN_ROOT_VOLUME_GIB, hourly_usd_per_node=node.hourly_usd,
        labels=((f"{LABEL_PREFIX}/pool", "system"),), taints=(),
        node_image=_node_image(cloud, False), initial_nodes_per_zone=_per_zone(system.min_nodes, zones),
        location_policy=_location_policy(cloud, False, "on-demand"),
    )


def _serving_pools(cloud: Cloud, placements: tuple[Placement, ...], models: tuple[ModelSpec, ...],
                   zones: int) -> tuple[PoolPlan, ...]:
    pools = []
    for pool in sorted({p.pool for p in placements}):
        members = [p for p in placements if p.pool == pool]
        first = members[0]
        offering = hardware().classes[first.hardware_class].on(cloud)
        assert offering is not None, "the loader rejects hardware a region does not offer"
        # A CPU node runs one replica; a GPU node runs as many as its GPUs hold.
        slots = offering.gpus_per_node or 1

        def nodes(replicas_of) -> int:
            return math.ceil(sum(replicas_of(p) * max(p.gpus_per_replica, 1) for p in members) / slots)

        is_gpu = offering.gpus_per_node > 0
        labels = [(f"{LABEL_PREFIX}/pool", pool), (f"{LABEL_PREFIX}/hardware-class", first.hardware_class)]
        if is_gpu:
            labels.append(("nvidia.com/gpu.present", "true"))
        pools.append(PoolPlan(
            name=pool,
            hardware_class=first.hardware_class,
            instance_type=offering.instance_type,
            accelerator=offering.accelerator,
            gpus_per_node=offering.gpus_per_node,
            min_nodes=nodes(lambda p: p.replicas("min_replicas")),
            max_nodes=nodes(lambda p: p.replicas("max_replicas")),
            desired_nodes=nodes(lambda p: p.replicas("desired_replicas")),
            capacity="spot" if pool.endswith("-spot") else "on-demand",
            disk_gib=max(MIN_ROOT_VOLUME_GIB, IMAGE_CACHE_GIB + MODEL_CACHE_GIB_PER_MODEL * len(members)),
            hourly_usd_per_node=offering.hourly_usd,
            labels=tuple(sorted(labels)),
            # GKE taints its GPU nodes nvidia.com/gpu=present:NoSchedule itself; declaring the same taint keeps one
            # taint per key and effect, as Kubernetes requires. EKS adds none, so the plan's is the only one there.
            taints=(Taint(GPU_TAINT_KEY, GPU_TAINT_VALUE[cloud], "NoSchedule"),) if is_gpu else (),
            node_image=_node_image(cloud, is_gpu),
            initial_nodes_per_zone=_per_zone(nodes(lambda p: p.replicas("min_replicas")), zones),
            location_policy=_location_policy(cloud, is_gpu, "spot" if pool.endswith("-spot") else "on-demand"),
        ))
    return tuple(pools)


def _cost(cloud: Cloud, pools: tuple[PoolPlan, ...], nat_gateways: int,
          interface_endpoint_zones: int, routed: bool = False) -> tuple[CostLine, ...]:
    platform = getattr(hardware().platform, cloud)
    lines = [CostLine("cluster control plane", 1, platform.cluster_hourly_usd)]
    if routed:  # global routing's internet-facing entry in front of the gateway (routing.endpoint)
        lines.append(CostLine("global entry load balancer", 1,
                              hardware().routing.entry_load_balancer_hourly_usd[cloud]))
    if platform.nat_gateway_hourly_usd:
        lines.append(CostLine("NAT gateways", nat_gateways, platform.nat_gateway_hourly_usd))
    if platform.interface_endpoint_hourly_usd and interface_endpoint_zones:
        # Billed per endpoint per zone it has an interface in.
        lines.append(CostLine("interface endpoints (per zone)", interface_endpoint_zones,
                              platform.interface_endpoint_hourly_usd))
    lines += [CostLine(f"pool {p.name} ({p.instance_type})", p.desired_nodes, p.hourly_usd_per_node, pool=p.name)
              for p in pools]
    return tuple(lines)


def _warnings(plan: FleetPlan) -> tuple[str, ...]:
    out = []
    if plan.monthly_usd > plan.budget_monthly_usd:
        out.append(f"estimated ${plan.monthly_usd:,.0f}/month exceeds the budget of ${plan.budget_monthly_usd:,.0f}")
    for region in plan.regions:
        if region.retiring:
            out.append(f"{region.ref} is retiring: its deletion protection is off; once this is deployed, remove "
                       "it from modelfleet:regions and deploy again to delete it")
    untuned = sorted({p.model for r in plan.regions for p in r.placements if not p.tuned})
    if untuned:
        out.append(f"untuned (sized from declared bounds, not measurements): {', '.join(untuned)}")
    for model in plan.models:
        if model.scaling.scale_to_zero:
            out.append(f"{model.name} may scale to zero: the first request after idle waits about "
                       f"{cold_start_s(model)} s for a node and a model load")
    for region in plan.regions:
        for pool in region.pools:
            if region.cloud == "gcp" and pool.initial_nodes_per_zone * len(region.zones) > pool.max_nodes:
                out.append(f"{region.ref} pool {pool.name} starts with {pool.initial_nodes_per_zone} node(s) in each "
                           f"of {len(region.zones)} zones, above its maximum of {pool.max_nodes}; raise the "
                           "models' max_replicas")
    out.extend(capacity.warnings(plan))
    out.extend(routing_failover.warnings(plan))
    return tuple(out)
