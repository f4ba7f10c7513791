"""The scale path: a stack per region plus a global stack joined by StackReference (`modelfleet:role`), evaluated
offline with the real program — the global stack reads the regional stacks' exports and declares the same
Route53 zone, health checks and records as the single-stack form; each regional stack declares its own region
only; bad role keys are refused with the file, the line, the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import app

SINGLE, GLOBAL, REGIONAL = "staging", "stg-global", {"aws:us-east-1": "stg-use1", "gcp:europe-west4": "stg-euw4"}
ROUTE53 = ("aws:route53/zone:Zone", "aws:route53/healthCheck:HealthCheck", "aws:route53/record:Record")
CLUSTERS = ("aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster")


def _route53(evaluation) -> dict[tuple[str, str], dict]:
    return {(r.type, r.name): r.inputs for r in evaluation.resources if r.type in ROUTE53}


def test_the_global_stack_declares_the_single_stacks_dns_records(evaluated):
    single, split = _route53(evaluated(SINGLE)), _route53(evaluated(GLOBAL))
    records = [k for k in single if k[0] == ROUTE53[2]]
    # Two entry records, fraud-detector's latency set over both regions, sentiment's two geolocation records with
    # its EU set (gcp:europe-west4) and default set (both regions).
    assert len(records) == 2 + 2 + (2 + 1 + 2) and len([k for k in single if k[0] == ROUTE53[1]]) == 4
    assert split == single
    # The entries are the regional stacks' load balancers, as their own programs exported them.
    entries = {i["name"]: i for (t, _), i in split.items() if t == ROUTE53[2] and "setIdentifier" not in i}
    for ref, stack in REGIONAL.items():
        exported = evaluated(stack).outputs
        entry = entries[f"{ref.replace(':', '-')}.staging.inference.example.com"]
        if ref.startswith("aws:"):
            assert entry["aliases"][0]["name"] == exported["globalEntryHostname"] and exported["globalEntryIp"] is None
        else:
            assert entry["records"] == [exported["globalEntryIp"]] and exported["globalEntryHostname"] is None


def test_the_global_stack_declares_nothing_regional_and_regional_stacks_no_dns(evaluated):
    split = evaluated(GLOBAL).resources
    assert {r.type for r in split if r.custom and not r.is_provider} == set(ROUTE53)
    [cost] = [r for r in split if r.type == "modelfleet:fleet:Cost"]
    assert {line["region"] for line in cost.inputs["lines"]} == {"global"}
    assert all(line["item"].startswith("Route53") for line in cost.inputs["lines"])
    for ref, stack in REGIONAL.items():
        resources = evaluated(stack).resources
        assert not [r for r in resources if r.type in ROUTE53]
        clusters = [r for r in resources if r.type in CLUSTERS]
        assert len(clusters) == 1 and ref.split(":")[0] == clusters[0].type.split(":")[0]
        regions = {r.name.split("-", 2)[0] + ":" + r.name.split("-", 2)[1] for r in resources
                   if r.type == "modelfleet:fleet:Region"}
        assert len(regions) == 1
        # Its cost is its region's alone; Route53's is the global stack's.
        [cost] = [r for r in resources if r.type == "modelfleet:fleet:Cost"]
        assert {line["region"] for line in cost.inputs["lines"]} == {ref.replace(":", "-")}
        # GCP's project APIs only where a GCP region is deployed.
        apis = [r for r in resources if r.type == "gcp:projects/service:Service"]
        assert bool(apis) is ref.startswith("gcp:")


def _stack(root: Path, name: str) -> Path:
    return root / "stacks" / f"Pulumi.{name}.yaml"


def _set(path: Path, **keys) -> None:
    data = yaml.safe_load(path.read_text())
    for key, value in keys.items():
        if value is None:
            data["config"].pop(f"modelfleet:{key}", None)
        else:
            data["config"][f"modelfleet:{key}"] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("stack, keys, expected", [
    ("stg-use1", {"role_region": None}, "modelfleet:role_region: a regional stack deploys one of its regions"),
    ("stg-use1", {"role_region": "aws:eu-west-1"}, "got aws:eu-west-1: set role_region to one of them"),
    ("stg-global", {"region_stacks": {"aws:us-east-1": "example-org/modelfleet/stg-use1"}},
     "modelfleet:region_stacks: a global stack reads every region's entry from its regional stack; add "
     "gcp:europe-west4"),
    ("stg-global", {"region_stacks": {"aws:us-east-1": "stg-use1", "gcp:europe-west4": "a/b/c"}},
     "modelfleet:region_stacks.aws:us-east-1"),
    ("staging", {"role_region": "aws:us-east-1"}, "role_region: only a regional stack names its region"),
    ("stg-use1", {"role": "regionl"}, "modelfleet:role"),
    ("stg-global", {"routing": {"enabled": False}}, "use role: all"),
])
def test_bad_role_keys_name_the_file_line_field_and_fix(project_copy, stack, keys, expected):
    _set(_stack(project_copy, stack), **keys)
    result = CliRunner().invoke(app, ["validate", "--root", str(project_copy), "--stack", stack])
    assert result.exit_code == 2, result.output
    assert f"stacks/Pulumi.{stack}.yaml:" in result.output and expected in result.output
    assert "Traceback" not in result.output


def test_the_plan_of_a_split_stack_says_which_part_it_deploys():
    root = Path(__file__).resolve().parents[1]
    result = CliRunner().invoke(app, ["plan", "--stack", "stg-use1", "--format", "markdown", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "role regional: this stack deploys aws:us-east-1 only" in result.output.splitlines()[0]
