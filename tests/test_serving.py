"""Triton's Kubernetes workloads: valid for the cluster's version, decided by the plan, declared as planned."""

from __future__ import annotations

import copy
import dataclasses
from functools import cache
from pathlib import Path

import pytest
import yaml

from modelfleet import serving
from modelfleet.loader import load_fleet
from modelfleet.offline import Recorded
from modelfleet.plan import GPU_TAINT_KEY, FleetPlan, Placement, RegionPlan, Taint, build_plan
from modelfleet.monitoring.kubernetes import region_monitoring_objects
from modelfleet.render import cloud_configs, hardware_classes, model_configs, render
from modelfleet.triton.config import CPU

ROOT = Path(__file__).resolve().parents[1]
CLOUD_STACKS = ["dev", "staging", "prod"]
EVALUATED_STACKS = ["dev", "prod"]  # the stacks tests/test_infrastructure.py evaluates too (one shared cache)
# Issue 4's serving contract: Triton's own ports, by name.
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# The taint GKE puts on every GPU node itself, next to the plan's own taint on the key.
GKE_GPU_TAINT = Taint(GPU_TAINT_KEY, "present", "NoSchedule")
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
PER_MODEL = (DEPLOYMENT, SERVICE, PDB, NETWORK_POLICY, SCALED_OBJECT)


@cache
def plan_of(stack: str) -> FleetPlan:
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
        assert len(deployments) == len(region.placements) > 0
        for d in deployments:
            model = d["metadata"]["labels"]["modelfleet.io/model"]
            args = d["spec"]["template"]["spec"]["containers"][0]["args"]
            # AWS: the region's own bucket (Triton signs for AWS_DEFAULT_REGION); GCP: the one GCS bucket.
            expected = (f"s3://modelfleet-models-{region.region}" if region.cloud == "aws"
                        else "gs://modelfleet-model-repository")
            assert f"--model-repository={expected}" in args
            assert "--model-control-mode=explicit" in args and f"--load-model={model}" in args


def test_scale_to_zero_only_where_the_spec_allows_it_with_its_cold_start_in_the_plan():
    plan = plan_of("prod")
    # The example fleet has a model of each kind, so both branches below run.
    assert {m.scaling.scale_to_zero for m in plan.models} == {True, False}
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



# --- render: what a reviewer reads -------------------------------------------------------------------------

def _regions_at(plan: FleetPlan, versions: tuple[str, ...]) -> FleetPlan:
    """`plan` with its regions on the given Kubernetes versions, in order."""
    assert len(versions) == len(plan.regions)
    regions = tuple(dataclasses.replace(r, kubernetes_version=v) for r, v in zip(plan.regions, versions))
    return dataclasses.replace(plan, regions=regions)


def test_render_writes_each_regions_objects_valid_for_that_regions_cluster(tmp_path):
    # Two regions on the two ends of the window KEDA is tested on: each folder must hold its own cluster's objects.
    plan = _regions_at(plan_of("staging"), serving.KEDA_TESTED_KUBERNETES)
    assert len({r.kubernetes_version for r in plan.regions}) == len(plan.regions) == 2
    files = render(plan, tmp_path)
    by_folder: dict[str, list[Path]] = {}
    for path in files:
        parts = path.relative_to(tmp_path).parts
        if parts[0] == "kubernetes" and parts[2] != "gateway":  # the gateway's: tests/test_gateway_cloud.py
            by_folder.setdefault(parts[1], []).append(path)
    assert set(by_folder) == {r.key for r in plan.regions}
    for region in plan.regions:
        paths = by_folder[region.key]
        expected = serving.region_objects(plan, region, serving.placeholder_identity(region.cloud),
                                          cloud_configs(plan)) + region_monitoring_objects(plan, region)
        manifests = [p for p in paths if not p.name.startswith("helm-")]
        assert len(manifests) == len(expected) and len(paths) == len(expected) + 2, region.key
        for path, obj in zip(sorted(manifests), expected):  # NN- prefixes: apply order
            text = path.read_text()
            assert "&id" not in text, path
            loaded = yaml.safe_load(text)
            assert loaded == obj, path
            serving.validate_manifest(loaded, region.kubernetes_version)
        helm = yaml.safe_load((tmp_path / "kubernetes" / region.key / "helm-keda.yaml").read_text())
        assert (helm["chart"], helm["version"], helm["repository"]) == (
            serving.KEDA_CHART, serving.KEDA_CHART_VERSION, serving.KEDA_CHART_REPOSITORY)
        assert helm["namespace"] == serving.KEDA_NAMESPACE and helm["values"] == serving.keda_release_values()
    assert render(plan, tmp_path) == files  # deterministic and idempotent


def _on_class(plan: FleetPlan, region_key: str, model: str, hardware_class: str) -> FleetPlan:
    """`plan` with `model` moved, in one region, onto the pool another model of `hardware_class` runs on there."""
    regions = []
    for region in plan.regions:
        if region.key == region_key:
            host = next(p for p in region.placements if p.hardware_class == hardware_class and p.model != model)
            placements = tuple(
                dataclasses.replace(p, hardware_class=hardware_class, pool=host.pool) if p.model == model else p
                for p in region.placements)
            region = dataclasses.replace(region, placements=placements)
        regions.append(region)
    return dataclasses.replace(plan, regions=tuple(regions))


def test_render_writes_a_config_folder_per_hardware_class_only_where_a_model_runs_on_several(tmp_path):
    # A spec names one hardware class per model, so no example stack runs a model on two classes; the plan is
    # plain data, so move fraud-detector onto sentiment's class in one region of prod, as a plan could decide.
    prod = plan_of("prod")
    fraud, sentiment = prod.model("fraud-detector"), prod.model("sentiment")
    assert fraud.hardware.gpu_class != sentiment.hardware.gpu_class
    moved_region = prod.regions[-1].key
    plan = _on_class(prod, moved_region, fraud.name, sentiment.hardware.gpu_class)
    both = tuple(sorted({fraud.hardware.gpu_class, sentiment.hardware.gpu_class}))
    assert hardware_classes(plan, fraud) == both
    assert hardware_classes(plan, sentiment) == (sentiment.hardware.gpu_class,)

    files = {p.relative_to(tmp_path).as_posix() for p in render(plan, tmp_path)}
    configs = {f for f in files if f.startswith("models/")}
    assert configs == {f"models/{fraud.name}/{hw}/config.pbtxt" for hw in both} | {
        f"models/{sentiment.name}/config.pbtxt"}
    rendered = model_configs(plan)
    for hw in both:
        assert (tmp_path / "models" / fraud.name / hw / "config.pbtxt").read_text() == rendered[(fraud.name, hw)]
    moved = next(p for r in plan.regions if r.key == moved_region for p in r.placements if p.model == fraud.name)
    deployment = yaml.safe_load(next(
        (tmp_path / "kubernetes" / moved_region).glob(f"*-deployment-{serving.workload_name(fraud.name)}.yaml")
    ).read_text())
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {serving.POOL_LABEL: moved.pool}


@pytest.mark.parametrize("stack", ["local", "staging"])
def test_render_writes_one_config_per_model_where_each_runs_on_one_class(tmp_path, stack):
    plan = plan_of(stack)
    files = {p.relative_to(tmp_path).as_posix() for p in render(plan, tmp_path) if "models" in p.parts}
    assert files == {f"models/{m.name}/config.pbtxt" for m in plan.models}
    configs = model_configs(plan)
    assert len(configs) == len(plan.models)
    for model in plan.models:
        expected_class = CPU if stack == "local" else model.hardware.gpu_class
        assert hardware_classes(plan, model) == (expected_class,)
        assert (tmp_path / "models" / model.name / "config.pbtxt").read_text() == configs[(model.name, expected_class)]


# --- the offline evaluation of the real program: what Pulumi would declare -----------------------------------

class Declared:
    """One evaluated stack's serving resources, found through the plan (names) and the component tree."""

    def __init__(self, resources: list[Recorded], plan: FleetPlan):
        # Serving's own resources: the gateway's (tests/test_gateway_cloud.py) share some kinds.
        self.resources = [r for r in resources if "modelfleet:gateway:Gateway" not in r.urn
                          and "modelfleet:routing:" not in r.urn]  # and global routing's (tests/test_routing.py)
        self.plan = plan
        self.by_type_name = {(r.type, r.name): r for r in resources}

    def of(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def children(self, parent: Recorded, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.parent == parent.urn and r.type == typ]

    def placements(self) -> list[tuple[RegionPlan, Placement]]:
        return [(region, p) for region in self.plan.regions for p in region.placements]

    def model_resources(self, typ: str) -> list[tuple[RegionPlan, Placement, Recorded]]:
        """Every recorded resource of `typ` with the placement it serves; first asserts there is exactly one
        per placement and no other."""
        recorded = self.of(typ)
        assert len(recorded) == len(self.placements()) > 0, typ
        out = [(region, p, self.by_type_name[(typ, f"{region.key}-{p.model}")]) for region, p in self.placements()]
        assert {r.urn for _, _, r in out} == {r.urn for r in recorded}, typ
        return out


@pytest.fixture(params=EVALUATED_STACKS)
def declared(request, evaluated) -> Declared:
    return Declared(evaluated(request.param).resources, plan_of(request.param))


def _pod(deployment: Recorded) -> dict:
    return deployment.inputs["spec"]["template"]["spec"]


def _tolerates(toleration: dict, taint: Taint) -> bool:
    """Kubernetes' rule (k8s.io/api/core/v1 Toleration.ToleratesTaint)."""
    if toleration.get("effect") and toleration["effect"] != taint.effect:
        return False
    if toleration.get("key") and toleration["key"] != taint.key:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return True
    return toleration.get("value", "") == taint.value


def test_every_per_model_kind_is_declared_once_per_placement(declared):
    for typ in PER_MODEL:
        declared.model_resources(typ)


def test_each_deployment_runs_on_its_clusters_provider_with_the_pinned_image(declared):
    for region, placement, d in declared.model_resources(DEPLOYMENT):
        assert d.provider == f"{region.key}-k8s", "each cluster's own Kubernetes provider"
        pod = _pod(d)
        assert pod["containers"][0]["image"] == serving.TRITON_IMAGE and "@sha256:" in pod["containers"][0]["image"]
        assert pod["nodeSelector"] == {serving.POOL_LABEL: placement.pool}


def test_gpu_requests_and_limits_are_the_plans_gpus_per_replica(declared):
    deployments = declared.model_resources(DEPLOYMENT)
    assert any(p.gpus_per_replica for _, p, _ in deployments), "the example stacks serve on GPUs"
    for _, placement, d in deployments:
        resources = _pod(d)["containers"][0]["resources"]
        expected = str(placement.gpus_per_replica) if placement.gpus_per_replica else None
        assert resources["requests"].get("nvidia.com/gpu") == resources["limits"].get("nvidia.com/gpu") == expected


def test_gpu_pods_tolerate_the_plans_gpu_taint_and_gkes_own(declared):
    for region, placement, d in declared.model_resources(DEPLOYMENT):
        pool = next(p for p in region.pools if p.name == placement.pool)
        tolerations = _pod(d).get("tolerations", [])
        if not pool.is_gpu:
            assert tolerations == [] and pool.taints == ()
            continue
        assert tolerations == [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}], d.name
        for taint in pool.taints + (GKE_GPU_TAINT,):
            assert any(_tolerates(t, taint) for t in tolerations), (d.name, taint)
        # Only the GPU key is tolerated: another NoSchedule taint still keeps Triton off a node.
        assert not any(_tolerates(t, Taint("dedicated", "gateway", "NoSchedule")) for t in tolerations)


def test_tolerating_by_value_would_miss_gkes_taint():
    """Why Exists: the plan's own taint, tolerated with Equal, leaves GKE's `present` taint untolerated."""
    planned = Taint(GPU_TAINT_KEY, "true", "NoSchedule")
    equal = {"key": planned.key, "operator": "Equal", "value": planned.value, "effect": planned.effect}
    assert _tolerates(equal, planned) and not _tolerates(equal, GKE_GPU_TAINT)


def test_tolerations_follow_the_pools_taints_once_per_key_and_effect():
    plan = plan_of("prod")
    region = next(r for r in plan.regions if r.cloud == "gcp")
    placement = region.placements[0]
    gpu_pool = next(p for p in region.pools if p.name == placement.pool)
    # A pool carrying both GPU taints (as a GKE node does) needs one toleration, which covers both.
    both = dataclasses.replace(gpu_pool, taints=gpu_pool.taints + (GKE_GPU_TAINT,))
    assert len(both.taints) == 2
    [toleration] = serving.tolerations(both)
    assert all(_tolerates(toleration, t) for t in both.taints)
    # An untainted pool (CPU) gets no tolerations field at all.
    untainted = dataclasses.replace(gpu_pool, taints=())
    w = dataclasses.replace(serving.workload(plan, region, placement), pool=untainted)
    assert serving.tolerations(untainted) == []
    assert "tolerations" not in serving.deployment(plan, w)["spec"]["template"]["spec"]


def test_replicas_spread_over_zones_and_nodes(declared):
    for region, _, d in declared.model_resources(DEPLOYMENT):
        assert len(region.zones) > 1, "spreading over zones needs a pool over several zones"
        selector = d.inputs["spec"]["selector"]["matchLabels"]
        assert selector.items() <= d.inputs["spec"]["template"]["metadata"]["labels"].items()
        spread = {c["topologyKey"]: c for c in _pod(d)["topologySpreadConstraints"]}
        assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, d.name
        for constraint in spread.values():
            assert constraint["maxSkew"] == 1
            assert constraint["labelSelector"] == {"matchLabels": selector}
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # never strand a replica on scarce GPUs


def test_probes_check_triton_health_within_the_plans_startup_budget(declared):
    for _, placement, d in declared.model_resources(DEPLOYMENT):
        container = _pod(d)["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == TRITON_PORTS
        paths = {probe: container[probe]["httpGet"]["path"]
                 for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert paths == {"startupProbe": "/v2/health/ready", "readinessProbe": "/v2/health/ready",
                         "livenessProbe": "/v2/health/live"}
        assert {container[probe]["httpGet"]["port"] for probe in paths} == {"http"}
        startup = container["startupProbe"]
        allowed = startup["periodSeconds"] * startup["failureThreshold"]
        # The whole budget and not a probe period more: a stuck start is restarted as soon as it overruns.
        assert placement.startup_budget_s <= allowed < placement.startup_budget_s + startup["periodSeconds"]
        assert placement.startup_budget_s > 0


# The uid of `triton-server` in NVIDIA's tritonserver images: Triton's build.py fails the image build unless it is
# 1000 (a fact about the image, not a value the code computes).
TRITON_IMAGE_UID = 1000


def test_triton_pods_meet_the_restricted_pod_security_profile_without_an_api_token(declared):
    """The Pod Security Standards' "restricted" controls
    (https://kubernetes.io/docs/concepts/security/pod-security-standards/), and no Kubernetes API token."""
    deployments = declared.model_resources(DEPLOYMENT)
    for _, _, d in deployments:
        pod = _pod(d)
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert host not in pod, (d.name, host)
        assert pod["automountServiceAccountToken"] is False, d.name
        assert pod["serviceAccountName"] == serving.SERVICE_ACCOUNT
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == TRITON_IMAGE_UID, d.name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        containers = pod["containers"] + pod.get("initContainers", [])
        assert len(containers) == 1
        for container in containers:
            own = container["securityContext"]
            assert own == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                           "runAsNonRoot": True}, d.name
    accounts = declared.of(SERVICE_ACCOUNT)
    assert len(accounts) == len(declared.plan.regions)
    assert all(a.inputs["automountServiceAccountToken"] is False for a in accounts)


def test_services_expose_tritons_ports_by_name(declared):
    for _, placement, svc in declared.model_resources(SERVICE):
        deployment = declared.by_type_name[(DEPLOYMENT, svc.name)]
        spec = svc.inputs["spec"]
        assert spec["type"] == "ClusterIP"
        assert spec["selector"] == deployment.inputs["spec"]["selector"]["matchLabels"]
        assert [(p["name"], p["port"], p["targetPort"], p["protocol"]) for p in spec["ports"]] == [
            (name, port, name, "TCP") for name, port in TRITON_PORTS.items()]


def test_network_policy_admits_only_the_gateway_and_prometheus(declared):
    for region, _, policy in declared.model_resources(NETWORK_POLICY):
        deployment = declared.by_type_name[(DEPLOYMENT, policy.name)]
        spec = policy.inputs["spec"]
        assert spec["podSelector"] == deployment.inputs["spec"]["selector"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        namespace = policy.inputs["metadata"]["namespace"]
        assert spec["ingress"] == [
            # This stack's Envoy pods: Envoy Gateway's namespace (by the label only the API server sets) AND the
            # labels Envoy Gateway gives the pods of the Gateway in Triton's namespace, on the inference ports.
            {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}},
                       "podSelector": {"matchLabels": {
                           "app.kubernetes.io/name": "envoy",
                           "gateway.envoyproxy.io/owning-gateway-name": "modelfleet",
                           "gateway.envoyproxy.io/owning-gateway-namespace": namespace}}}],
             "ports": [{"protocol": "TCP", "port": TRITON_PORTS["http"]},
                       {"protocol": "TCP", "port": TRITON_PORTS["grpc"]}]},
            # Prometheus, in its namespace (both selectors in one peer: AND), on the metrics port only.
            {"from": [{"namespaceSelector": {"matchLabels": {
                           "kubernetes.io/metadata.name": serving.PROMETHEUS_NAMESPACE}},
                       "podSelector": {"matchLabels": serving.PROMETHEUS_POD_LABELS}}],
             "ports": [{"protocol": "TCP", "port": TRITON_PORTS["metrics"]}]},
        ]
        # Out: cluster DNS, HTTPS (the bucket and the cloud's token service), and on GKE the metadata server that
        # hands out workload identity tokens; nothing else (not the gateway, not other models).
        dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
        https = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
        metadata = {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}], "ports": [{"protocol": "TCP", "port": 80}]}
        assert spec["egress"] == ([dns, https, metadata] if region.cloud == "gcp" else [dns, https]), policy.name


def test_disruption_budgets_cover_each_deployment_and_never_empty_a_model_at_its_minimum(declared):
    for _, placement, pdb in declared.model_resources(PDB):
        deployment = declared.by_type_name[(DEPLOYMENT, pdb.name)]
        spec = pdb.inputs["spec"]
        assert spec["selector"] == deployment.inputs["spec"]["selector"]
        assert "minAvailable" not in spec  # a minAvailable of 1 would block every drain at one replica
        assert spec["maxUnavailable"] == serving.PDB_MAX_UNAVAILABLE
        if not placement.scale_to_zero:
            assert placement.min_replicas - spec["maxUnavailable"] >= 1, pdb.name
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # every supported cluster is >= 1.31


def test_service_account_carries_its_regions_cloud_identity(declared):
    """The annotation is the identity the region's TritonIdentity created, as the mocked cloud answered it:
    the IRSA role's ARN (AWS) or the Google service account's email (GCP)."""
    regions = declared.of("modelfleet:fleet:Region")
    assert sorted(r.name for r in regions) == sorted(r.key for r in declared.plan.regions)
    accounts = declared.of(SERVICE_ACCOUNT)
    assert len(accounts) == len(declared.plan.regions)
    seen = []
    for component in regions:
        region = next(r for r in declared.plan.regions if r.key == component.name)
        [serving_component] = declared.children(component, "modelfleet:serving:Serving")
        [account] = declared.children(serving_component, SERVICE_ACCOUNT)
        [identity] = declared.children(component, f"modelfleet:{region.cloud}:TritonIdentity")
        if region.cloud == "aws":
            [role] = declared.children(identity, "aws:iam/role:Role")
            expected = role.outputs["arn"]
            assert expected.startswith("arn:aws:iam::") and f":role/{region.identity.cloud_account}-" in expected
        else:
            [gsa] = declared.children(identity, "gcp:serviceaccount/account:Account")
            expected = gsa.outputs["email"]
            assert expected == f"{region.identity.cloud_account}@{declared.plan.gcp_project}.iam.gserviceaccount.com"
        assert account.inputs["metadata"]["annotations"] == {serving.IDENTITY_ANNOTATION[region.cloud]: expected}
        assert (account.inputs["metadata"]["name"], account.inputs["metadata"]["namespace"]) == (
            region.identity.service_account, region.identity.namespace)
        seen.append(account.urn)
    assert sorted(seen) == sorted(a.urn for a in accounts)


def test_declared_inputs_are_exactly_the_built_manifests(declared):
    """What the components hand the provider (camelCase wire form) is what `modelfleet.serving` builds and the
    strict validation passes, object for object; only the identity annotation is the deployment's."""
    plan = declared.plan
    kubernetes = [r for r in declared.resources if r.type.startswith("kubernetes:") and r.custom
                  and not r.type.startswith("kubernetes:helm") and "modelfleet:monitoring:Monitoring$" not in r.urn]
    configs = cloud_configs(plan)
    expected_total = 0
    for region in plan.regions:
        built = serving.region_objects(plan, region, {}, configs)
        expected_total += len(built)
        account = next(a for a in declared.of(SERVICE_ACCOUNT) if a.provider == f"{region.key}-k8s")
        for obj in built:
            kind = obj["kind"]
            model = obj["metadata"]["labels"].get(f"{serving.LABEL_PREFIX}/model")
            if kind == "ServiceAccount":
                recorded = account
                obj = copy.deepcopy(obj)
                obj["metadata"]["annotations"] = recorded.inputs["metadata"]["annotations"]
            else:
                name = f"{region.key}-{model}" if model else f"{region.key}-{obj['metadata']['name']}"
                [recorded] = [r for r in kubernetes if r.name == name and r.inputs["kind"] == kind]
            assert recorded.provider == f"{region.key}-k8s"
            assert recorded.inputs == obj, (kind, recorded.name)
            serving.validate_manifest(recorded.inputs, region.kubernetes_version)
    assert len(kubernetes) == expected_total > 0


def test_keda_is_installed_once_per_cluster_with_a_pinned_chart(declared):
    releases = [r for r in declared.of("kubernetes:helm.sh/v3:Release") if r.inputs.get("chart") == serving.KEDA_CHART]
    assert len(releases) == len(declared.plan.regions) > 0
    assert sorted(r.provider for r in releases) == sorted(f"{region.key}-k8s" for region in declared.plan.regions)
    for release in releases:
        assert release.inputs["version"] == serving.KEDA_CHART_VERSION
        assert release.inputs["repositoryOpts"]["repo"] == serving.KEDA_CHART_REPOSITORY
        assert release.inputs["namespace"] == serving.KEDA_NAMESPACE


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
