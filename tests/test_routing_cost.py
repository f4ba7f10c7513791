"""What global routing costs: Route53's zone and health checks and each region's entry load balancer, priced from
the table in modelfleet/data/hardware.yaml (read here directly, the expectation built from the stack and the
published price structure), in the fleet's total, in the plan and in `--fail-region`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import app
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]


def _prices() -> tuple[dict, int]:
    data = yaml.safe_load((ROOT / "modelfleet/data/hardware.yaml").read_text())
    return data["routing"], data["hours_per_month"]


def _expected(root: Path, stack: str) -> tuple[float, dict[str, float]]:
    """Route53 per month, and each region's entry load balancer, from the stack file and the price table."""
    prices, hours = _prices()
    config = yaml.safe_load((root / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    regions = [r if isinstance(r, str) else r["region"] for r in config["modelfleet:regions"]]
    routing = config.get("modelfleet:routing", {})
    models = config["modelfleet:models"]
    r53 = prices["route53"]
    features = 1 + (routing.get("health_check", {}).get("request_interval_s", 30) == 10)  # HTTPS (+ fast interval)
    dns = 0.0 if routing.get("existing_zone") else r53["hosted_zone_monthly_usd"]
    for region in regions:
        kind = "aws" if region.startswith("aws:") else "other"
        each = r53["health_check_monthly_usd"][kind] + features * r53["optional_feature_monthly_usd"][kind]
        dns += len(models) * each  # one check per model and region
    entries = {r: prices["entry_load_balancer_hourly_usd"][r.split(":")[0]] * hours for r in regions}
    return dns, entries


def test_prod_prices_route53_and_the_entry_load_balancers_into_the_fleet_total():
    plan = build_plan(load_fleet(ROOT, "prod"))
    dns, entries = _expected(ROOT, "prod")
    assert dns == pytest.approx(0.5 + 4 * 1.5 + 4 * 2.75)  # the table's June 2025 figures, by hand
    assert sum(line.monthly_usd for line in plan.global_cost) == pytest.approx(dns, abs=0.01)
    for region in plan.regions:
        [entry] = [line for line in region.cost if line.item == "global entry load balancer"]
        assert entry.monthly_usd == pytest.approx(entries[region.ref], abs=0.01)
    regional = sum(line.monthly_usd for r in plan.regions for line in r.cost)
    assert plan.monthly_usd == pytest.approx(regional + dns, abs=0.01)


def test_an_existing_zone_and_the_fast_interval_change_the_dns_price(project_copy):
    path = project_copy / "stacks" / "Pulumi.prod.yaml"
    data = yaml.safe_load(path.read_text())
    data["config"]["modelfleet:routing"] = {"existing_zone": "example.com", "health_check": {"request_interval_s": 10}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    plan = build_plan(load_fleet(project_copy, "prod"))
    dns, _ = _expected(project_copy, "prod")
    assert dns == pytest.approx(4 * 2.5 + 4 * 4.75)
    assert sum(line.monthly_usd for line in plan.global_cost) == pytest.approx(dns, abs=0.01)
    assert not [line for line in plan.global_cost if "zone" in line.item]


def test_dev_without_routing_pays_for_neither():
    plan = build_plan(load_fleet(ROOT, "dev"))
    assert plan.routing is None and plan.global_cost == ()
    assert not [line for r in plan.regions for line in r.cost if line.item == "global entry load balancer"]


def test_the_plan_and_fail_region_show_the_routing_cost():
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--stack", "prod", "--format", "json", "--fail-region", "aws:eu-west-1",
                                 "--root", str(ROOT)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    dns, entries = _expected(ROOT, "prod")
    cost = doc["routing"]["cost"]
    assert cost["dns_monthly_usd"] == pytest.approx(dns, abs=0.01)
    assert cost["entry_monthly_usd"] == pytest.approx(sum(entries.values()), abs=0.04)
    assert cost["queries_per_million_usd"] == {"fraud-detector": 0.60, "sentiment": 0.70}  # latency; geolocation
    standing = doc["routing"]["fail_region"]["standing"]
    assert standing["standing_monthly_usd"] == pytest.approx(cost["dns_monthly_usd"] + cost["entry_monthly_usd"])
    assert sum(x["monthly_usd"] for x in doc["cost"]["global"]) == pytest.approx(dns, abs=0.01)
    text = runner.invoke(app, ["plan", "--stack", "prod", "--fail-region", "aws:eu-west-1", "--root", str(ROOT)])
    assert text.exit_code == 0
    assert f"standing (Route53 ${cost['dns_monthly_usd']:,.2f}" in text.output
    markdown = runner.invoke(app, ["plan", "--stack", "prod", "--format", "markdown", "--root", str(ROOT)])
    assert "| routing cost | $/month |" in markdown.output and "entry load balancer aws:eu-west-1" in markdown.output
