"""Triton's Kubernetes workloads: valid for the cluster's version, decided by the plan, declared as planned."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from modelfleet import serving
from modelfleet.loader import load_fleet
from modelfleet.offline import evaluate
from modelfleet.plan import build_plan
from modelfleet.render import render

ROOT = Path(__file__).resolve().parents[1]
SERVING_PROGRAM = Path(__file__).resolve().parent / "programs" / "serving_only.py"
CLOUD_STACKS = ["dev", "staging", "prod"]


def plan_of(stack: str):
    return build_plan(load_fleet(ROOT, stack))


def objects(stack: str):
    plan = plan_of(stack)
    for region in plan.regions:
        for obj in serving.region_objects(plan, region, serving.placeholder_identity(region.cloud)):
            yield region, obj


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_every_manifest_passes_strict_validation_for_its_cluster_version(stack):
    seen = set()
    for region, obj in objects(stack):
        serving.validate_manifest(obj, region.kubernetes_version)
        seen.add(obj["kind"])
    assert seen == {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
                    "ScaledObject"}


def test_strict_validation_rejects_unknown_fields():
    region, deployment = next((r, o) for r, o in objects("prod") if o["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["gpu"] = 1
    with pytest.raises(serving.ManifestError, match="Deployment/triton-"):
        serving.validate_manifest(bad, region.kubernetes_version)
    region, scaled = next((r, o) for r, o in objects("prod") if o["kind"] == "ScaledObject")
    bad = copy.deepcopy(scaled)
    bad["spec"]["minReplicas"] = 1
    with pytest.raises(serving.ManifestError, match="ScaledObject/triton-.* spec: Additional properties"):
        serving.validate_manifest(bad, region.kubernetes_version)


def test_keda_is_pinned_to_a_release_tested_on_the_clusters_version():
    serving.check_keda_supports("1.33")
    with pytest.raises(serving.ServingError, match="KEDA 2.20.0 is tested on Kubernetes 1.33-1.35"):
        serving.check_keda_supports("1.29")


def test_the_image_is_pinned_by_digest():
    assert serving.TRITON_IMAGE.startswith("nvcr.io/nvidia/tritonserver:")
    digest = serving.TRITON_IMAGE.split("@", 1)[1]
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64


def test_deployment_reads_the_repository_from_the_bucket_and_loads_only_its_model():
    plan = plan_of("prod")
    for region in plan.regions:
        deployments = [o for o in serving.region_objects(plan, region, {}) if o["kind"] == "Deployment"]
        for d in deployments:
            model = d["metadata"]["labels"]["modelfleet.io/model"]
            args = d["spec"]["template"]["spec"]["containers"][0]["args"]
            scheme = "s3" if region.cloud == "aws" else "gs"
            assert f"--model-repository={scheme}://modelfleet-model-repository" in args
            assert "--model-control-mode=explicit" in args and f"--load-model={model}" in args


def test_probes_give_a_cold_start_the_plans_startup_budget():
    plan = plan_of("prod")
    region = plan.regions[0]
    for placement in region.placements:
        w = serving.workload(plan, region, placement)
        container = serving.deployment(plan, w)["spec"]["template"]["spec"]["containers"][0]
        startup = container["startupProbe"]
        assert startup["httpGet"]["path"] == "/v2/health/ready"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= placement.startup_budget_s > 0
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_scale_to_zero_only_where_the_spec_allows_it_with_its_cold_start_in_the_plan():
    plan = plan_of("prod")
    for region in plan.regions:
        for placement in region.placements:
            model = plan.model(placement.model)
            scaled = serving.scaled_object(plan, serving.workload(plan, region, placement))["spec"]
            assert scaled["maxReplicaCount"] == model.scaling.max_replicas
            if model.scaling.scale_to_zero:
                assert scaled["minReplicaCount"] == 0
                assert [t["name"] for t in scaled["triggers"]] == ["queue-time", "gateway-demand"]
                assert placement.cold_start_s > placement.startup_budget_s
            else:
                assert scaled["minReplicaCount"] == model.scaling.min_replicas >= 1
    assert any("sentiment may scale to zero" in w and " s for a node" in w for w in plan.warnings)


def test_autoscaling_targets_average_queue_time_per_request():
    plan = plan_of("dev")
    region = plan.regions[0]
    w = serving.workload(plan, region, region.placements[0])
    trigger = serving.scaled_object(plan, w)["spec"]["triggers"][0]
    query = trigger["metadata"]["query"]
    assert "nv_inference_queue_duration_us" in query and "nv_inference_request_success" in query
    assert trigger["metadata"]["threshold"] == str(int(w.model.slo.p99_ms * 1000 * serving.QUEUE_SHARE_OF_P99))


def test_triton_reads_the_parent_of_the_model_folder():
    # The spec rejects a folder not named after the model (tests/corpus/bad.yaml); Triton gets its parent.
    model = plan_of("dev").model("fraud-detector")
    assert serving.model_repository(model, "s3://bucket/models/fraud-detector/") == "s3://bucket/models"


def test_render_writes_valid_yaml_per_region(tmp_path):
    plan = plan_of("staging")
    files = render(plan, tmp_path)
    regions = {p.relative_to(tmp_path).parts[1] for p in files if p.relative_to(tmp_path).parts[0] == "kubernetes"}
    assert regions == {r.key for r in plan.regions}
    for path in files:
        if path.suffix == ".yaml" and path.name != "helm-keda.yaml":
            obj = yaml.safe_load(path.read_text())
            serving.validate_manifest(obj, "1.33")
            assert "&id" not in path.read_text()
    assert render(plan, tmp_path) == files  # deterministic and idempotent


# --- the offline evaluation: what Pulumi would declare ---------------------------------------------------

@pytest.fixture(scope="module")
def prod_resources():
    program = ROOT / "__main__.py" if _region_wires_serving() else SERVING_PROGRAM
    return evaluate(ROOT, "prod", program=program).resources


def _region_wires_serving() -> bool:
    return "Serving(" in (ROOT / "components" / "fleet.py").read_text()


def test_prod_declares_a_deployment_per_model_per_region(prod_resources):
    plan = plan_of("prod")
    deployments = [r for r in prod_resources if r.type == "kubernetes:apps/v1:Deployment"]
    assert sorted(r.name for r in deployments) == sorted(
        f"{region.key}-{p.model}" for region in plan.regions for p in region.placements)
    for d in deployments:
        region_key = next(r.key for r in plan.regions if d.name.startswith(r.key + "-"))
        assert d.provider and region_key in d.provider, "each cluster's own Kubernetes provider"
        pod = d.inputs["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == serving.TRITON_IMAGE and "@sha256:" in container["image"]
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["nodeSelector"]["modelfleet.io/pool"].startswith("gpu-")


def test_prod_declares_a_network_policy_and_autoscaler_per_workload(prod_resources):
    deployments = {r.name for r in prod_resources if r.type == "kubernetes:apps/v1:Deployment"}
    for kind in ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "kubernetes:policy/v1:PodDisruptionBudget",
                 "kubernetes:core/v1:Service", "kubernetes:keda.sh/v1alpha1:ScaledObject"):
        assert {r.name for r in prod_resources if r.type == kind} == deployments, kind


def test_declared_inputs_are_the_validated_manifests(prod_resources):
    """What the components hand the provider (camelCase wire form) passes the same strict validation."""
    declared = [r for r in prod_resources if r.type.startswith("kubernetes:") and r.custom and "modelfleet:serving:" in r.urn
                and not r.type.startswith("kubernetes:helm")]
    assert len(declared) == 4 * 2 + 8 * 5
    for r in declared:
        obj = copy.deepcopy(r.inputs)
        if obj["kind"] == "ServiceAccount":  # the identity annotation is an Output until deploy
            obj["metadata"]["annotations"] = {k: str(v) for k, v in obj["metadata"].get("annotations", {}).items()}
        serving.validate_manifest(obj, "1.33")


def test_keda_is_installed_once_per_cluster_with_a_pinned_chart(prod_resources):
    releases = [r for r in prod_resources if r.type == "kubernetes:helm.sh/v3:Release" and r.inputs.get("chart") == "keda"]
    assert len(releases) == len(plan_of("prod").regions)
    assert {r.inputs["version"] for r in releases} == {serving.KEDA_CHART_VERSION}


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_the_namespace_and_service_account_are_the_ones_the_cloud_identity_trusts(stack):
    plan = plan_of(stack)
    for region in plan.regions:
        objs = serving.region_objects(plan, region, {})
        ns = next(o for o in objs if o["kind"] == "Namespace")
        account = next(o for o in objs if o["kind"] == "ServiceAccount")
        assert (ns["metadata"]["name"], account["metadata"]["name"]) == (
            region.identity.namespace, region.identity.service_account)
        assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {region.identity.namespace}
