"""What `modelfleet plan` prints: one report object, rendered as text, JSON or a pull-request comment.

The report is built once from the plan and the recorded resources; the three renderers only format it, so
they can never disagree. Everything is sorted: the same input gives byte-identical output.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from modelfleet.canary import weights as canary_weights
from modelfleet.gateway import manifests as gateway_manifests
from modelfleet.offline import Evaluation, Recorded
from modelfleet.plan import FleetPlan
from modelfleet.routing.report import routing_json, routing_markdown, routing_text
from modelfleet.tuning.capacity import capacity_json, capacity_markdown, capacity_text

REGION_COMPONENT = "modelfleet:fleet:Region"
GLOBAL = "global"


@dataclass
class Report:
    plan: FleetPlan
    evaluation: Evaluation
    extra: dict[str, Any] = field(default_factory=dict)  # keys later features add (policies, capacity)
    fail_region: str | None = None  # `modelfleet plan --fail-region`: the failover proof shown in full

    def region_of(self, resource: Recorded) -> str:
        """The region key a resource belongs to: its enclosing Region component's, else its provider's."""
        by_urn = self._by_urn
        node: Recorded | None = resource
        while node is not None:
            if node.type == REGION_COMPONENT:
                return node.name
            node = by_urn.get(node.parent) if node.parent else None
        return resource.provider or GLOBAL

    @property
    def _by_urn(self) -> dict[str, Recorded]:
        return {r.urn: r for r in self.evaluation.resources}

    def summary(self) -> dict:
        resources = self.evaluation.resources
        by_region: dict[str, Counter] = {}
        for r in resources:
            by_region.setdefault(self.region_of(r), Counter())[r.type] += 1
        return {
            "resource_count": len(resources),
            "by_cloud": dict(sorted(Counter(_cloud_of(r.type) for r in resources).items())),
            "by_region": {k: sum(v.values()) for k, v in sorted(by_region.items())},
            "by_type": dict(sorted(Counter(r.type for r in resources).items())),
            "by_region_and_type": {k: dict(sorted(v.items())) for k, v in sorted(by_region.items())},
            "pools": [
                {
                    "region": region.ref,
                    "pool": pool.name,
                    "instance_type": pool.instance_type,
                    "accelerator": pool.accelerator,
                    "capacity": pool.capacity,
                    "min_nodes": pool.min_nodes,
                    "max_nodes": pool.max_nodes,
                    "desired_nodes": pool.desired_nodes,
                    "gpus_per_node": pool.gpus_per_node,
                    "min_gpus": pool.min_nodes * pool.gpus_per_node,
                    "max_gpus": pool.max_gpus,
                }
                for region in self.plan.regions
                for pool in region.pools
            ],
        }

    def regions(self) -> list[dict]:
        """Per region: the network and the cluster, as decided in the plan."""
        return [
            {
                "region": region.ref,
                "cidr": region.cidr,
                "zones": list(region.zones),
                "nat_gateways": region.nat_gateways if region.cloud == "aws" else "cloud-nat",
                "cluster": region.cluster_name,
                "kubernetes_version": region.kubernetes_version,
                "endpoint": ("public: " + ", ".join(region.endpoint_public_cidrs)) if region.endpoint_public_cidrs
                else "private",
                "monthly_usd": region.monthly_usd,
                # `plan --previous` compares against this: a protected region cannot simply disappear.
                "deletion_protection": region.deletion_protection,
            }
            for region in self.plan.regions
        ]

    def gateways(self) -> list[dict]:
        """Per region: how the gateway is reached, where its limits are counted, and each model's route."""
        gw = self.plan.gateway
        if gw is None or not self.plan.regions:
            return []
        out = []
        for region in self.plan.regions:
            redis = gateway_manifests.redis_plan(self.plan, region)
            placed = {p.model for p in region.placements}
            out.append({
                "region": region.ref,
                "hostname": gw.hostname,
                "port": gw.http_port,
                "load_balancer": gw.load_balancer,
                "rate_limit_store": (f"ElastiCache {redis.node_type} x{redis.nodes}" if region.cloud == "aws"
                                     else f"Memorystore {redis.tier} {redis.memory_gib} GiB"),
                "routes": [{
                    "model": r.model,
                    "auth": "+".join(r.auth.methods),
                    "scope": r.auth.scope,
                    "limits": ", ".join(f"{rule.requests}/{rule.unit.lower()}" for rule in r.rate_limits),
                    "fail_mode": r.inspection.fail_mode,
                    "inspects": "request+response" if r.inspection.response_body else "request",
                    "versions": _split(r),
                } for r in gw.routes if r.model in placed],
            })
        return out

    def cost(self) -> dict:
        total = self.plan.monthly_usd
        return {
            "currency": "USD",
            "basis": "on-demand list prices from modelfleet/data/hardware.yaml at desired node counts, 730 h/month",
            "regions": {
                region.ref: {
                    "monthly_usd": region.monthly_usd,
                    "lines": [
                        {"item": line.item, "quantity": line.quantity, "hourly_usd_each": line.hourly_usd_each,
                         "monthly_usd": line.monthly_usd}
                        for line in region.cost
                    ],
                }
                for region in self.plan.regions
            },
            # Outside any region: Route53 with global routing (modelfleet.routing.cost).
            "global": [{"item": line.item, "quantity": line.quantity, "hourly_usd_each": line.hourly_usd_each,
                        "monthly_usd": line.monthly_usd} for line in self.plan.global_cost],
            "monthly_usd_total": total,
            "budget_monthly_usd": self.plan.budget_monthly_usd,
            "within_budget": total <= self.plan.budget_monthly_usd,
        }

    def quotas(self) -> dict:
        """The GPU quotas each region must grant before its pools can reach their maxima (from the plan)."""
        return {
            "regions": [
                {"region": region.ref, "quota": q.quota, "description": q.description, "amount": q.amount,
                 "unit": q.unit, "pools": list(q.pools)}
                for region in self.plan.regions for q in region.gpu_quotas
            ],
            "gcp_gpus_all_regions": self.plan.gcp_gpus_all_regions,
            "gcp_services": list(self.plan.gcp_services),
        }

    def to_json(self) -> dict:
        return {
            "stack": self.plan.stack,
            "environment": self.plan.environment,
            "regions": [region.ref for region in self.plan.regions],
            "resources": [r.as_dict() for r in self.evaluation.resources],
            "region_plans": self.regions(),
            "summary": self.summary(),
            "cost": self.cost(),
            "warnings": list(self.plan.warnings),
            "capacity": capacity_json(self.plan),
            "quotas": self.quotas(),
            "routing": routing_json(self.plan, self.fail_region),
            "gateways": self.gateways(),
            **self.extra,
        }


def _split(route) -> list[dict]:
    """Which Triton version gets which share of the model's requests (modelfleet.canary): the routes' weights."""
    if route.canary_version is None:
        return [{"version": route.version, "track": "stable", "weight": 100}]
    stable, canary = canary_weights(route.canary_percent)
    return [{"version": route.version, "track": "stable", "weight": stable},
            {"version": route.canary_version, "track": "canary", "weight": canary}]


def _split_text(versions: list[dict]) -> str:
    return " · ".join(f"v{v['version']} {v['weight']}%" + (" canary" if v["track"] == "canary" else "")
                      for v in versions)


def _cloud_of(resource_type: str) -> str:
    package = resource_type.split(":")[0]
    if package == "pulumi":
        package = resource_type.split(":")[2] if resource_type.startswith("pulumi:providers:") else package
    return package


def _money(value: float) -> str:
    return f"${value:,.0f}"


def render_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"


def _tree(report: Report) -> Tree:
    root = Tree(f"[bold]{report.plan.stack}[/] (pulumi:pulumi:Stack)")
    children: dict[str | None, list[Recorded]] = {}
    for r in report.evaluation.resources:
        children.setdefault(r.parent, []).append(r)

    def add(node: Tree, parent: str | None) -> None:
        for r in sorted(children.get(parent, []), key=lambda x: (x.type, x.name)):
            via = f" [dim]via {r.provider}[/]" if r.provider else ""
            add(node.add(f"{r.name} [cyan]({r.type})[/]{via}"), r.urn)

    add(root, None)
    return root


def _role(plan) -> str:
    """A split fleet's stack (modelfleet:role) declares part of the plan it shows: say which."""
    if plan.role == "regional":
        return f"; role regional: this stack deploys {plan.role_region} only, the plan below is the fleet's"
    if plan.role == "global":
        return "; role global: this stack deploys the global routing only, the plan below is the fleet's"
    return ""


def render_text(report: Report, console: Console) -> None:
    plan, summary, cost = report.plan, report.summary(), report.cost()
    console.print(f"[bold]modelfleet plan[/] — stack [bold]{plan.stack}[/] ({plan.environment}), "
                  f"{len(plan.regions)} region(s), {len(plan.models)} model(s), "
                  f"{summary['resource_count']} resources" + _role(plan))
    console.print(_tree(report))

    counts = Table(title="Resources per region and type", title_justify="left")
    counts.add_column("region")
    counts.add_column("type")
    counts.add_column("count", justify="right")
    for region, types in summary["by_region_and_type"].items():
        for resource_type, n in types.items():
            counts.add_row(region, resource_type, str(n))
    console.print(counts)
    console.print("Per cloud: " + ", ".join(f"{k} {v}" for k, v in summary["by_cloud"].items()))

    networks = Table(title="Regions: network and cluster", title_justify="left")
    for column in ("region", "VPC", "zones", "NAT", "cluster", "k8s", "API endpoint", "$/month"):
        networks.add_column(column, justify="right" if column == "$/month" else "left")
    for r in report.regions():
        networks.add_row(r["region"], r["cidr"], " ".join(z.rsplit("-", 1)[-1] for z in r["zones"]),
                         str(r["nat_gateways"]), r["cluster"], r["kubernetes_version"], r["endpoint"],
                         _money(r["monthly_usd"]))
    console.print(networks)

    pools = Table(title="Node pools (nodes: min / desired / max)", title_justify="left")
    for column in ("region", "pool", "instance", "capacity", "nodes", "GPUs min–max", "$/month"):
        pools.add_column(column, justify="right" if column in ("nodes", "GPUs min–max", "$/month") else "left")
    for region in plan.regions:
        for pool in region.pools:
            pools.add_row(region.ref, pool.name, pool.instance_type, pool.capacity,
                          f"{pool.min_nodes} / {pool.desired_nodes} / {pool.max_nodes}",
                          f"{pool.min_nodes * pool.gpus_per_node}–{pool.max_gpus}" if pool.is_gpu else "—",
                          _money(next(line.monthly_usd for line in region.cost if line.pool == pool.name)))
    console.print(pools)

    capacity_text(capacity_json(plan), console)
    _quotas_text(report.quotas(), console)
    routing_text(routing_json(plan, report.fail_region), console)

    gateways = Table(title="Gateway per region (Envoy Gateway; limits per tenant)", title_justify="left")
    for column in ("region", "endpoint", "LB", "limits counted in", "model", "versions", "auth", "limits",
                   "inspects", "inspector down"):
        gateways.add_column(column)
    for g in report.gateways():
        for route in g["routes"]:
            gateways.add_row(g["region"], f"https://{g['hostname']}:{g['port']}", g["load_balancer"],
                             g["rate_limit_store"], route["model"], _split_text(route["versions"]), route["auth"],
                             route["limits"], route["inspects"], f"fail {route['fail_mode']}")
    if report.gateways():
        console.print(gateways)

    verdict = "[green]within[/]" if cost["within_budget"] else "[red]OVER[/]"
    console.print(f"Estimated [bold]{_money(cost['monthly_usd_total'])}/month[/] against a budget of "
                  f"{_money(cost['budget_monthly_usd'])}: {verdict} budget")
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    _policies_text(report.extra.get("policies"), console)


def render_markdown(report: Report) -> str:
    plan, summary, cost = report.plan, report.summary(), report.cost()
    out = io.StringIO()
    w = out.write
    status = "✅ within budget" if cost["within_budget"] else "❌ over budget"
    w(f"## modelfleet plan — `{plan.stack}` ({plan.environment}){_role(plan)}\n\n")
    w(f"**{summary['resource_count']} resources** in {len(plan.regions)} region(s) for {len(plan.models)} model(s). "
      f"Estimated **{_money(cost['monthly_usd_total'])}/month** against a budget of "
      f"{_money(cost['budget_monthly_usd'])}: {status}.\n\n")
    w("| region | VPC | NAT | cluster | API endpoint | resources | $/month |\n|---|---|---|---|---|---:|---:|\n")
    for r in report.regions():
        key = r["region"].replace(":", "-")
        w(f"| {r['region']} | {r['cidr']} | {r['nat_gateways']} | `{r['cluster']}` | {r['endpoint']} | "
          f"{summary['by_region'].get(key, 0)} | {_money(r['monthly_usd'])} |\n")
    w("\n### Node pools\n\n| region | pool | instance | capacity | nodes min/desired/max | GPUs max |\n"
      "|---|---|---|---|---:|---:|\n")
    for pool in summary["pools"]:
        w(f"| {pool['region']} | {pool['pool']} | {pool['instance_type']} | {pool['capacity']} | "
          f"{pool['min_nodes']}/{pool['desired_nodes']}/{pool['max_nodes']} | {pool['max_gpus']} |\n")
    w(capacity_markdown(capacity_json(plan)))
    w(_quotas_markdown(report.quotas()))
    w(routing_markdown(routing_json(plan, report.fail_region)))
    if report.gateways():
        w("\n### Gateway\n\n| region | endpoint | LB | limits counted in | model | versions | auth | limits | "
          "inspects | inspector down |\n|---|---|---|---|---|---|---|---|---|---|\n")
        for g in report.gateways():
            for route in g["routes"]:
                w(f"| {g['region']} | `https://{g['hostname']}:{g['port']}` | {g['load_balancer']} | "
                  f"{g['rate_limit_store']} | {route['model']} | {_split_text(route['versions'])} | {route['auth']} | "
                  f"{route['limits']} | {route['inspects']} | fail {route['fail_mode']} |\n")
    if plan.warnings:
        w("\n### Warnings\n\n" + "".join(f"- {warning}\n" for warning in plan.warnings))
    w(_policies_markdown(report.extra.get("policies")))
    w("\n<details><summary>Resources by type</summary>\n\n| type | count |\n|---|---:|\n")
    for resource_type, n in summary["by_type"].items():
        w(f"| `{resource_type}` | {n} |\n")
    w("\n</details>\n")
    return out.getvalue()


def _quotas_text(quotas: dict, console: Console) -> None:
    if not quotas["regions"]:
        return
    table = Table(title="GPU quotas to request before the first `pulumi up` (pools at their maxima)",
                  title_justify="left")
    for column in ("region", "quota", "what", "needed", "pools"):
        table.add_column(column, justify="right" if column == "needed" else "left")
    for q in quotas["regions"]:
        table.add_row(q["region"], q["quota"], q["description"], f"{q['amount']} {q['unit']}", ", ".join(q["pools"]))
    console.print(table)
    if quotas["gcp_gpus_all_regions"]:
        console.print(f"GCP project-wide GPUS_ALL_REGIONS: at least {quotas['gcp_gpus_all_regions']} GPUs")
    if quotas["gcp_services"]:
        console.print("GCP APIs enabled by the stack: " + ", ".join(quotas["gcp_services"]))


def _quotas_markdown(quotas: dict) -> str:
    if not quotas["regions"]:
        return ""
    out = ("\n### GPU quotas to request (pools at their maxima)\n\n| region | quota | what | needed | pools |\n"
           "|---|---|---|---:|---|\n")
    for q in quotas["regions"]:
        out += (f"| {q['region']} | `{q['quota']}` | {q['description']} | {q['amount']} {q['unit']} | "
                f"{', '.join(q['pools'])} |\n")
    if quotas["gcp_gpus_all_regions"]:
        out += f"\nGCP project-wide `GPUS_ALL_REGIONS`: at least {quotas['gcp_gpus_all_regions']} GPUs.\n"
    return out


def _verdict(policies: dict) -> str:
    mandatory = sum(v["level"] == "mandatory" for v in policies["violations"])
    advisory = len(policies["violations"]) - mandatory
    return (f"{len(policies['evaluated'])} policies evaluated: {mandatory} mandatory violation(s), "
            f"{advisory} advisory")


def _policies_text(policies: dict | None, console: Console) -> None:
    """One violation per entry, never folded: CI logs and terminals both keep every word greppable."""
    if policies is None:
        return
    console.print(f"[bold]Policies[/] — {_verdict(policies)}")
    for v in policies["violations"]:
        level = "[red]mandatory[/]" if v["level"] == "mandatory" else "[yellow]advisory[/]"
        console.print(f"{level} [bold]{v['policy']}[/] {v['urn'].split('::', 2)[-1]}", soft_wrap=True, highlight=False)
        console.print(f"    {v['message']}", soft_wrap=True, markup=False, highlight=False)


def _policies_markdown(policies: dict | None) -> str:
    if policies is None:
        return ""
    out = f"\n### Policies\n\n{_verdict(policies)}.\n\n"
    if policies["violations"]:
        out += "| level | policy | resource | message |\n|---|---|---|---|\n"
        for v in policies["violations"]:
            icon = "❌" if v["level"] == "mandatory" else "⚠️"
            message = v["message"].replace("|", "\\|").replace("\n", " ")
            out += f"| {icon} {v['level']} | `{v['policy']}` | `{v['urn'].split('::', 2)[-1]}` | {message} |\n"
    return out
