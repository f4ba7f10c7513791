"""Capacity planning from measured throughput: pure functions the plan calls, and the plan's `capacity` JSON.

    replicas = ceil(region RPS x headroom / throughput per replica at the SLO), within [min, max] replicas

The throughput is the tuning record's chosen operating point for the model on the region's hardware class.
Without a usable record (none, or one whose best variant missed the SLO and the spec does not accept that), the
plan keeps the declared bounds and marks the placement untuned. Failover: when the largest region is lost, the
others must serve all traffic at their max replicas (without headroom: headroom is the everyday margin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelfleet.catalogue import hardware
from modelfleet.spec import ModelSpec
from modelfleet.tuning import analyzer
from modelfleet.tuning.record import TuningRecord, usable

if TYPE_CHECKING:  # the plan imports this module; only type hints point back
    from modelfleet.plan import FleetPlan, Placement

LOCAL = "local"
CPU = "cpu"


def record_file(model: str, hardware_class: str) -> str:
    return f"models/{model}.tuning/{hardware_class}.yaml"


@dataclass(frozen=True)
class Sizing:
    desired: int
    needed: int | None  # replicas the traffic needs before the bounds; None when untuned
    tuned: bool
    throughput_per_replica: float | None
    p99_ms: float | None
    record: str  # the record's path, "" when there is none
    refused: str = ""  # why a record exists but was not used


def replicas_for(rps: float, headroom: float, throughput: float, min_replicas: int, max_replicas: int) -> tuple[int, int]:
    """(desired, needed): `needed` from the traffic alone, `desired` within the bounds (at least one replica
    while there is traffic, `min_replicas` otherwise: zero only for a model that may scale to zero)."""
    if throughput <= 0:
        raise ValueError(f"throughput per replica must be > 0, got {throughput}")
    needed = 0 if rps <= 0 else math.ceil(round(rps * headroom / throughput, 9))
    floor = min_replicas if rps <= 0 else max(min_replicas, 1)
    return min(max_replicas, max(floor, needed)), needed


def untuned_replicas(rps: float, min_replicas: int, max_replicas: int) -> int:
    """The declared bounds: at least one replica while there is traffic."""
    return min(max_replicas, max(min_replicas, 1 if rps > 0 else 0))


def size(model: ModelSpec, hardware_class: str, rps: float, headroom: float,
         records: dict[tuple[str, str], TuningRecord], bounds: tuple[int, int] | None = None) -> Sizing:
    """Replicas for `rps` within `bounds` (min, max): the model's scaling bounds unless given (a canary's are its
    own)."""
    low, high = bounds or (model.scaling.min_replicas, model.scaling.max_replicas)
    record = records.get((model.name, hardware_class))
    fallback = untuned_replicas(rps, low, high)
    if record is None:
        return Sizing(fallback, None, False, None, None, "")
    path = record_file(model.name, hardware_class)
    if not usable(record, model.tuning.accept_unmet_slo):
        why = (f"its best variant missed the p99 SLO of {record.slo_p99_ms:g} ms (p99 {record.p99_ms:g} ms); "
               f"set tuning.accept_unmet_slo: true to size from it anyway")
        return Sizing(fallback, None, False, record.throughput_per_replica, record.p99_ms, path, why)
    desired, needed = replicas_for(rps, headroom, record.throughput_per_replica, low, high)
    return Sizing(desired, needed, True, record.throughput_per_replica, record.p99_ms, path)


# --- reading the plan --------------------------------------------------------------------------------------

def _replica_share_usd(placement: "Placement", cloud: str) -> float:
    """Hourly cost of one replica: its share of a node (GPUs used / GPUs per node; a CPU replica is a node)."""
    offering = hardware().classes[placement.hardware_class].on(cloud)
    if offering is None:
        return 0.0
    per_node = max(offering.gpus_per_node, 1)
    return offering.hourly_usd * max(placement.gpus_per_replica, 1) / per_node


def absorbs(model: ModelSpec, placement: "Placement", cloud: str, rps: float,
            records: dict[tuple[str, str], TuningRecord]) -> dict:
    """Can one placement serve `rps` at its SLO within its max replicas? The failover basis, as `failover`: the
    measured throughput per replica, no headroom (headroom is the everyday margin). Used for any lost region by
    `modelfleet.routing.failover`."""
    sized = size(model, placement.hardware_class, rps, 1.0, records)
    entry = {"rps": round(rps, 3), "replicas_now": placement.desired_replicas, "max_replicas": placement.max_replicas,
             "tuned": sized.tuned}
    if not sized.tuned or sized.needed is None:
        return {**entry, "holds": None, "replicas_needed": None, "extra_replicas": None, "extra_monthly_usd": None,
                "reason": sized.refused or "untuned: no measured throughput"}
    extra = max(0, min(sized.needed, placement.max_replicas) - placement.desired_replicas)
    return {**entry, "holds": sized.needed <= placement.max_replicas, "replicas_needed": sized.needed,
            "extra_replicas": extra,
            "extra_monthly_usd": round(extra * _replica_share_usd(placement, cloud) * hardware().hours_per_month, 2)}


def failover(plan: "FleetPlan", model: str) -> dict:
    """Can the other regions absorb the loss of this model's largest region within their max replicas?"""
    rows = [(region.ref, p) for region in plan.regions for p in region.placements if p.model == model]
    if len(rows) < 2:
        return {"checked": False, "reason": "fewer than two regions: nothing to fail over to"}
    untuned = sorted(ref for ref, p in rows if not p.tuned)
    if untuned:
        return {"checked": False, "reason": f"untuned in {', '.join(untuned)}: no measured throughput"}
    lost_ref, lost = max(rows, key=lambda row: (row[1].rps, row[0]))
    others = [(ref, p) for ref, p in rows if ref != lost_ref]
    demand = sum(p.rps for _, p in rows)
    absorbable = sum(p.max_replicas * p.throughput_per_replica for _, p in others)
    return {
        "checked": True,
        "largest_region": lost_ref,
        "lost_rps": round(lost.rps, 3),
        "demand_rps": round(demand, 3),
        "others_max_rps": round(absorbable, 1),
        "ok": absorbable >= demand,
        "basis": "other regions at max replicas x measured throughput per replica, no headroom",
    }


def capacity_json(plan: "FleetPlan") -> dict:
    """The plan's `capacity` key: per model and region, replicas, GPUs, whether tuned, the measured throughput
    per replica and p99, and the record they came from; failover headroom and cost per model."""
    hours = hardware().hours_per_month
    models: dict = {}
    for model in plan.models:
        regions: dict = {}
        total = 0.0
        for region in plan.regions:
            for p in region.placements:
                if p.model != model.name:
                    continue
                monthly = round(p.replicas("desired_replicas") * _replica_share_usd(p, region.cloud) * hours, 2)
                total += monthly
                regions[region.ref] = {
                    "hardware_class": p.hardware_class,
                    "rps": p.rps,
                    "replicas": p.desired_replicas,
                    "needed_replicas": p.needed_replicas,
                    "min_replicas": p.min_replicas,
                    "max_replicas": p.max_replicas,
                    "gpus": p.desired_replicas * p.gpus_per_replica,
                    "max_gpus": p.max_replicas * p.gpus_per_replica,
                    "tuned": p.tuned,
                    "throughput_per_replica": p.throughput_per_replica,
                    "p99_ms": p.p99_ms,
                    "record": p.record or None,
                    "monthly_usd": monthly,  # the canary's replicas included
                }
                if p.canary:
                    # The split as the routes make it: the stable's figures above are for its share.
                    regions[region.ref]["rps_stable"] = p.stable_rps
                    regions[region.ref]["canary"] = {
                        "version": p.canary.version, "stable_version": p.canary.stable_version,
                        "percent": p.canary.percent, "rps": p.canary.rps, "replicas": p.canary.desired_replicas,
                        "needed_replicas": p.canary.needed_replicas, "min_replicas": p.canary.min_replicas,
                        "max_replicas": p.canary.max_replicas,
                        "gpus": p.canary.desired_replicas * p.gpus_per_replica}
        if not plan.regions:  # the local stack: one Triton on this machine's CPU
            regions[LOCAL] = _local_entry(plan, model)
        models[model.name] = {
            "regions": regions,
            "failover": failover(plan, model.name),
            "monthly_usd": round(total, 2),
        }
    return {"headroom": plan.capacity_headroom, "models": models}


def _local_entry(plan: "FleetPlan", model: ModelSpec) -> dict:
    record = plan.tuning.get((model.name, CPU))
    ok = record is not None and usable(record, model.tuning.accept_unmet_slo)
    rps = model.traffic.rps_in(LOCAL)
    return {
        "hardware_class": CPU,
        "rps": rps,
        "replicas": 1,
        "needed_replicas": replicas_for(rps, plan.capacity_headroom, record.throughput_per_replica, 0, 10**9)[1]
        if ok else None,
        "gpus": 0,
        "tuned": ok,
        "throughput_per_replica": record.throughput_per_replica if record else None,
        "p99_ms": record.p99_ms if record else None,
        "record": record_file(model.name, CPU) if record else None,
        "monthly_usd": 0.0,
    }


def warnings(plan: "FleetPlan") -> list[str]:
    """What a reviewer must know about sizing: bounds that bind, refused records, failover shortfalls."""
    out = []
    for region in plan.regions:
        for p in region.placements:
            if p.tuned and p.needed_replicas is not None and p.needed_replicas > p.max_replicas:
                served = p.max_replicas * p.throughput_per_replica / plan.capacity_headroom
                out.append(f"{p.model} in {region.ref} needs {p.needed_replicas} replicas for {p.stable_rps:g} rps "
                           f"x {plan.capacity_headroom:g} headroom but max_replicas is {p.max_replicas}: capped, "
                           f"serves about {served:,.0f} rps with headroom")
            if p.refused:
                out.append(f"{p.model} in {region.ref}: not sized from {p.record}: {p.refused}")
    for (model_name, hw), record in sorted(plan.tuning.items()):
        if analyzer.record_is_lower_bound(record):
            out.append(f"{model_name} on {hw}: {record.chosen.throughput_per_s:,.0f} infer/s per replica is a lower "
                       f"bound (throughput still rising at concurrency {record.chosen.concurrency}, the highest "
                       "measured): replicas may be more than the traffic needs")
    for model in plan.models:
        verdict = failover(plan, model.name)
        if verdict.get("checked") and not verdict["ok"]:
            out.append(f"{model.name}: losing {verdict['largest_region']} leaves {verdict['others_max_rps']:,.0f} "
                       f"rps of capacity at max replicas for {verdict['demand_rps']:,.0f} rps of demand; raise "
                       f"max_replicas elsewhere")
    return sorted(set(out))


def tuned_settings(plan: "FleetPlan") -> dict:
    """`(model, hardware_class) -> TunedSettings` for the config renderer, from every usable record."""
    from modelfleet.tuning.run import settings_of

    return {key: settings_of(record) for key, record in sorted(plan.tuning.items())
            if usable(record, plan.model(key[0]).tuning.accept_unmet_slo)}


# --- for `modelfleet plan` text and markdown (the report calls these with `capacity_json(plan)`) ---------------

def _rows(doc: dict):
    for model, data in doc["models"].items():
        for region, e in data["regions"].items():
            tp = f"{e['throughput_per_replica']:,.0f}" if e["throughput_per_replica"] is not None else "—"
            p99 = f"{e['p99_ms']:g}" if e["p99_ms"] is not None else "—"
            c = e.get("canary")
            if c is None:
                yield (model, region, f"{e['rps']:g}", str(e["replicas"]), str(e["gpus"]),
                       "yes" if e["tuned"] else "no", tp, p99, f"${e['monthly_usd']:,.0f}")
                continue
            # A canary: each Deployment with its share of the region's requests; the cost covers both.
            yield (f"{model} v{c['stable_version']} {100 - c['percent']}%", region, f"{e['rps_stable']:g}",
                   str(e["replicas"]), str(e["gpus"]), "yes" if e["tuned"] else "no", tp, p99,
                   f"${e['monthly_usd']:,.0f} (both)")
            yield (f"{model} v{c['version']} {c['percent']}% canary", region, f"{c['rps']:g}", str(c["replicas"]),
                   str(c["gpus"]), "yes" if e["tuned"] else "no", tp, p99, "↑")


_HEADERS = ("model", "region", "rps", "replicas", "GPUs", "tuned", "infer/s per replica", "p99 ms", "$/month")


def capacity_text(doc: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"Capacity (replicas = ceil(rps x {doc['headroom']:g} / measured infer/s per replica))",
                  title_justify="left")
    for column in _HEADERS:
        table.add_column(column, justify="left" if column in ("model", "region", "tuned") else "right")
    for row in _rows(doc):
        table.add_row(*row)
    console.print(table)
    for model, data in doc["models"].items():
        f = data["failover"]
        if f["checked"]:
            verdict = "ok" if f["ok"] else "[red]SHORT[/]"
            console.print(f"failover {model}: losing {f['largest_region']} needs {f['demand_rps']:,.0f} rps from "
                          f"{f['others_max_rps']:,.0f} rps of capacity elsewhere: {verdict}")


def capacity_markdown(doc: dict) -> str:
    out = (f"\n### Capacity\n\nReplicas = ceil(rps × {doc['headroom']:g} ÷ measured infer/s per replica at the SLO), "
           "within the spec's bounds.\n\n| " + " | ".join(_HEADERS) + " |\n|" + "---|" * len(_HEADERS) + "\n")
    out += "".join("| " + " | ".join(row) + " |\n" for row in _rows(doc))
    return out
