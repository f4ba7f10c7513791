"""The failover proof: what happens to each model when one region is lost. Pure, from the plan.

A lost region's clients go where Route53 would answer them once its health checks fail: the nearest surviving
region of the record set they resolve through (latency map, `plan.nearest`), only within their continent when
the model keeps data there (residency), the other of the pair under a failover policy. Each receiving region must
then serve its own rps plus the moved rps within its max replicas at the SLO (`capacity.absorbs`: the tuning
records' measured throughput per replica, no headroom). Clients move after the health checks' detection time
plus the records' TTL; new replicas beyond today's take a cold start on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelfleet.routing.cost import routing_cost
from modelfleet.routing.plan import ModelRouting, RoutingPlan, nearest
from modelfleet.tuning import capacity

if TYPE_CHECKING:
    from modelfleet.plan import FleetPlan


def destinations(routing: RoutingPlan, model: ModelRouting, failed: str) -> tuple[list[str], str]:
    """(regions that receive the failed region's clients, why); empty when none may (residency)."""
    lost = routing.region(failed)
    survivors = [r for r in routing.regions if r.region != failed]
    if model.policy == "failover":
        if failed not in model.primary:
            return [], "not in the failover pair: it receives no clients by DNS"
        other = next(r for r in model.primary if r != failed)
        return [other], "failover policy: the other of PRIMARY/SECONDARY"
    resident = model.residency_of(failed)
    if resident:
        continent, members = resident
        allowed = [r for r in survivors if r.region in members]
        target = nearest(lost, allowed)
        if target is None:
            return [], f"residency {continent}: no other {continent} region; its clients are not sent abroad"
        return [target.region], f"nearest surviving {continent} region (residency)"
    if model.canary and model.canary[0] == failed:
        stable = [r for r in survivors]
        target = nearest(lost, stable)
        return [target.region] if target else [], "canary region lost: its weight goes to the stable latency set"
    pool = survivors if not model.canary else [r for r in survivors if r.region != model.canary[0]]
    target = nearest(lost, pool)
    return ([target.region] if target else []), "nearest surviving region by latency key"


def simulate(plan: "FleetPlan", failed: str) -> dict:
    routing = plan.routing
    assert routing is not None, "simulate needs a plan with global routing"
    region_of = {r.ref: r for r in plan.regions}
    if failed not in region_of:
        raise ValueError(f"{failed} is not a region of stack {plan.stack} ({', '.join(region_of)})")
    models: dict = {}
    for mr in routing.models:
        spec = plan.model(mr.model)
        placement = {ref: next(p for p in r.placements if p.model == mr.model) for ref, r in region_of.items()}
        lost_rps = placement[failed].rps
        targets, why = destinations(routing, mr, failed)
        moved = {t: lost_rps / len(targets) for t in targets} if targets else {}
        regions = {}
        for ref, p in placement.items():
            if ref == failed:
                continue
            rps = p.rps + moved.get(ref, 0.0)
            entry = capacity.absorbs(spec, p, region_of[ref].cloud, rps, plan.tuning)
            regions[ref] = {**entry, "rps_before": p.rps, "received_rps": round(moved.get(ref, 0.0), 3)}
        receivers = [regions[t] for t in targets]
        if lost_rps > 0 and not targets:
            absorbed, reason = False, why
        elif any(e["holds"] is None for e in receivers):
            absorbed, reason = None, "; ".join(e["reason"] for e in receivers if e["holds"] is None)
        else:
            absorbed = all(e["holds"] for e in receivers)
            reason = why if absorbed else "; ".join(
                f"{t} needs {regions[t]['replicas_needed']} replicas for {regions[t]['rps']:g} rps, max "
                f"{regions[t]['max_replicas']}" for t in targets if not regions[t]["holds"])
        models[mr.model] = {
            "lost_rps": lost_rps,
            "moves_to": [{"region": t, "rps": round(moved[t], 3)} for t in targets],
            "why": why,
            "regions": regions,
            "absorbed": absorbed,
            "reason": reason,
            "headroom_monthly_usd": round(sum(e["extra_monthly_usd"] or 0 for e in receivers), 2),
            "scale_up_s": _scale_up_s(plan, mr.model, receivers),
        }
    verdicts = [m["absorbed"] for m in models.values()]
    return {
        "failed_region": failed,
        "detection_s": routing.detection_s,
        "ttl_s": routing.ttl_s,
        "clients_move_s": routing.clients_move_s,
        "basis": (f"health checks every {routing.request_interval_s} s, unhealthy after {routing.failure_threshold} "
                  f"failures ({routing.detection_s} s), plus the {routing.ttl_s} s TTL; capacity at max replicas x "
                  "measured throughput per replica, no headroom"),
        "models": models,
        "absorbed": False if False in verdicts else (None if None in verdicts else True),
        "headroom_monthly_usd": round(sum(m["headroom_monthly_usd"] for m in models.values()), 2),
        # What the design costs whether or not a region fails: Route53 and the regions' entry load balancers.
        "standing": {k: v for k, v in routing_cost(plan).items()
                     if k in ("dns_monthly_usd", "entry_monthly_usd", "standing_monthly_usd")},
    }


def _scale_up_s(plan: "FleetPlan", model: str, receivers: list[dict]) -> int:
    from modelfleet.plan import cold_start_s

    return cold_start_s(plan.model(model)) if any((e["extra_replicas"] or 0) > 0 for e in receivers) else 0


def every_failure(plan: "FleetPlan") -> dict[str, dict]:
    if plan.routing is None:
        return {}
    return {r.ref: simulate(plan, r.ref) for r in plan.regions}


def warnings(plan: "FleetPlan") -> list[str]:
    """One line per single-region failure the fleet does not absorb (or cannot prove it absorbs)."""
    out = []
    unproven: dict[str, list[str]] = {}
    for failed, result in every_failure(plan).items():
        for model, m in result["models"].items():
            if m["absorbed"] is False:
                out.append(f"losing {failed}: {model} is not absorbed ({m['reason']})")
            elif m["absorbed"] is None:
                unproven.setdefault(model, []).append(failed)
    for model, regions in sorted(unproven.items()):
        out.append(f"failover of {model} not proven for {len(regions)} region loss(es) ({', '.join(regions)}): "
                   "untuned on the receiving regions' hardware; tune it (modelfleet tune) to prove it")
    return out
