"""What `modelfleet plan` prints, in its three formats: the keys and sections the issues promise, numbers that
agree with each other and with the catalogue, and the same bytes on every run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfleet.catalogue import hardware
from modelfleet.loader import load_fleet
from modelfleet.review import load_pack
from modelfleet.plan import build_plan

PROJECT = Path(__file__).resolve().parent.parent


def plan_output(stack: str, fmt: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    return subprocess.run([sys.executable, "-m", "modelfleet.cli", "plan", "--stack", stack, "--format", fmt,
                           "--root", str(PROJECT)], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture(scope="module")
def prod_json() -> dict:
    return json.loads(plan_output("prod", "json"))


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_text_and_markdown_are_byte_identical_across_runs(fmt):
    assert plan_output("staging", fmt) == plan_output("staging", fmt)


def test_json_carries_every_promised_key(prod_json):
    assert {"stack", "environment", "regions", "resources", "summary", "cost", "warnings", "capacity", "policies",
            "region_plans"} <= prod_json.keys()
    assert prod_json["policies"]["evaluated"] and all(
        {"policy", "level", "urn", "message"} == set(v) for v in prod_json["policies"]["violations"])
    capacity = prod_json["capacity"]["models"]
    assert set(capacity) == {"fraud-detector", "sentiment"}
    for model in capacity.values():
        assert set(model["regions"]) == set(prod_json["regions"])
        for entry in model["regions"].values():
            assert {"replicas", "gpus", "tuned", "throughput_per_replica", "p99_ms", "record"} <= entry.keys()


def test_summary_counts_agree_with_the_resources(prod_json):
    resources, summary = prod_json["resources"], prod_json["summary"]
    assert summary["resource_count"] == len(resources)
    assert sum(summary["by_cloud"].values()) == len(resources)
    assert sum(summary["by_region"].values()) == len(resources)
    assert sum(summary["by_type"].values()) == len(resources)
    assert {r["type"] for r in resources} == set(summary["by_type"])
    # Every region of the stack has its own cluster in the tree.
    clusters = {r["name"] for r in resources if r["type"] in ("aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster")}
    assert len(clusters) == len(prod_json["regions"])


def test_every_cost_line_is_catalogue_price_times_planned_nodes():
    plan = build_plan(load_fleet(PROJECT, "prod"))
    catalogue = hardware()
    for region in plan.regions:
        platform = getattr(catalogue.platform, region.cloud)
        lines = {line.item: line for line in region.cost}
        control = lines.pop("cluster control plane")
        assert (control.quantity, control.hourly_usd_each) == (1, platform.cluster_hourly_usd)
        nat = lines.pop("NAT gateways", None)
        if region.cloud == "aws":
            assert (nat.quantity, nat.hourly_usd_each) == (region.nat_gateways, platform.nat_gateway_hourly_usd)
        entry = lines.pop("global entry load balancer")  # prod routes globally (routing.endpoint)
        assert (entry.quantity, entry.hourly_usd_each) == (
            1, catalogue.routing.entry_load_balancer_hourly_usd[region.cloud])
        endpoints = lines.pop("interface endpoints (per zone)", None)
        if region.cloud == "aws":
            assert (endpoints.quantity, endpoints.hourly_usd_each) == (
                len(region.interface_endpoints) * len(region.zones), platform.interface_endpoint_hourly_usd)
        else:
            assert endpoints is None
        for pool in region.pools:
            line = lines.pop(f"pool {pool.name} ({pool.instance_type})")
            offering = (getattr(catalogue.system_pool, region.cloud) if pool.hardware_class == "system"
                        else catalogue.classes[pool.hardware_class].on(region.cloud))
            assert line.hourly_usd_each == offering.hourly_usd
            assert line.quantity == pool.desired_nodes
            assert line.monthly_usd == pytest.approx(pool.desired_nodes * offering.hourly_usd * catalogue.hours_per_month,
                                                     abs=0.005)  # cents
        assert not lines, f"unexplained cost lines in {region.ref}: {sorted(lines)}"
    assert plan.monthly_usd == pytest.approx(sum(l.monthly_usd for r in plan.regions for l in r.cost)
                                             + sum(l.monthly_usd for l in plan.global_cost))  # Route53


def test_gpu_nodes_follow_replicas_and_gpus_per_node(prod_json):
    plan = build_plan(load_fleet(PROJECT, "prod"))
    for region in plan.regions:
        for pool in (p for p in region.pools if p.is_gpu):
            members = [p for p in region.placements if p.pool == pool.name]
            gpus = sum(p.max_replicas * p.gpus_per_replica for p in members)
            assert pool.max_nodes == math.ceil(gpus / pool.gpus_per_node)
            reported = next(p for p in prod_json["summary"]["pools"] if p["region"] == region.ref and p["pool"] == pool.name)
            assert (reported["min_nodes"], reported["max_nodes"], reported["max_gpus"]) == \
                (pool.min_nodes, pool.max_nodes, pool.max_nodes * pool.gpus_per_node)


def test_text_report_has_each_section():
    text = plan_output("prod", "text")
    for heading in ("modelfleet plan — stack prod (prod), 4 region(s), 2 model(s)", "(pulumi:pulumi:Stack)",
                    "Resources per region and type", "Per cloud: aws", "Regions: network and cluster",
                    "Node pools (nodes: min / desired / max)", "Capacity (replicas = ceil(rps x 1.3",
                    "against a budget of $60,000: within budget", "warning: untuned",
                    f"Policies — {len(load_pack())} policies evaluated",
                    "GPU quotas to request before the first `pulumi up`", "GPUS_ALL_REGIONS: at least 36 GPUs"):  # prod runs every policy of the pack
        assert heading in text, heading
    assert "\x1b[" not in text, "no colour codes when the output is not a terminal"


def test_markdown_report_is_a_pr_comment():
    markdown = plan_output("prod", "markdown")
    assert markdown.startswith("## modelfleet plan — `prod` (prod)")
    for section in ("### Node pools", "### Capacity", "### GPU quotas to request", "### Warnings", "### Policies", "<details><summary>Resources by type"):
        assert section in markdown, section
    assert "| aws:us-east-1 | 10.1.0.0/16 | 3 |" in markdown


def test_gpu_quotas_cover_every_pool_at_its_maximum(prod_json):
    """By hand from the example specs: fraud-detector up to 12 replicas of 1 L4, sentiment up to 6 of 1 spot T4,
    in every region. AWS counts vCPUs per family (g6.2xlarge 8, g4dn.xlarge 4), GCP counts GPUs per model."""
    expected = []
    for region in ("aws:us-east-1", "aws:eu-west-1"):
        expected += [(region, "L-3819A6DF", 6 * 4, "vCPUs", ["gpu-t4-spot"]),
                     (region, "L-DB2E81BA", 12 * 8, "vCPUs", ["gpu-l4"])]
    for region in ("gcp:us-central1", "gcp:europe-west4"):
        expected += [(region, "NVIDIA_L4_GPUS", 12, "GPUs", ["gpu-l4"]),
                     (region, "PREEMPTIBLE_NVIDIA_T4_GPUS", 6, "GPUs", ["gpu-t4-spot"])]
    quotas = prod_json["quotas"]
    assert [(q["region"], q["quota"], q["amount"], q["unit"], q["pools"]) for q in quotas["regions"]] == expected
    assert quotas["gcp_gpus_all_regions"] == 2 * (12 + 6)
    assert "container.googleapis.com" in quotas["gcp_services"]


def test_every_gcp_accelerator_in_the_catalogue_has_a_quota_metric():
    from modelfleet.plan import GCP_GPU_QUOTA

    accelerators = {o.accelerator for c in hardware().classes.values() if (o := c.on("gcp")) and o.accelerator}
    assert accelerators and accelerators <= set(GCP_GPU_QUOTA)
