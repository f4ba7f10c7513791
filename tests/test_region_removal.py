"""Removing a region: protected clusters need two deploys (retire, then remove), and `plan --previous` warns when
a stack drops a region whose deployed cluster is still protected."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from modelfleet.cli import app
from modelfleet.loader import load_fleet
from modelfleet.offline import evaluate
from modelfleet.plan import build_plan
from modelfleet.removal import removed_region_warnings

PROD_REGIONS = ["aws:us-east-1", "aws:eu-west-1", "gcp:us-central1", "gcp:europe-west4"]


def _drop(project: Path, line: str) -> None:
    stack = project / "stacks" / "Pulumi.prod.yaml"
    text = stack.read_text()
    assert f"    - {line}\n" in text
    stack.write_text(text.replace(f"    - {line}\n", ""))


def test_a_retiring_region_loses_its_deletion_protection_and_only_it(project_copy):
    stack = project_copy / "stacks" / "Pulumi.prod.yaml"
    stack.write_text(stack.read_text().replace("    - aws:eu-west-1\n", "    - {region: aws:eu-west-1, retire: true}\n"))
    plan = build_plan(load_fleet(project_copy, "prod"))
    assert {r.ref: r.deletion_protection for r in plan.regions} == {
        "aws:us-east-1": True, "aws:eu-west-1": False, "gcp:us-central1": True, "gcp:europe-west4": True}
    assert any(w.startswith("aws:eu-west-1 is retiring") for w in plan.warnings)
    evaluation = evaluate(project_copy, "prod")
    clusters = [r for r in evaluation.resources
                if r.type in ("aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster")]
    assert len(clusters) == 4
    assert {c.name: c.inputs["deletionProtection"] for c in clusters} == {
        "aws-us-east-1": True, "aws-eu-west-1": False, "gcp-us-central1": True, "gcp-europe-west4": True}
    # Marked as retiring, so prod's deletion-protection policy lets this one deploy through; the others keep it.
    assert {c.name: c.inputs.get("tags", {}).get("modelfleet-retiring") for c in clusters
            if c.type.startswith("aws:")} == {"aws-us-east-1": None, "aws-eu-west-1": "true"}
    from modelfleet.review import review

    result = review(evaluation)
    assert "deletion-protection" in result.evaluated
    assert [v for v in result.mandatory if v.policy == "deletion-protection"] == []


def test_protection_off_without_the_retiring_mark_is_still_refused_in_prod(project_copy):
    """The mark is what lets a retiring cluster through, not the protection being off."""
    stack = project_copy / "stacks" / "Pulumi.prod.yaml"
    stack.write_text(stack.read_text().replace("    - aws:eu-west-1\n", "    - {region: aws:eu-west-1, retire: true}\n"))
    evaluation = evaluate(project_copy, "prod")
    for resource in evaluation.resources:
        if resource.name == "aws-eu-west-1" and resource.type == "aws:eks/cluster:Cluster":
            del resource.inputs["tags"]
    from modelfleet.review import review

    flagged = [v for v in review(evaluation).mandatory if v.policy == "deletion-protection"]
    assert len(flagged) == 1 and "aws-eu-west-1" in flagged[0].urn


def _refs(plan) -> list[str]:
    return [r.ref for r in plan.regions]


def _previous(protected: dict[str, bool]) -> dict:
    return {"region_plans": [{"region": ref, "deletion_protection": on} for ref, on in protected.items()]}


def test_dropping_a_protected_region_warns_and_says_how(project_copy):
    _drop(project_copy, "gcp:europe-west4")
    plan = build_plan(load_fleet(project_copy, "prod"))
    (warning,) = removed_region_warnings(_previous(dict.fromkeys(PROD_REGIONS, True)), _refs(plan))
    assert warning.startswith("gcp:europe-west4 is no longer in the stack but its deployed cluster has deletion "
                              "protection")
    assert "retire: true" in warning


def test_dropping_a_retired_region_says_what_goes(project_copy):
    _drop(project_copy, "gcp:europe-west4")
    plan = build_plan(load_fleet(project_copy, "prod"))
    previous = _previous({**dict.fromkeys(PROD_REGIONS, True), "gcp:europe-west4": False})
    assert removed_region_warnings(previous, _refs(plan)) == (
        "gcp:europe-west4 is no longer in the stack: `pulumi up` deletes its cluster, network and models",)


def test_nothing_dropped_nothing_said():
    plan = build_plan(load_fleet(Path(__file__).resolve().parent.parent, "prod"))
    assert removed_region_warnings(_previous(dict.fromkeys(PROD_REGIONS, True)), _refs(plan)) == ()


def test_plan_previous_end_to_end(project_copy, tmp_path):
    runner = CliRunner()
    deployed = runner.invoke(app, ["plan", "--stack", "prod", "--format", "json", "--root", str(project_copy)])
    assert deployed.exit_code == 0
    baseline = tmp_path / "deployed.json"
    baseline.write_text(deployed.output)
    assert {r["region"]: r["deletion_protection"] for r in json.loads(deployed.output)["region_plans"]} == \
        dict.fromkeys(PROD_REGIONS, True)
    _drop(project_copy, "aws:eu-west-1")
    result = runner.invoke(app, ["plan", "--stack", "prod", "--format", "json", "--root", str(project_copy),
                                 "--previous", str(baseline)])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.output)["warnings"]
    assert sum("aws:eu-west-1 is no longer in the stack but its deployed cluster has deletion protection" in w
               for w in warnings) == 1
    # `modelfleet diff` against the deployed plan (or the git base) says the same.
    from modelfleet.diff import diff_plans

    without_previous = runner.invoke(app, ["plan", "--stack", "prod", "--format", "json", "--root", str(project_copy)])
    appeared = diff_plans(json.loads(deployed.output), json.loads(without_previous.output)).warnings["appeared"]
    assert sum("aws:eu-west-1 is no longer in the stack but its deployed cluster has deletion protection" in w
               for w in appeared) == 1


def test_a_bad_previous_file_is_a_clear_error(tmp_path):
    root = str(Path(__file__).resolve().parent.parent)
    for content, words in [(None, "no such file"), ("{not json", "not a JSON plan"), ("[]", "has no region_plans")]:
        path = tmp_path / "previous.json"
        if content is not None:
            path.write_text(content)
        result = CliRunner().invoke(app, ["plan", "--stack", "dev", "--root", root, "--previous", str(path)])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output


def test_a_plan_from_before_the_field_is_judged_by_its_environment():
    old = {"environment": "prod", "region_plans": [{"region": "aws:eu-west-1"}]}
    (warning,) = removed_region_warnings(old, ["aws:us-east-1"])
    assert "has deletion protection" in warning
    old["environment"] = "dev"
    assert removed_region_warnings(old, ["aws:us-east-1"]) == (
        "aws:eu-west-1 is no longer in the stack: `pulumi up` deletes its cluster, network and models",)
