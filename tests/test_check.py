"""`modelfleet check`: the example stacks pass; a pull request that adds bad resources or overspends fails
with messages that name the resource and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelfleet.cli import app

# What a careless pull request might add to __main__.py: resources that bypass the plan.
ROGUE_RESOURCES = '''
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

rogue_aws = aws.Provider("rogue", region="us-east-1")
in_aws = pulumi.ResourceOptions(provider=rogue_aws)
aws.ec2.Instance("rogue-node", ami="ami-0abcdef1234567890", instance_type="g6.2xlarge",
                 associate_public_ip_address=True, subnet_id="subnet-1", opts=in_aws)
aws.eks.NodeGroup("rogue-gpu-pool", cluster_name="c", node_role_arn="arn:aws:iam::123456789012:role/n",
                  subnet_ids=["subnet-1"], ami_type="AL2023_x86_64_NVIDIA", instance_types=["g6.2xlarge"],
                  labels={"nvidia.com/gpu.present": "true"},
                  scaling_config={"min_size": 1, "max_size": 2, "desired_size": 1}, opts=in_aws)
rogue_k8s = k8s.Provider("rogue-k8s", kubeconfig="{}")
k8s.apps.v1.Deployment(
    "rogue-triton",
    metadata={"name": "rogue", "namespace": "modelfleet-dev", "labels": {"modelfleet.io/model": "fraud-detector"}},
    spec={"selector": {"matchLabels": {"app": "rogue"}},
          "template": {"metadata": {"labels": {"app": "rogue"}},
                       "spec": {"containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3"}]}}},
    opts=pulumi.ResourceOptions(provider=rogue_k8s))
'''


def check(root: Path, stack: str):
    return CliRunner().invoke(app, ["check", "--stack", stack, "--root", str(root)])


PLACEHOLDER = "    placeholder: true\n"


def test_the_dev_example_passes_the_check_with_its_placeholder_flagged():
    result = check(Path(__file__).resolve().parent.parent, "dev")
    assert result.exit_code == 0, result.output
    assert "0 mandatory violation(s)" in result.output
    assert "advisory deployer-access-decided " in result.output


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_staging_and_prod_examples_fail_only_on_the_undecided_deployer_access(stack):
    """The examples are not deployable as committed: their deployer access is a marked placeholder."""
    result = check(Path(__file__).resolve().parent.parent, stack)
    assert result.exit_code == 1, result.output
    assert "1 mandatory violation(s)" in result.output
    assert "mandatory deployer-access-decided modelfleet:fleet:DeployerAccess::deployer-access" in result.output


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_example_stacks_pass_the_check_once_the_deployer_access_is_decided(project_copy: Path, stack):
    stack_file = project_copy / "stacks" / f"Pulumi.{stack}.yaml"
    text = stack_file.read_text()
    assert PLACEHOLDER in text
    stack_file.write_text(text.replace(PLACEHOLDER, ""))
    result = check(project_copy, stack)
    assert result.exit_code == 0, result.output
    assert "0 mandatory violation(s)" in result.output
    assert "deployer-access-decided" not in result.output


def test_a_mutated_stack_fails_with_the_right_messages(project_copy: Path):
    main = project_copy / "__main__.py"
    main.write_text(main.read_text() + ROGUE_RESOURCES)
    stack = project_copy / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace("budget_monthly_usd: 6000", "budget_monthly_usd: 500"))

    result = check(project_copy, "dev")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()

    def violation(policy: str, resource: str) -> str:
        [index] = [i for i, line in enumerate(lines) if line.startswith(f"mandatory {policy} ") and resource in line]
        return lines[index + 1]

    assert "associatePublicIpAddress" in violation("no-public-ip-on-nodes", "rogue-node")
    assert "no nvidia.com/gpu NoSchedule taint" in violation("gpu-pools-tainted", "rogue-gpu-pool")
    assert "not pinned by digest" in violation("images-pinned-by-digest", "rogue-triton")
    assert "over the budget of $500" in violation("cost-within-budget", "")
    assert all("Fix:" in violation(p, r) for p, r in [("no-public-ip-on-nodes", "rogue-node"),
                                                       ("gpu-pools-tainted", "rogue-gpu-pool")])
