"""The fleet plan: pure decisions, checked without Pulumi, and the offline plan built on it."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelfleet.catalogue import hardware
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan

PROJECT = Path(__file__).resolve().parent.parent

GOLDEN = Path(__file__).parent / "golden"
STACKS = ["dev", "staging", "prod", "local"]


def plan_of(stack: str, root: Path = PROJECT):
    return build_plan(load_fleet(root, stack))


def test_region_networks_never_overlap_and_subnets_stay_inside():
    plan = plan_of("prod")
    networks = [ipaddress.ip_network(r.cidr) for r in plan.regions]
    assert len(networks) == 4
    for i, a in enumerate(networks):
        assert all(not a.overlaps(b) for b in networks[i + 1:])
    for region in plan.regions:
        vpc = ipaddress.ip_network(region.cidr)
        subnets = [ipaddress.ip_network(s) for s in region.private_subnets + region.public_subnets]
        subnets += [ipaddress.ip_network(region.pods_cidr), ipaddress.ip_network(region.services_cidr)] \
            if region.cloud == "gcp" else []
        assert all(s.subnet_of(vpc) for s in subnets), region.key
        for i, a in enumerate(subnets):
            assert all(not a.overlaps(b) for b in subnets[i + 1:]), (region.key, a)


def test_nat_layout_follows_environment():
    assert [r.nat_gateways for r in plan_of("prod").regions if r.cloud == "aws"] == [3, 3]
    assert [r.nat_gateways for r in plan_of("dev").regions] == [1]


def test_gpu_pools_come_from_the_catalogue_and_are_tainted():
    for region in plan_of("prod").regions:
        gpu_pools = [p for p in region.pools if p.is_gpu]
        assert {p.hardware_class for p in gpu_pools} == {"nvidia-l4", "nvidia-t4"}
        for pool in gpu_pools:
            offering = hardware().classes[pool.hardware_class].on(region.cloud)
            assert pool.instance_type == offering.instance_type
            assert pool.hourly_usd_per_node == offering.hourly_usd
            assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pool.taints)
            assert pool.min_nodes <= pool.desired_nodes <= pool.max_nodes


def test_pool_bounds_follow_replica_bounds(project_copy: Path):
    spec = project_copy / "models" / "fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("gpu_class: nvidia-l4", "gpu_class: nvidia-h100")
                    .replace("max_replicas: 12", "max_replicas: 17"))
    region = plan_of("dev", project_copy).regions[0]
    pool = next(p for p in region.pools if p.hardware_class == "nvidia-h100")
    # 8 GPUs per p5.48xlarge: 2 replicas need 1 node, 17 replicas need 3.
    assert (pool.min_nodes, pool.max_nodes, pool.max_gpus) == (1, 3, 24)


def test_cost_is_the_catalogue_times_nodes():
    plan = plan_of("dev")
    region = plan.regions[0]
    hours = hardware().hours_per_month
    l4 = next(p for p in region.pools if p.hardware_class == "nvidia-l4")
    # Untuned in dev: the declared minimum of replicas, one L4 each, one L4 per g6.2xlarge node.
    assert l4.desired_nodes == plan.model("fraud-detector").scaling.min_replicas
    [line] = [line for line in region.cost if line.pool == l4.name]
    assert line.quantity == l4.desired_nodes
    assert line.hourly_usd_each == hardware().classes["nvidia-l4"].aws.hourly_usd
    expected = sum(line.quantity * line.hourly_usd_each * hours for line in region.cost)
    assert region.monthly_usd == pytest.approx(expected, abs=0.05)


def test_budget_overrun_is_a_warning(project_copy: Path):
    stack = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace("budget_monthly_usd: 6000", "budget_monthly_usd: 100"))
    plan = plan_of("dev", project_copy)
    assert plan.monthly_usd > 100
    assert any("exceeds the budget of $100" in w for w in plan.warnings)


def _plan_json(stack: str, root: Path = PROJECT) -> str:
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    return subprocess.run([sys.executable, "-m", "modelfleet.cli", "plan", "--stack", stack, "--format", "json",
                           "--root", str(root)], check=True, capture_output=True, text=True, env=env).stdout


def test_offline_plan_is_byte_identical_across_runs():
    first, second = _plan_json("prod"), _plan_json("prod")
    assert first == second
    data = json.loads(first)
    assert {"stack", "resources", "summary", "cost"} <= data.keys()
    assert data["cost"]["monthly_usd_total"] > 0
    assert all({"type", "name", "parent", "provider", "inputs"} <= r.keys() for r in data["resources"])


def _none_paths(value, path=""):
    if value is None:
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _none_paths(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _none_paths(v, f"{path}[{i}]")


@pytest.mark.parametrize("stack", STACKS)
def test_no_none_leaks_into_any_resource(evaluated, stack):
    leaks = [f"{r.urn}{p}" for r in evaluated(stack).resources for p in _none_paths(r.inputs)]
    assert not leaks, leaks[:10]


@pytest.mark.parametrize("stack", STACKS)
def test_every_cloud_resource_has_an_explicit_provider(evaluated, stack):
    defaulted = [r.urn for r in evaluated(stack).resources
                 if r.custom and not r.is_provider and r.type.split(":")[0] in ("aws", "gcp", "kubernetes")
                 and r.provider is None]
    assert not defaulted, defaulted[:10]


@pytest.mark.parametrize("stack", STACKS)
def test_golden_summary(evaluated, stack):
    """Summaries of the example stacks. Regenerate after an intended change: UPDATE_GOLDEN=1 make test."""
    from modelfleet.report import Report

    report = Report(plan_of(stack), evaluated(stack))
    actual = json.dumps({"summary": report.summary(), "cost": report.cost()}, indent=2, sort_keys=True) + "\n"
    golden = GOLDEN / f"{stack}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(actual)
        pytest.fail(f"rewrote {golden.name}: review `git diff tests/golden`, then run the tests without UPDATE_GOLDEN")
    assert golden.exists(), f"no golden file {golden}; run UPDATE_GOLDEN=1 make test"
    assert actual == golden.read_text(), f"{stack} plan summary changed; if intended, run UPDATE_GOLDEN=1 make test"


@pytest.mark.parametrize("edit, line", [
    (("stacks/Pulumi.dev.yaml", "budget_monthly_usd: 6000", "budget_monthly_usd: -1"),
     "stacks/Pulumi.dev.yaml:7 modelfleet:budget_monthly_usd: must be > 0, got -1"),
    (("models/sentiment.yaml", "gpu_class: nvidia-t4", "gpu_class: nvidia-a10g"),
     "stacks/Pulumi.prod.yaml:7 modelfleet:regions[2]: nvidia-a10g (model sentiment, models/sentiment.yaml) is not "
     "offered in gcp:us-central1"),
    (("stacks/Pulumi.prod.yaml", "- gcp:europe-west4", "- {region: gcp:europe-west4, cidr: 10.32.0.0/16}"),
     "stacks/Pulumi.prod.yaml:8 modelfleet:regions[3].cidr: 10.32.0.0/16 overlaps 10.32.0.0/16 of gcp:us-central1"),
    (("stacks/Pulumi.prod.yaml", "aws:eu-west-1", "aws:eu-west-9"),
     "stacks/Pulumi.prod.yaml:6 modelfleet:regions[1].region: unknown aws region 'eu-west-9'"),
])
def test_the_program_stops_on_a_bad_spec_before_declaring_anything(project_copy: Path, edit, line):
    """Under `pulumi up` the spec comes from the engine's config; problems stop the program at its first line,
    before any resource, with the same file:line report as `modelfleet validate` (a RunError: no traceback)."""
    import pulumi

    from modelfleet.offline import evaluate

    relative, old, new = edit
    path = project_copy / relative
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    stack = relative.split(".")[1] if relative.startswith("stacks/") else "prod"
    with pytest.raises(pulumi.RunError) as raised:
        evaluate(project_copy, stack)
    assert "the fleet spec has problems" in str(raised.value)
    assert any(l.startswith(line) for l in str(raised.value).splitlines()), str(raised.value)
