"""The fleet plan: every decision about a stack, computed once, as plain immutable data.

Pure functions only — no Pulumi, no I/O beyond the read-only catalogues. Components turn these values into
resources and never compute a number themselves; tests check decisions here in milliseconds.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Literal

from modelfleet.catalogue import Cloud, hardware, regions
from modelfleet.loader import Fleet, region_networks
from modelfleet.spec import ModelSpec, RegionEntry, StackSpec

GPU_TAINT_KEY = "nvidia.com/gpu"
LABEL_PREFIX = "modelfleet.io"
# Triton's GPU image unpacks to about 20 GiB; the rest of a node's root volume caches model repositories.
IMAGE_CACHE_GIB = 40
MODEL_CACHE_GIB_PER_MODEL = 20
MIN_ROOT_VOLUME_GIB = 100


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


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

    @property
    def is_gpu(self) -> bool:
        return self.gpus_per_node > 0

    @property
    def max_gpus(self) -> int:
        return self.max_nodes * self.gpus_per_node


@dataclass(frozen=True)
class Placement:
    """One model in one region: where it runs and how many replicas."""

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


@dataclass(frozen=True)
class CostLine:
    item: str
    quantity: int
    hourly_usd_each: float

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
    pods_cidr: str  # GCP secondary range
    services_cidr: str  # GCP secondary range
    nat_gateways: int
    kubernetes_version: str
    endpoint_public_cidrs: tuple[str, ...]
    pools: tuple[PoolPlan, ...]
    placements: tuple[Placement, ...]
    cost: tuple[CostLine, ...]

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

    @property
    def monthly_usd(self) -> float:
        return round(sum(r.monthly_usd for r in self.regions), 2)

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)


def build_plan(fleet: Fleet) -> FleetPlan:
    stack = fleet.stack
    networks = region_networks(stack)
    region_plans = tuple(_region_plan(entry, networks[entry.region], stack, fleet.models) for entry in stack.regions)
    plan = FleetPlan(
        stack=fleet.stack_name,
        environment=stack.environment,
        dns_domain=stack.dns_domain,
        budget_monthly_usd=stack.budget_monthly_usd,
        gcp_project=stack.gcp_project,
        tags=tuple(sorted({"managed-by": "modelfleet", "stack": fleet.stack_name, **stack.required_tags}.items())),
        models=fleet.models,
        regions=region_plans,
    )
    return FleetPlan(**{**plan.__dict__, "warnings": _warnings(plan)})


def _region_plan(entry: RegionEntry, network: ipaddress.IPv4Network, stack: StackSpec,
                 models: tuple[ModelSpec, ...]) -> RegionPlan:
    cloud, name = entry.cloud, entry.name
    zones = regions()[cloud][name].zones
    quarters = list(network.subnets(prefixlen_diff=2))
    placements = tuple(_placement(model, entry) for model in models)
    pools = (_system_pool(cloud),) + _serving_pools(cloud, placements, models)
    nat = (len(zones) if stack.nat_layout == "per-zone" else 1) if cloud == "aws" else 1
    return RegionPlan(
        cloud=cloud,
        region=name,
        cidr=str(network),
        zones=zones,
        private_subnets=tuple(str(s) for s in quarters[: len(zones)]) if cloud == "aws"
        else (str(next(network.subnets(prefixlen_diff=4))),),
        public_subnets=tuple(str(s) for s in list(quarters[3].subnets(prefixlen_diff=4))[: len(zones)])
        if cloud == "aws" else (),
        pods_cidr=str(list(network.subnets(prefixlen_diff=1))[1]),
        services_cidr=str(list(network.subnets(prefixlen_diff=4))[1]),
        nat_gateways=nat,
        kubernetes_version=stack.kubernetes_version,
        endpoint_public_cidrs=tuple(str(c) for c in stack.cluster_endpoint.public_access_cidrs),
        pools=pools,
        placements=placements,
        cost=_cost(cloud, pools, nat),
    )


def _placement(model: ModelSpec, entry: RegionEntry) -> Placement:
    scaling = model.scaling
    rps = model.traffic.rps_in(entry.region)
    # Untuned: the declared bounds, running at least one replica while there is traffic.
    desired = min(scaling.max_replicas, max(scaling.min_replicas, 1 if rps > 0 else 0))
    return Placement(
        model=model.name,
        pool=pool_name(model.hardware.gpu_class, model.hardware.capacity),
        hardware_class=model.hardware.gpu_class,
        gpus_per_replica=model.hardware.gpus_per_replica,
        rps=rps,
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        desired_replicas=desired,
        tuned=False,
        source=model.source.on(entry.cloud) or "",
    )


def pool_name(hardware_class: str, capacity: str) -> str:
    prefix = "cpu" if hardware_class == "cpu" else f"gpu-{hardware_class.removeprefix('nvidia-')}"
    return prefix + ("-spot" if capacity == "spot" else "")


def _system_pool(cloud: Cloud) -> PoolPlan:
    system = hardware().system_pool
    node = getattr(system, cloud)
    return PoolPlan(
        name="system", hardware_class="system", instance_type=node.instance_type, accelerator=None, gpus_per_node=0,
        min_nodes=system.min_nodes, max_nodes=system.max_nodes, desired_nodes=system.min_nodes, capacity="on-demand",
        disk_gib=MIN_ROOT_VOLUME_GIB, hourly_usd_per_node=node.hourly_usd,
        labels=((f"{LABEL_PREFIX}/pool", "system"),), taints=(),
    )


def _serving_pools(cloud: Cloud, placements: tuple[Placement, ...], models: tuple[ModelSpec, ...]) -> tuple[PoolPlan, ...]:
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
            min_nodes=nodes(lambda p: p.min_replicas),
            max_nodes=nodes(lambda p: p.max_replicas),
            desired_nodes=nodes(lambda p: p.desired_replicas),
            capacity="spot" if pool.endswith("-spot") else "on-demand",
            disk_gib=max(MIN_ROOT_VOLUME_GIB, IMAGE_CACHE_GIB + MODEL_CACHE_GIB_PER_MODEL * len(members)),
            hourly_usd_per_node=offering.hourly_usd,
            labels=tuple(sorted(labels)),
            taints=(Taint(GPU_TAINT_KEY, "true", "NoSchedule"),) if is_gpu else (),
        ))
    return tuple(pools)


def _cost(cloud: Cloud, pools: tuple[PoolPlan, ...], nat_gateways: int) -> tuple[CostLine, ...]:
    platform = getattr(hardware().platform, cloud)
    lines = [CostLine("cluster control plane", 1, platform.cluster_hourly_usd)]
    if platform.nat_gateway_hourly_usd:
        lines.append(CostLine("NAT gateways", nat_gateways, platform.nat_gateway_hourly_usd))
    lines += [CostLine(f"pool {p.name} ({p.instance_type})", p.desired_nodes, p.hourly_usd_per_node) for p in pools]
    return tuple(lines)


def _warnings(plan: FleetPlan) -> tuple[str, ...]:
    out = []
    if plan.monthly_usd > plan.budget_monthly_usd:
        out.append(f"estimated ${plan.monthly_usd:,.0f}/month exceeds the budget of ${plan.budget_monthly_usd:,.0f}")
    untuned = sorted({p.model for r in plan.regions for p in r.placements if not p.tuned})
    if untuned:
        out.append(f"untuned (sized from declared bounds, not measurements): {', '.join(untuned)}")
    for model in plan.models:
        if model.scaling.scale_to_zero:
            out.append(f"{model.name} may scale to zero: the first request after idle waits for a node and a model load")
    return tuple(out)
