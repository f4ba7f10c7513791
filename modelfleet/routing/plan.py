"""Global routing as plain data: Route53 health checks and record sets for `<model>.<dns_domain>`.

Pure: from the stack, the models' `routing` sections and `modelfleet/data/latency_keys.yaml`. The global
component (`components/routing.py`) declares exactly these records; the failover proof (`failover.py`) and the
policies read the same names.

Names, one zone (dns_domain):
- `<cloud>-<region>.<domain>`: each region's gateway (alias to the AWS NLB, A record to the GCP LB address). The
  health checks probe this name (Host and SNI match the Gateway's listener and certificate; the LB's own name
  would not), and every routed record aliases to it.
- `<model>.<domain>`: what clients call. One name per model, not one name with path routing: the records, the
  health checks (each model's readiness path), the policy (latency or failover), the canary and the residency are
  per model, and a region where one model is down keeps serving the others.
  latency: one latency record per region (key: the AWS region, or the nearest one for GCP), each with its
  region's health check. failover: PRIMARY and SECONDARY. A canary: weighted records over `all.<model>` (the
  latency set without the canary region) and the canary region. Residency: geolocation records; a continent with
  residency answers from `<continent>.<model>`, a latency set of its regions only, and never evaluates their
  health (Route53 would fall back to the default record, abroad); the default `*` answers from `all.<model>`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Literal

import yaml

from modelfleet.spec import ModelSpec, StackSpec

LATENCY_KEYS_FILE = "modelfleet/data/latency_keys.yaml"
HTTPS_PORT = 443
ALL_SET = "all"  # the latency set of every region, under a canary or a residency split
DEFAULT_CONTINENT = "*"  # Route53's default geolocation record


class RoutingError(ValueError):
    """The routing a stack asks for cannot be declared; `str()` names the field and the fix."""


@dataclass(frozen=True)
class Location:
    latency_key: str  # the AWS region Route53 measures latency to
    continent: str
    at: tuple[float, float]
    reason: str = ""


@cache
def locations() -> dict[str, Location]:
    """`aws:us-east-1` -> where it is and which AWS region stands for it in latency records."""
    data = yaml.safe_load(resources.files("modelfleet").joinpath("data/latency_keys.yaml").read_text())
    out = {}
    for cloud, entries in data.items():
        for name, e in entries.items():
            out[f"{cloud}:{name}"] = Location(e.get("key", name), e["continent"], tuple(e["at"]), e.get("reason", ""))
    return out


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance: the plan's stand-in for the latency Route53 measures."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371 * math.asin(math.sqrt(h))


@dataclass(frozen=True)
class RegionEndpoint:
    region: str  # aws:us-east-1
    cloud: str
    name: str  # aws-us-east-1.<domain>
    latency_key: str
    continent: str
    at: tuple[float, float]

    @property
    def key(self) -> str:
        return self.region.replace(":", "-")


@dataclass(frozen=True)
class HealthCheckPlan:
    name: str  # resource name, <model>-<region key>
    model: str
    region: str
    fqdn: str
    port: int
    type: str
    resource_path: str
    request_interval: int
    failure_threshold: int


@dataclass(frozen=True)
class RecordPlan:
    name: str
    policy: Literal["simple", "latency", "failover", "weighted", "geolocation"]
    alias_name: str  # the record in this zone it answers with
    set_identifier: str = ""
    health_check: str = ""  # HealthCheckPlan.name
    evaluate_target_health: bool = False
    latency_region: str = ""
    failover: str = ""  # PRIMARY | SECONDARY
    weight: int | None = None
    continent: str = ""  # Route53 code (EU) or "*"
    region: str = ""  # the region this record answers with, when it is one region's


@dataclass(frozen=True)
class ModelRouting:
    model: str
    fqdn: str
    policy: str
    records: tuple[RecordPlan, ...]
    health_checks: tuple[HealthCheckPlan, ...]
    residency: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (continent, regions)
    canary: tuple[str, int] | None = None
    primary: tuple[str, ...] = ()  # failover: (primary, secondary)
    # The second layer (modelfleet.routing.envoy_failover): each region's gateway sends this model's overflow and
    # failures to this peer region; within the residency set for a resident region.
    fallback: tuple[tuple[str, str], ...] = ()

    def residency_of(self, region: str) -> tuple[str, tuple[str, ...]] | None:
        return next(((c, rs) for c, rs in self.residency if region in rs), None)


@dataclass(frozen=True)
class RoutingPlan:
    domain: str
    existing_zone: str | None
    provider_region: str
    ttl_s: int
    request_interval_s: int
    failure_threshold: int
    regions: tuple[RegionEndpoint, ...]
    models: tuple[ModelRouting, ...]
    certificate_names: tuple[str, ...] = field(default=())

    @property
    def detection_s(self) -> int:
        """Route53 marks a region unhealthy after this many seconds of failed probes."""
        return self.request_interval_s * self.failure_threshold

    @property
    def clients_move_s(self) -> int:
        """Worst case until a client that resolved just before detection asks again and gets another region."""
        return self.detection_s + self.ttl_s

    @property
    def zone_name(self) -> str:
        return self.existing_zone or self.domain

    def region(self, ref: str) -> RegionEndpoint:
        return next(r for r in self.regions if r.region == ref)

    def model(self, name: str) -> ModelRouting:
        return next(m for m in self.models if m.model == name)

    @property
    def regional_records(self) -> tuple[RecordPlan, ...]:
        return tuple(RecordPlan(r.name, "simple", "", region=r.region) for r in self.regions)

    @property
    def records(self) -> tuple[RecordPlan, ...]:
        return self.regional_records + tuple(rec for m in self.models for rec in m.records)

    @property
    def health_checks(self) -> tuple[HealthCheckPlan, ...]:
        return tuple(hc for m in self.models for hc in m.health_checks)


def problems(stack: StackSpec, models: tuple[ModelSpec, ...]) -> list[tuple[str, tuple, str]]:
    """(model or "", field path, message) for routing the stack cannot declare; the loader adds file and line."""
    if not stack.routing_enabled:
        return []
    out = []
    refs = [r.region for r in stack.regions]
    where = locations()
    keys = [where[r].latency_key for r in refs if r in where]
    missing = [r for r in refs if r not in where]
    for r in missing:
        out.append(("", ("regions",), f"{r} has no entry in {LATENCY_KEYS_FILE}; add its location and latency key"))
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        both = [r for r in refs if r in where and where[r].latency_key in dup]
        out.append(("", ("regions",), f"{', '.join(both)} share the latency key {dup[0]} ({LATENCY_KEYS_FILE}): "
                                      "Route53 would not tell them apart; keep one of them in this stack"))
    for m in models:
        rt = m.routing
        for continent, regions in rt.residency.items():
            # A model lists every region that may hold its clients' data; a stack runs some of them.
            if not set(regions) & set(refs):
                out.append((m.name, ("routing", "residency", continent),
                            f"none of {', '.join(regions)} is a region of this stack ({', '.join(refs)}): "
                            f"{continent} clients would have no region to go to"))
            for r in regions:
                if r not in where:
                    out.append((m.name, ("routing", "residency", continent), f"unknown region {r}"))
                elif where[r].continent != continent:
                    out.append((m.name, ("routing", "residency", continent),
                                f"{r} is in {where[r].continent}, not {continent}: its clients' data would leave "
                                f"{continent}; list only {continent} regions"))
        if rt.canary and rt.canary.region not in refs:
            out.append((m.name, ("routing", "canary", "region"), f"{rt.canary.region} is not a region of this stack"))
        if rt.canary and len(refs) < 2:
            out.append((m.name, ("routing", "canary"), "a canary needs at least two regions"))
        if rt.policy == "failover" and len(refs) < 2:
            out.append((m.name, ("routing", "policy"), "failover needs at least two regions"))
    return out


def routing_plan(stack: StackSpec, models: tuple[ModelSpec, ...]) -> RoutingPlan | None:
    if not stack.routing_enabled:
        return None
    found = problems(stack, models)
    if found:
        raise RoutingError("; ".join(f"{m or 'stack'} {'.'.join(p)}: {msg}" for m, p, msg in found))
    domain = stack.dns_domain
    where = locations()
    regions = tuple(RegionEndpoint(r.region, r.cloud, f"{r.region.replace(':', '-')}.{domain}",
                                   where[r.region].latency_key, where[r.region].continent, where[r.region].at)
                    for r in stack.regions)
    hc = stack.routing.health_check
    routed = tuple(_model_routing(m, regions, domain, hc.request_interval_s, hc.failure_threshold) for m in models)
    return RoutingPlan(
        domain=domain, existing_zone=stack.routing.existing_zone, provider_region=stack.routing.provider_region,
        ttl_s=stack.routing.ttl_s, request_interval_s=hc.request_interval_s, failure_threshold=hc.failure_threshold,
        regions=regions, models=routed,
        # What each regional gateway's certificate must cover: its own name (health checks), every model's name.
        certificate_names=tuple(sorted({r.name for r in regions} | {m.fqdn for m in routed})),
    )


def nearest(origin: RegionEndpoint, candidates: list[RegionEndpoint]) -> RegionEndpoint | None:
    """The candidate Route53 would answer a client near `origin` with: the lowest latency, here the shortest
    distance between latency keys' locations (ties: the stack's order)."""
    if not candidates:
        return None
    where = locations()
    return min(candidates, key=lambda c: distance_km(origin.at, where[f"aws:{c.latency_key}"].at))


def _model_routing(model: ModelSpec, regions: tuple[RegionEndpoint, ...], domain: str, interval: int,
                   threshold: int) -> ModelRouting:
    rt = model.routing
    fqdn = f"{model.name}.{domain}"
    # Through the gateway's open health route for this model (routing.endpoint), which rewrites to
    # routing.health_check_path on the model's own Triton.
    checks = tuple(HealthCheckPlan(f"{model.name}-{r.key}", model.name, r.region, r.name, HTTPS_PORT, "HTTPS",
                                   f"/health/{model.name}", interval, threshold) for r in regions)
    check = {hc.region: hc.name for hc in checks}

    def latency_set(name: str, members: list[RegionEndpoint]) -> list[RecordPlan]:
        return [RecordPlan(name, "latency", r.name, set_identifier=r.key, health_check=check[r.region],
                           latency_region=r.latency_key, region=r.region) for r in members]

    records: list[RecordPlan] = []
    primary: tuple[str, ...] = ()
    canary = (rt.canary.region, rt.canary.percent) if rt.canary else None
    if rt.policy == "failover":
        first = regions[0]
        second = nearest(first, list(regions[1:]))
        assert second is not None, "problems() refuses failover with one region"
        primary = (first.region, second.region)
        records = [RecordPlan(fqdn, "failover", r.name, set_identifier=f"{role.lower()}-{r.key}",
                              health_check=check[r.region], failover=role, region=r.region)
                   for role, r in (("PRIMARY", first), ("SECONDARY", second))]
    elif rt.residency:
        for continent, members in sorted(rt.residency.items()):
            inner = f"{continent}.{fqdn}"
            # No health evaluation here: with every resident region down Route53 would otherwise fall back to the
            # default record and send these clients abroad. Inside the set, the health checks fail over.
            records.append(RecordPlan(fqdn, "geolocation", inner, set_identifier=f"geo-{continent}",
                                      continent=continent.upper(), evaluate_target_health=False))
            records += latency_set(inner, [r for r in regions if r.region in members])
        records.append(RecordPlan(fqdn, "geolocation", f"{ALL_SET}.{fqdn}", set_identifier="geo-default",
                                  continent=DEFAULT_CONTINENT, evaluate_target_health=True))
        records += latency_set(f"{ALL_SET}.{fqdn}", list(regions))
    elif canary:
        stable = [r for r in regions if r.region != canary[0]]
        target = next(r for r in regions if r.region == canary[0])
        records = [
            RecordPlan(fqdn, "weighted", f"{ALL_SET}.{fqdn}", set_identifier="stable", weight=100 - canary[1],
                       evaluate_target_health=True),
            RecordPlan(fqdn, "weighted", target.name, set_identifier=f"canary-{target.key}", weight=canary[1],
                       health_check=check[target.region], region=target.region),
        ] + latency_set(f"{ALL_SET}.{fqdn}", stable)
    else:
        records = latency_set(fqdn, list(regions))
    fallback = []
    for r in regions:
        members = next((set(rs) for rs in rt.residency.values() if r.region in rs), None)
        peer = nearest(r, [x for x in regions if x.region != r.region and (members is None or x.region in members)])
        if peer is not None:
            fallback.append((r.region, peer.region))
    return ModelRouting(
        fallback=tuple(fallback),
        model=model.name, fqdn=fqdn, policy=rt.policy, records=tuple(records), health_checks=checks,
        residency=tuple((c, tuple(r for r in rs if r in {x.region for x in regions}))
                        for c, rs in sorted(rt.residency.items())), canary=canary, primary=primary,
    )
