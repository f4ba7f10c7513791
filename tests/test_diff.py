"""`modelfleet diff`: the edits users make to specs and stacks, each planned offline before and after, and the
diff checked against expectations derived from the providers' rules and the hardware catalogue, not from the
diff's own output. Scenarios copy models/ and stacks/ into a temporary project, so other changes to the plan (new
resources) do not break them: no test counts the whole plan."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelfleet.cli_diff import _head_plan
from modelfleet.diff import classify, diff_plans, render_json, render_markdown, render_text
from tests.project import copy_project

PROJECT = Path(__file__).resolve().parent.parent
HARDWARE = yaml.safe_load((PROJECT / "modelfleet/data/hardware.yaml").read_text())
HOURS = HARDWARE["hours_per_month"]


def _copy(tmp: Path) -> Path:
    copy_project(tmp)
    (tmp / ".gitignore").write_text("build/\n")
    return tmp


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def dev_base(tmp_path_factory) -> dict:
    return _head_plan(_copy(tmp_path_factory.mktemp("base")), "dev")


@pytest.fixture
def project(tmp_path) -> Path:
    return _copy(tmp_path)


def _by(diff, action: str) -> dict[str, str]:
    return {r.urn: r.type for r in diff.resources if r.action == action}


def _of_type(plan: dict, resource_type: str) -> set[str]:
    return {r["urn"] for r in plan["resources"] if r["type"] == resource_type}


def test_identical_inputs_give_an_empty_diff(dev_base, project):
    again = _head_plan(project, "dev")  # a second, independent evaluation of the same specs
    diff = diff_plans(dev_base, again)
    assert diff.empty and diff.resources == []
    assert diff.summary_line() == "+0 ~0 -0, 0 replacements, +$0/month"
    assert "No changes." in render_text(diff) and "No changes" in render_markdown(diff)


def test_a_cidr_change_replaces_the_vpc_its_subnets_and_the_node_groups_in_them(dev_base, project):
    _edit(project / "stacks/Pulumi.dev.yaml", "    - aws:us-east-1", "    - {region: aws:us-east-1, cidr: 10.50.0.0/16}")
    after = _head_plan(project, "dev")
    diff = diff_plans(dev_base, after)

    # terraform-provider-aws: aws_vpc.cidr_block and aws_subnet.cidr_block / vpc_id are ForceNew, and
    # aws_eks_node_group.subnet_ids is ForceNew: the node groups follow their (new) subnets.
    vpcs, subnets = _of_type(dev_base, "aws:ec2/vpc:Vpc"), _of_type(dev_base, "aws:ec2/subnet:Subnet")
    groups = _of_type(dev_base, "aws:eks/nodeGroup:NodeGroup")
    assert len(vpcs) == 1 and len(subnets) >= 2 and groups
    assert set(_by(diff, "replace")) == vpcs | subnets | groups
    assert not _by(diff, "create") and not _by(diff, "delete")
    # EKS updates a cluster's subnets in place (subnet_ids is not ForceNew in aws_eks_cluster).
    assert _of_type(dev_base, "aws:eks/cluster:Cluster") <= set(_by(diff, "update"))
    vpc = next(r for r in diff.resources if r.urn in vpcs)
    assert [(c.path, c.old, c.new) for c in vpc.changes] == [("cidrBlock", "10.1.0.0/16", "10.50.0.0/16")]
    assert {r.urn for r in diff.resources if r.warning and "REPLACES" in r.warning} == vpcs | subnets | groups
    assert diff.cost["delta_monthly_usd"] == 0
    assert diff.summary_line().startswith(f"+0 ~{diff._count('update')} -0, {len(vpcs | subnets | groups)} replacements")


def test_raising_traffic_on_a_tuned_model_adds_nodes_at_the_catalogue_price(project):
    model = project / "models/fraud-detector.yaml"
    _edit(model, "gpu_class: nvidia-l4", "gpu_class: cpu")
    _edit(model, "gpus_per_replica: 1", "gpus_per_replica: 0")
    before = _head_plan(project, "dev")
    _edit(model, "aws:us-east-1: 1200", "aws:us-east-1: 60000")
    diff = diff_plans(before, _head_plan(project, "dev"))

    throughput = yaml.safe_load((project / "models/fraud-detector.tuning/cpu.yaml").read_text())["chosen"]["throughput_per_s"]
    region = before["capacity"]["models"]["fraud-detector"]["regions"]["aws:us-east-1"]
    headroom = before["capacity"]["headroom"]
    replicas = math.ceil(60000 * headroom / throughput)  # one cpu replica per c6i.2xlarge node
    added = replicas - region["replicas"]
    assert added > 0
    expected = round(added * HARDWARE["classes"]["cpu"]["aws"]["hourly_usd"] * HOURS, 2)
    assert diff.cost["delta_monthly_usd"] == pytest.approx(expected)
    assert diff.cost["by_region"]["aws:us-east-1"]["delta"] == pytest.approx(expected)
    assert diff.cost["by_model"]["fraud-detector"]["aws:us-east-1"]["delta"] == pytest.approx(expected)
    # Desired sizes are the autoscalers' (ignore_changes): nothing is replaced, nothing is created.
    assert not _by(diff, "replace") and not _by(diff, "create") and not _by(diff, "delete")
    assert diff.summary_line().endswith(f"+${expected:,.0f}/month")


def test_adding_a_region_creates_only_in_that_region_and_adds_its_cost(dev_base, project):
    _edit(project / "stacks/Pulumi.dev.yaml", "    - aws:us-east-1\n", "    - aws:us-east-1\n    - aws:eu-west-1\n")
    after = _head_plan(project, "dev")
    diff = diff_plans(dev_base, after)
    created = _by(diff, "create")
    assert created and not _by(diff, "replace") and not _by(diff, "delete")
    assert all("eu-west-1" in urn for urn in created), [u for u in created if "eu-west-1" not in u]
    assert _of_type(after, "aws:ec2/vpc:Vpc") - _of_type(dev_base, "aws:ec2/vpc:Vpc") <= set(created)
    new_region = after["cost"]["regions"]["aws:eu-west-1"]["monthly_usd"]
    assert diff.cost["by_region"] == {"aws:eu-west-1": {"old": 0.0, "new": new_region, "delta": new_region}}
    assert diff.cost["delta_monthly_usd"] == pytest.approx(new_region)
    assert diff.cost["budget_left_usd"] == pytest.approx(after["cost"]["budget_monthly_usd"] - diff.cost["monthly_usd_new"])


def test_switching_a_gpu_class_swaps_the_pool_and_moves_the_cost_by_the_catalogue_prices(dev_base, project):
    _edit(project / "models/sentiment.yaml", "gpu_class: nvidia-t4", "gpu_class: nvidia-l4")
    after = _head_plan(project, "dev")
    diff = diff_plans(dev_base, after)
    groups_before = _of_type(dev_base, "aws:eks/nodeGroup:NodeGroup")
    groups_after = _of_type(after, "aws:eks/nodeGroup:NodeGroup")
    gone, new = groups_before - groups_after, groups_after - groups_before
    assert len(gone) == 1 and "gpu-t4-spot" in next(iter(gone)) and len(new) == 1 and "l4" in next(iter(new))
    assert gone <= set(_by(diff, "delete")) and new <= set(_by(diff, "create"))
    assert any("DELETES a node group" in (r.warning or "") for r in diff.resources if r.urn in gone)
    # The Deployment's pod template moves to the other pool: an update, since only .spec.selector or the
    # metadata name/namespace replace a Deployment (pulumi-kubernetes diff.go).
    deployments = {r.urn: r for r in diff.resources if r.type == "kubernetes:apps/v1:Deployment"}
    assert deployments and all(r.action == "update" for r in deployments.values())
    assert all(c.path.startswith("spec.template.") for r in deployments.values() for c in r.changes)
    nodes = {p["pool"]: p["desired_nodes"] for p in dev_base["summary"]["pools"]}
    nodes_after = {p["pool"]: p["desired_nodes"] for p in after["summary"]["pools"]}
    t4, l4 = (HARDWARE["classes"][c]["aws"]["hourly_usd"] for c in ("nvidia-t4", "nvidia-l4"))
    new_pool = next(iter(set(nodes_after) - set(nodes)))
    expected = round((nodes_after[new_pool] * l4 - nodes["gpu-t4-spot"] * t4) * HOURS, 2)
    assert diff.cost["delta_monthly_usd"] == pytest.approx(expected, abs=0.02)


def test_a_new_image_updates_the_deployments_in_place(dev_base):
    after = json.loads(json.dumps(dev_base))
    deployments = [r for r in after["resources"] if r["type"] == "kubernetes:apps/v1:Deployment"]
    assert deployments
    old_images = {}  # Triton's and the gateway inspector's Deployments: each had its own image
    for r in deployments:
        container = r["inputs"]["spec"]["template"]["spec"]["containers"][0]
        old_images[r["urn"]] = container["image"]
        container["image"] = "nvcr.io/nvidia/tritonserver:25.09-py3@sha256:" + "0" * 64
    diff = diff_plans(dev_base, after)
    assert set(_by(diff, "update")) == {r["urn"] for r in deployments}
    for r in diff.resources:
        assert [(c.path, c.old) for c in r.changes] == [("spec.template.spec.containers[0].image", old_images[r.urn])]
    assert diff.summary_line() == f"+0 ~{len(deployments)} -0, 0 replacements, +$0/month"


def test_lowering_the_budget_below_the_cost_makes_the_budget_policy_appear(dev_base, project):
    total = dev_base["cost"]["monthly_usd_total"]
    _edit(project / "stacks/Pulumi.dev.yaml", "budget_monthly_usd: 6000", f"budget_monthly_usd: {int(total // 2)}")
    diff = diff_plans(dev_base, _head_plan(project, "dev"))
    assert "cost-within-budget" in {v["policy"] for v in diff.policies["appeared"]}
    assert not diff.policies["disappeared"]
    assert diff.cost["within_budget"] is False and diff.cost["budget_left_usd"] < 0
    assert "cost-within-budget" in render_markdown(diff) and "OVER budget" in render_text(diff)
    back = diff_plans(_head_plan(project, "dev"), dev_base)
    assert "cost-within-budget" in {v["policy"] for v in back.policies["disappeared"]}


def _plan(resources: list[dict], cost: float = 0.0) -> dict:
    return {"stack": "t", "resources": resources,
            "cost": {"regions": {}, "monthly_usd_total": cost, "budget_monthly_usd": 100.0}}


def _res(urn: str, rtype: str, inputs: dict, **extra) -> dict:
    return {"urn": urn, "type": rtype, "name": urn, "custom": True, "inputs": inputs, **extra}


def test_secrets_never_reach_any_rendering():
    old = _plan([_res("p", "pulumi:providers:kubernetes", {"kubeconfig": "apiVersion: v1 old-token-AAAA"}),
                 _res("s", "kubernetes:core/v1:Secret", {"metadata": {"name": "x"}, "stringData": {"k": "hunter2"}}),
                 _res("d", "aws:rds/instance:Instance", {"password": "[secret]", "size": 1})])
    new = _plan([_res("p", "pulumi:providers:kubernetes", {"kubeconfig": "apiVersion: v1 new-token-BBBB"}),
                 _res("s", "kubernetes:core/v1:Secret", {"metadata": {"name": "x"}, "stringData": {"k": "swordfish"}}),
                 _res("d", "aws:rds/instance:Instance", {"password": "plain-leak", "size": 2})])
    diff = diff_plans(old, new)
    out = render_text(diff) + render_json(diff) + render_markdown(diff)
    for leaked in ("old-token-AAAA", "new-token-BBBB", "hunter2", "swordfish", "plain-leak"):
        assert leaked not in out
    assert {c.path for r in diff.resources for c in r.changes if c.secret} == {"kubeconfig", "stringData.k", "password"}
    assert "size: 1 → 2" in render_text(diff)
    # A Secret's data is in pulumi-kubernetes' replace list: changing it replaces the Secret.
    assert {r.urn: r.action for r in diff.resources}["s"] == "replace"


@pytest.mark.parametrize("old, new, replaced", [
    ("10.32.0.0/20", "10.32.0.0/19", False),  # an expansion: GCP widens the range in place
    ("10.32.0.0/20", "10.32.0.0/21", True),   # a shrink
    ("10.32.0.0/20", "10.40.0.0/20", True),   # a move
])
def test_gcp_subnetwork_cidr_replaces_unless_it_only_grows(old, new, replaced):
    verdict, _ = classify("gcp:compute/subnetwork:Subnetwork", "ipCidrRange", {"ipCidrRange": old},
                          {"ipCidrRange": new})
    assert verdict == ("replace" if replaced else "update")


def test_unknown_types_are_reported_as_may_replace_never_as_in_place():
    old = _plan([_res("x", "aws:rds/instance:Instance", {"engine": "postgres"})])
    new = _plan([_res("x", "aws:rds/instance:Instance", {"engine": "mysql"})])
    (r,) = diff_plans(old, new).resources
    assert r.action == "update" and r.uncertain and "no vendored replace-on-change data" in r.uncertain[0]


def test_ignore_changes_paths_are_not_changes():
    old = _plan([_res("g", "aws:eks/nodeGroup:NodeGroup", {"scalingConfig": {"desiredSize": 2, "maxSize": 4}},
                      ignore_changes=["scalingConfig.desiredSize"])])
    new = _plan([_res("g", "aws:eks/nodeGroup:NodeGroup", {"scalingConfig": {"desiredSize": 3, "maxSize": 4}},
                      ignore_changes=["scalingConfig.desiredSize"])])
    assert diff_plans(old, new).empty


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelfleet.cli", "diff", *args], capture_output=True, text=True,
                          cwd=cwd)


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_cli_against_a_git_base_and_across_a_spec_error(project, tmp_path):
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "base")
    status_before = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True)
    _edit(project / "stacks/Pulumi.dev.yaml", "    - aws:us-east-1", "    - {region: aws:us-east-1, cidr: 10.50.0.0/16}")
    done = _cli("--stack", "dev", "--format", "json", cwd=project)  # default base: merge base with main
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["counts"]["replace"] >= 3 and result["counts"]["create"] == 0
    assert any(r["type"] == "aws:ec2/vpc:Vpc" and r["action"] == "replace" for r in result["resources"])
    # The base was planned from an archive: the user's tree holds only the user's edit, nothing else.
    status_after = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True)
    assert status_before.stdout == "" and status_after.stdout.split() == ["M", "stacks/Pulumi.dev.yaml"]
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True, text=True).stdout
    assert len(worktrees.strip().splitlines()) == 1

    _edit(project / "models/sentiment.yaml", "max_batch_size: 64", "max_batch_size: lots")
    broken = _cli("--stack", "dev", "--base", "main", cwd=project)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    line = next(n for n, text in enumerate((project / "models/sentiment.yaml").read_text().splitlines(), 1)
                if text.startswith("max_batch_size"))
    assert f"models/sentiment.yaml:{line}" in broken.stderr

    # The broken spec committed as the base, the fix in the working tree: the error is the base's, named so.
    _git(project, "commit", "-qam", "broken")
    _edit(project / "models/sentiment.yaml", "max_batch_size: lots", "max_batch_size: 64")
    from_broken = _cli("--stack", "dev", "--base", "HEAD", cwd=project)
    assert from_broken.returncode == 2 and f"models/sentiment.yaml:{line}" in from_broken.stderr
    assert "HEAD" in from_broken.stderr


def test_cli_two_files_and_bad_files(dev_base, tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(dev_base))
    new.write_text(json.dumps(dev_base))
    same = _cli(str(old), str(new), "--format", "markdown", cwd=tmp_path)
    assert same.returncode == 0 and same.stdout.startswith("**`dev`: +0 ~0 -0, 0 replacements, +$0/month**")
    new.write_text("{\n  \"resources\": [\n  oops\n}")
    bad = _cli(str(old), str(new), cwd=tmp_path)
    assert bad.returncode == 2 and f"{new}:3" in bad.stderr and "Traceback" not in bad.stderr


def test_a_gcp_cidr_move_replaces_the_subnetwork_and_flags_what_was_not_transcribed(project):
    before = _head_plan(project, "prod")
    _edit(project / "stacks/Pulumi.prod.yaml", "    - gcp:us-central1", "    - {region: gcp:us-central1, cidr: 10.90.0.0/16}")
    diff = diff_plans(before, _head_plan(project, "prod"))
    subnetworks = {u for u in _of_type(before, "gcp:compute/subnetwork:Subnetwork") if "us-central1" in u}
    # terraform-provider-google: ip_cidr_range is ForceNew unless the new range contains the old one.
    assert len(subnetworks) == 1 and set(_by(diff, "replace")) == subnetworks
    clusters = {r.urn: r for r in diff.resources if r.type == "gcp:container/cluster:Cluster"}
    assert clusters and all(r.uncertain for r in clusters.values())  # GKE cluster rules not vendored: "may replace"
    assert all("europe-west4" not in r.urn and "aws" not in r.urn for r in diff.resources)
