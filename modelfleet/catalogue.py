"""The hardware and region catalogues: typed views over the data files under `modelfleet/data/`."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict

Cloud = Literal["aws", "gcp"]
CLOUDS: tuple[Cloud, ...] = ("aws", "gcp")


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeType(_Data):
    """A machine type and what one node costs."""

    instance_type: str
    vcpus: int
    memory_gib: int
    hourly_usd: float
    price_region: str
    price_date: str
    price_source: str


class Offering(NodeType):
    """One hardware class on one cloud: the node type that carries it, its accelerator, where it is offered."""

    accelerator: str | None = None
    gpus_per_node: int
    regions: tuple[str, ...]


class HardwareClass(_Data):
    description: str
    gpu_memory_gib: int
    aws: Offering | None = None
    gcp: Offering | None = None

    def on(self, cloud: Cloud) -> Offering | None:
        return getattr(self, cloud)


class SystemPool(_Data):
    aws: NodeType
    gcp: NodeType
    min_nodes: int
    max_nodes: int


class PlatformPrices(_Data):
    cluster_hourly_usd: float
    nat_gateway_hourly_usd: float
    interface_endpoint_hourly_usd: float = 0.0  # per interface endpoint per zone
    price_date: str
    price_source: str


class Platform(_Data):
    aws: PlatformPrices
    gcp: PlatformPrices


class Route53Prices(_Data):
    hosted_zone_monthly_usd: float
    health_check_monthly_usd: dict[Literal["aws", "other"], float]
    optional_feature_monthly_usd: dict[Literal["aws", "other"], float]
    queries_per_million_usd: dict[Literal["latency", "geolocation", "weighted", "failover"], float]
    price_date: str
    price_source: str


class RoutingPrices(_Data):
    route53: Route53Prices
    entry_load_balancer_hourly_usd: dict[Cloud, float]
    entry_price_date: str
    entry_price_source: str


class HardwareCatalogue(_Data):
    hours_per_month: int
    platform: Platform
    routing: RoutingPrices
    system_pool: SystemPool
    classes: dict[str, HardwareClass]


class RegionInfo(_Data):
    network_index: int
    zones: tuple[str, ...]


def _read(name: str) -> dict:
    return yaml.safe_load(resources.files("modelfleet.data").joinpath(name).read_text())


@cache
def hardware() -> HardwareCatalogue:
    return HardwareCatalogue.model_validate(_read("hardware.yaml"))


@cache
def regions() -> dict[Cloud, dict[str, RegionInfo]]:
    raw = _read("regions.yaml")
    return {cloud: {name: RegionInfo.model_validate(info) for name, info in raw[cloud].items()} for cloud in CLOUDS}
