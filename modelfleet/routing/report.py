"""The plan's `routing` key, and its text and markdown (what `modelfleet plan [--fail-region R]` prints)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from modelfleet.routing.cost import routing_cost
from modelfleet.routing.failover import every_failure, simulate

if TYPE_CHECKING:
    from modelfleet.plan import FleetPlan


def routing_json(plan: "FleetPlan", fail_region: str | None = None) -> dict | None:
    routing = plan.routing
    if routing is None:
        return None
    failures = every_failure(plan)
    return {
        "domain": routing.domain,
        "zone": {"name": routing.zone_name, "existing": routing.existing_zone is not None},
        "ttl_s": routing.ttl_s,
        "health_check": {"request_interval_s": routing.request_interval_s,
                         "failure_threshold": routing.failure_threshold, "detection_s": routing.detection_s},
        "clients_move_s": routing.clients_move_s,
        "regions": [asdict(r) for r in routing.regions],
        "certificate_names": list(routing.certificate_names),
        "models": {m.model: {"name": m.fqdn, "policy": m.policy,
                             "residency": {c: list(rs) for c, rs in m.residency},
                             "canary": {"region": m.canary[0], "percent": m.canary[1]} if m.canary else None,
                             "records": [asdict(r) for r in m.records],
                             "gateway_fallback": dict(m.fallback),
                             "health_checks": [asdict(h) for h in m.health_checks]}
                   for m in routing.models},
        "cost": routing_cost(plan),
        "failures": failures,
        "unabsorbed": sorted(f for f, r in failures.items() if r["absorbed"] is False),
        "unproven": sorted(f for f, r in failures.items() if r["absorbed"] is None),
        "fail_region": simulate(plan, fail_region) if fail_region else None,
    }


def _verdict(value: bool | None) -> str:
    return {True: "absorbed", False: "NOT absorbed", None: "not proven"}[value]


def _failure_lines(result: dict) -> list[str]:
    standing = result["standing"]
    lines = [f"losing {result['failed_region']}: clients move within {result['clients_move_s']} s "
             f"({result['basis']}); {_verdict(result['absorbed'])}; headroom "
             f"${result['headroom_monthly_usd']:,.0f}/month (GPU replicas) + ${standing['standing_monthly_usd']:,.2f}"
             f"/month standing (Route53 ${standing['dns_monthly_usd']:,.2f}, entry load balancers "
             f"${standing['entry_monthly_usd']:,.2f})"]
    for model, m in result["models"].items():
        moves = ", ".join(f"{x['region']} +{x['rps']:g} rps" for x in m["moves_to"]) or "nowhere"
        lines.append(f"  {model}: {m['lost_rps']:g} rps -> {moves} ({m['why']}): {_verdict(m['absorbed'])}"
                     + (f" — {m['reason']}" if m["absorbed"] is not True else "")
                     + (f"; new replicas need ~{m['scale_up_s']} s" if m["scale_up_s"] else ""))
        for ref, e in m["regions"].items():
            if e["received_rps"]:
                needed = e["replicas_needed"] if e["replicas_needed"] is not None else "?"
                lines.append(f"    {ref}: {e['rps_before']:g} -> {e['rps']:g} rps, replicas {e['replicas_now']} -> "
                             f"{needed} (max {e['max_replicas']})")
    return lines


def routing_text(doc: dict | None, console) -> None:
    if doc is None:
        return
    console.print(f"[bold]Global routing[/] — zone {doc['zone']['name']}, TTL {doc['ttl_s']} s, health checks "
                  f"every {doc['health_check']['request_interval_s']} s x {doc['health_check']['failure_threshold']}")
    for model, m in doc["models"].items():
        console.print(f"  {m['name']}: {m['policy']}, {len(m['records'])} records, "
                      f"{len(m['health_checks'])} health checks"
                      + (f", residency {m['residency']}" if m["residency"] else "")
                      + (f", canary {m['canary']['region']} {m['canary']['percent']}%" if m["canary"] else ""),
                      markup=False, highlight=False)
    cost = doc["cost"]
    console.print(f"  cost: Route53 ${cost['dns_monthly_usd']:,.2f}/month ("
                  + ", ".join(f"{x['quantity']} x {x['item']}" for x in cost["dns"])
                  + f"), entry load balancers ${cost['entry_monthly_usd']:,.2f}/month; queries per million: "
                  + ", ".join(f"{m} ${v:.2f}" for m, v in cost["queries_per_million_usd"].items()),
                  markup=False, highlight=False, soft_wrap=True)
    if doc["fail_region"]:
        for line in _failure_lines(doc["fail_region"]):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def routing_markdown(doc: dict | None) -> str:
    if doc is None:
        return ""
    out = (f"\n### Global routing\n\nZone `{doc['zone']['name']}`; clients move off a failed region within "
           f"**{doc['clients_move_s']} s** (health checks {doc['health_check']['request_interval_s']} s × "
           f"{doc['health_check']['failure_threshold']} + TTL {doc['ttl_s']} s).\n\n"
           "| name | policy | records | health checks |\n|---|---|---:|---:|\n")
    for m in doc["models"].values():
        out += f"| `{m['name']}` | {m['policy']} | {len(m['records'])} | {len(m['health_checks'])} |\n"
    cost = doc["cost"]
    out += ("\n| routing cost | $/month |\n|---|---:|\n"
            + "".join(f"| {x['quantity']} × {x['item']} | ${x['monthly_usd']:,.2f} |\n" for x in cost["dns"])
            + "".join(f"| entry load balancer {x['region']} | ${x['monthly_usd']:,.2f} |\n"
                      for x in cost["entry_load_balancers"])
            + f"\n{cost['basis']}. Queries per million: "
            + ", ".join(f"`{m}` ${v:.2f}" for m, v in cost["queries_per_million_usd"].items()) + ".\n")
    out += "\n| region lost | verdict | headroom $/month (GPU) |\n|---|---|---:|\n"
    for failed, r in doc["failures"].items():
        out += f"| {failed} | {_verdict(r['absorbed'])} | ${r['headroom_monthly_usd']:,.0f} |\n"
    if doc["fail_region"]:
        out += "\n```\n" + "\n".join(_failure_lines(doc["fail_region"])) + "\n```\n"
    return out
