"""What global routing costs, from the price table in modelfleet/data/hardware.yaml (`routing`): Route53's zone
and health checks as monthly cost lines of the fleet, each model's query price by its routing policy, and the
standing cost of the failover design (DNS plus each region's entry load balancer) for the failover report.
Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from modelfleet.catalogue import hardware
from modelfleet.routing.plan import RoutingPlan

if TYPE_CHECKING:
    from modelfleet.plan import CostLine, FleetPlan, RegionPlan

ENTRY_ITEM = "global entry load balancer"  # the region cost line plan._cost adds with global routing
FAST_INTERVAL_S = 10  # Route53's 10 s interval is an optional feature; 30 s is the standard one


def dns_cost_lines(routing: RoutingPlan, regions: Iterable["RegionPlan"]) -> tuple["CostLine", ...]:
    """Route53 per month, as cost lines priced per hour like every other line (monthly price / hours)."""
    from modelfleet.plan import CostLine

    prices = hardware().routing.route53
    hours = hardware().hours_per_month
    cloud = {r.ref: r.cloud for r in regions}
    lines = []
    if routing.existing_zone is None:  # an existing zone is paid for already, by whoever owns it
        lines.append(CostLine("Route53 hosted zone", 1, round(prices.hosted_zone_monthly_usd / hours, 6)))
    features = 1 + (routing.request_interval_s == FAST_INTERVAL_S)  # HTTPS, and the fast interval if used
    for endpoint in ("aws", "other"):
        n = sum(1 for hc in routing.health_checks if (cloud[hc.region] == "aws") == (endpoint == "aws"))
        if n:
            each = prices.health_check_monthly_usd[endpoint] + features * prices.optional_feature_monthly_usd[endpoint]
            where = "AWS" if endpoint == "aws" else "non-AWS"
            lines.append(CostLine(f"Route53 HTTPS health checks ({where} endpoints)", n, round(each / hours, 6)))
    return tuple(lines)


def routing_cost(plan: "FleetPlan") -> dict:
    """The routing's cost for the plan's `routing` key: Route53 lines, the entry load balancers, query prices."""
    prices = hardware().routing
    dns = [{"item": line.item, "quantity": line.quantity, "monthly_usd": line.monthly_usd}
           for line in plan.global_cost]
    entries = [{"region": r.ref, "monthly_usd": line.monthly_usd} for r in plan.regions for line in r.cost
               if line.item == ENTRY_ITEM]
    return {
        "dns": dns,
        "dns_monthly_usd": round(sum(x["monthly_usd"] for x in dns), 2),
        "entry_load_balancers": entries,
        "entry_monthly_usd": round(sum(x["monthly_usd"] for x in entries), 2),
        "standing_monthly_usd": round(sum(x["monthly_usd"] for x in dns + entries), 2),
        # Per million queries of each model's name: the policy of the records clients ask first (a residency
        # split answers with geolocation records). Volume depends on resolvers and the TTL, so it is not guessed.
        "queries_per_million_usd": {m.model: prices.route53.queries_per_million_usd[_query_policy(m)]
                                    for m in plan.routing.models},
        "basis": (f"Route53 {prices.route53.price_source} ({prices.route53.price_date}); load balancers "
                  f"{prices.entry_price_source} ({prices.entry_price_date}), hourly part only"),
    }


def _query_policy(model) -> str:
    if model.residency:
        return "geolocation"
    if model.canary:
        return "weighted"
    return "failover" if model.policy == "failover" else "latency"
