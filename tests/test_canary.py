"""A canary by weight (modelfleet.canary): the spec's checks, the plan's split and sizing, the Kubernetes objects
(two Deployments and Services, the routes' weights, what selects which pods), the routes against the CRD schema,
the release's bucket layout, the offline program, the local Envoy's weighted clusters, and the plan's report.

Expectations are computed here from the spec's numbers, not read back from the plan."""

from __future__ import annotations

import copy
import math
import re
import shutil
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from typer.testing import CliRunner

from modelfleet import serving
from modelfleet.catalogue import hardware
from modelfleet.cli import app
from modelfleet.gateway import manifests
from modelfleet.gateway.envoy_config import LocalPorts, envoy_bootstrap
from modelfleet.loader import SpecError, load_fleet
from modelfleet.monitoring.kubernetes import region_monitoring_objects
from modelfleet.plan import build_plan
from modelfleet.release import ReleaseError, release_objects
from modelfleet.render import cloud_configs
from modelfleet.report import Report, render_markdown
from modelfleet.tuning.record import read_record

MODEL, PERCENT, CANARY = "fraud-detector", 10, 2
ROLLOUT = {"strategy": "canary", "canary_version": CANARY, "canary_percent": PERCENT}


def _edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _release_version(root: Path, version: int = CANARY) -> None:
    """The canary's model files: version 1's, released as another version directory."""
    source = root / "build" / "model-artifacts" / MODEL
    shutil.copytree(source / "1", source / str(version))


def with_canary(root: Path, rollout: dict | None = None, release: bool = True) -> Path:
    _edit(root / "models" / f"{MODEL}.yaml", lambda m: m.update(rollout=rollout or ROLLOUT))
    if release:
        _release_version(root)
    return root


@pytest.fixture
def canary_root(project_copy: Path) -> Path:
    return with_canary(project_copy)


# ---------------------------------------------------------------- the spec


@pytest.mark.parametrize("rollout, edit, words", [
    ({"strategy": "canary", "canary_percent": 10}, None, "canary_version: strategy canary needs the Triton version"),
    ({"strategy": "rolling", "canary_version": 2}, None, "canary_version: only with strategy: canary"),
    ({**ROLLOUT, "canary_version": 1}, None, "rollout.canary_version: 1 is the stable version itself"),
    ({**ROLLOUT, "canary_percent": 51}, None, "rollout.canary_percent: must be <= 50, got 51"),
    ({**ROLLOUT, "canary_percent": 0}, None, "rollout.canary_percent: must be >= 1, got 0"),
    (ROLLOUT, lambda m: m.update(triton={"version_policy": "latest"}),
     "triton.version_policy: latest would load every released version"),
])
def test_bad_canary_specs_name_the_file_field_and_fix(project_copy, rollout, edit, words):
    path = project_copy / "models" / f"{MODEL}.yaml"
    _edit(path, lambda m: (m.update(rollout=rollout), edit and edit(m)))
    with pytest.raises(SpecError) as exc:
        load_fleet(project_copy, "prod")
    text = str(exc.value)
    assert f"models/{MODEL}.yaml" in text and words in text, text


def test_a_canary_version_that_was_never_released_is_refused_with_its_line(project_copy):
    with_canary(project_copy, {**ROLLOUT, "canary_version": 7})
    with pytest.raises(SpecError) as exc:
        load_fleet(project_copy, "prod")
    [problem] = exc.value.problems
    assert (problem.file, problem.path) == (f"models/{MODEL}.yaml", "rollout.canary_version")
    lines = (project_copy / "models" / f"{MODEL}.yaml").read_text().splitlines()
    assert "canary_version: 7" in lines[problem.line - 1]
    assert "has no version directory" in problem.message and "versions there: 1, 2" in problem.message
    result = CliRunner().invoke(app, ["validate", "--root", str(project_copy)])
    assert result.exit_code == 2 and "rollout.canary_version" in result.output and "Traceback" not in result.output


def test_the_release_refuses_a_canary_without_its_files(project_copy):
    """The loader checks the canary's directory once the stable's exists; the release itself checks the files."""
    with_canary(project_copy, release=False)
    (project_copy / "build" / "model-artifacts" / MODEL / str(CANARY)).mkdir()  # empty: no model.py
    plan = build_plan(load_fleet(project_copy, "prod"))
    with pytest.raises(ReleaseError, match=r"rollout\.canary_version"):
        release_objects(plan, project_copy)


# ---------------------------------------------------------------- the plan: split and sizing


def _spec(root: Path) -> dict:
    return yaml.safe_load((root / "models" / f"{MODEL}.yaml").read_text())


def test_each_region_splits_its_traffic_and_sizes_both_deployments(canary_root):
    spec = _spec(canary_root)
    plan = build_plan(load_fleet(canary_root, "prod"))
    low, high = spec["scaling"]["min_replicas"], spec["scaling"]["max_replicas"]
    placements = [(r, p) for r in plan.regions for p in r.placements if p.model == MODEL]
    assert len(placements) == len(plan.regions) == 4
    for region, p in placements:
        rps = spec["traffic"]["by_region"].get(region.ref, spec["traffic"]["rps"])
        c = p.canary
        assert (c.version, c.stable_version, c.percent) == (CANARY, spec.get("version", 1), PERCENT)
        assert c.rps == pytest.approx(rps * PERCENT / 100) and p.stable_rps == pytest.approx(rps * (100 - PERCENT) / 100)
        assert p.rps == rps, "the region's demand (routing, failover) stays the model's whole traffic"
        # Untuned on GPUs: the declared bounds; the canary's own: one replica, at most its share of the maximum.
        assert (p.min_replicas, p.max_replicas, p.desired_replicas) == (low, high, max(low, 1))
        assert (c.min_replicas, c.max_replicas, c.desired_replicas) == (1, math.ceil(high * PERCENT / 100), 1)


def test_the_node_pools_hold_the_canary_replicas_too(project_copy):
    before = build_plan(load_fleet(project_copy, "prod"))
    after = build_plan(load_fleet(with_canary(project_copy), "prod"))
    pool = "gpu-l4"
    checked = 0
    for old, new in zip(before.regions, after.regions):
        offering = hardware().classes["nvidia-l4"].on(new.cloud)
        if offering.gpus_per_node != 1:
            continue
        o, n = (next(x for x in r.pools if x.name == pool) for r in (old, new))
        c = next(p for p in new.placements if p.model == MODEL).canary
        assert (n.min_nodes - o.min_nodes, n.desired_nodes - o.desired_nodes, n.max_nodes - o.max_nodes) == (
            c.min_replicas, c.desired_replicas, c.max_replicas)
        checked += 1
    assert checked >= 1


def test_a_tuned_canary_is_sized_from_its_share_of_the_traffic(project_copy):
    """On CPU the committed record sizes both: ceil(share x headroom / measured infer/s per replica)."""
    with_canary(project_copy, {**ROLLOUT, "canary_percent": 50})
    _edit(project_copy / "models" / f"{MODEL}.yaml", lambda m: m.update(
        hardware={"gpu_class": "cpu", "gpus_per_replica": 0}, traffic={"rps": 30000}))
    record = read_record(project_copy / "models" / f"{MODEL}.tuning" / "cpu.yaml")
    plan = build_plan(load_fleet(project_copy, "dev"))
    [p] = [p for r in plan.regions for p in r.placements if p.model == MODEL]
    share = 30000 * 50 / 100
    expected = math.ceil(share * plan.capacity_headroom / record.throughput_per_replica)
    assert p.tuned and expected >= 2, "the share must need several replicas for the test to mean something"
    assert p.canary.needed_replicas == expected == p.needed_replicas
    assert p.canary.desired_replicas == min(expected, math.ceil(12 * 50 / 100))


# ---------------------------------------------------------------- the Kubernetes objects


def _objects(plan, region) -> list[dict]:
    return (serving.region_objects(plan, region, serving.placeholder_identity(region.cloud), cloud_configs(plan))
            + manifests.region_objects(plan, region, manifests.placeholder_cloud(plan, region), {})
            + region_monitoring_objects(plan, region))


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_routes_weigh_the_stable_and_the_canary_service_in_one_rule(canary_root):
    plan = build_plan(load_fleet(canary_root, "prod"))
    for region in plan.regions:
        objects = _objects(plan, region)
        services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
        deployments = [o for o in objects if o["kind"] == "Deployment"]
        routes = [o for o in objects if o["kind"] in ("HTTPRoute", "GRPCRoute")
                  and o["metadata"]["name"] == f"triton-{MODEL}"]
        assert len(routes) == 2
        for route in routes:
            [rule] = route["spec"]["rules"]
            # The Services carry the split; the peer regions' Backends (modelfleet.routing.peering) follow as
            # fallbacks, another priority that takes no share of the weights.
            refs = [r for r in rule["backendRefs"] if r.get("kind", "Service") == "Service"]
            assert all(r["kind"] == "Backend" for r in rule["backendRefs"][len(refs):])
            assert [(r["name"], r["weight"]) for r in refs] == [
                (f"triton-{MODEL}", 100 - PERCENT), (f"triton-{MODEL}-canary", PERCENT)]
            assert sum(r["weight"] for r in refs) == 100
            # No version header: the rule cannot tell which backend answered (manifests._version_filter).
            assert "filters" not in rule and not any("filters" in r for r in rule["backendRefs"])
            port = serving.HTTP_PORT if route["kind"] == "HTTPRoute" else serving.GRPC_PORT
            for ref in refs:
                service = services[ref["name"]]
                assert port in [p["port"] for p in service["spec"]["ports"]]
                # Exactly one Deployment's pods behind each Service: the stable's or the canary's.
                behind = [d["metadata"]["name"] for d in deployments
                          if _selects(service["spec"]["selector"], _pod_labels(d))]
                assert behind == [ref["name"]], (ref["name"], behind)


def test_the_canary_deployment_serves_only_its_version(canary_root):
    plan = build_plan(load_fleet(canary_root, "prod"))
    configs = cloud_configs(plan)
    region = plan.regions[0]
    by_name = {o["metadata"]["name"]: o for o in _objects(plan, region) if o["kind"] == "Deployment"}
    stable, canary = by_name[f"triton-{MODEL}"], by_name[f"triton-{MODEL}-canary"]
    stable_args = stable["spec"]["template"]["spec"]["containers"][0]["args"]
    canary_args = canary["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-config-name=canary" in canary_args and not any("model-config-name" in a for a in stable_args)
    assert [a for a in canary_args if a != "--model-config-name=canary"] == stable_args, "otherwise the same server"
    from tritonclient.grpc import model_config_pb2 as mc

    def versions(text: str) -> list[int]:
        return list(text_format.Parse(text, mc.ModelConfig()).version_policy.specific.versions)

    assert versions(configs[MODEL]) == [1] and versions(configs[f"{MODEL}/configs/canary.pbtxt"]) == [CANARY]
    assert configs[MODEL].replace("versions: 1", f"versions: {CANARY}") == configs[f"{MODEL}/configs/canary.pbtxt"]
    annotation = serving.CONFIG_HASH_ANNOTATION
    assert (stable["spec"]["template"]["metadata"]["annotations"][annotation]
            != canary["spec"]["template"]["metadata"]["annotations"][annotation])


def test_what_selects_triton_pods_covers_the_canary_as_intended(canary_root):
    """Own PDB, NetworkPolicy and ScaledObject for the canary (the stable's select only stable pods); Envoy's
    egress and the Triton ServiceMonitor select every Triton pod, the canary's included."""
    plan = build_plan(load_fleet(canary_root, "prod"))
    for region in plan.regions:
        objects = _objects(plan, region)
        pods = {d["metadata"]["name"]: _pod_labels(d) for d in objects if d["kind"] == "Deployment"
                and d["metadata"]["labels"].get("modelfleet.io/model") == MODEL}
        assert sorted(pods) == [f"triton-{MODEL}", f"triton-{MODEL}-canary"]
        for kind, selector_of in (("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
                                  ("NetworkPolicy", lambda o: o["spec"]["podSelector"]["matchLabels"])):
            mine = [o for o in objects if o["kind"] == kind and o["metadata"]["namespace"] == f"modelfleet-prod"
                    and o["metadata"]["labels"].get("modelfleet.io/model") == MODEL]
            assert len(mine) == 2, kind
            for name, labels in pods.items():
                covering = [o["metadata"]["name"] for o in mine if _selects(selector_of(o), labels)]
                assert covering == [name], (kind, name, covering)
        [policy] = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"triton-{MODEL}-canary"]
        [stable_policy] = [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"triton-{MODEL}"]
        assert policy["spec"]["ingress"] == stable_policy["spec"]["ingress"]
        envoy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].startswith("envoy-"))
        triton_egress = [t["podSelector"]["matchLabels"] for rule in envoy["spec"]["egress"] for t in rule.get("to", [])
                         if "podSelector" in t and t["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "triton"]
        assert triton_egress and all(_selects(s, labels) for s in triton_egress for labels in pods.values())
        # Prometheus scrapes Triton through a ServiceMonitor: it selects Services by their labels, then scrapes
        # the pods behind each; both Services carry the label, and each has its own pods behind it.
        [monitor] = [o for o in objects if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "triton"]
        services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] in pods]
        assert len(services) == 2
        assert all(_selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]) for s in services)
        scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
        c = next(p for p in region.placements if p.model == MODEL).canary
        canary_scaler = scaled[f"triton-{MODEL}-canary"]["spec"]
        assert (canary_scaler["minReplicaCount"], canary_scaler["maxReplicaCount"]) == (c.min_replicas, c.max_replicas)
        assert f'version="{CANARY}"' in canary_scaler["triggers"][0]["metadata"]["query"]
        assert 'version="1"' in scaled[f"triton-{MODEL}"]["spec"]["triggers"][0]["metadata"]["query"]


def test_the_routes_validate_against_the_gateway_api_schema_and_bad_weights_do_not(canary_root):
    plan = build_plan(load_fleet(canary_root, "prod"))
    region = plan.regions[0]
    routes = [o for o in _objects(plan, region) if o["kind"] in ("HTTPRoute", "GRPCRoute")
              and not o["metadata"]["name"].startswith("peer-")]
    assert len(routes) == 4
    for route in routes:
        serving.validate_manifest(route, region.kubernetes_version)
    for bad in (-1, 1_000_001, "10"):
        broken = copy.deepcopy(routes[0])
        broken["spec"]["rules"][0]["backendRefs"][1]["weight"] = bad
        with pytest.raises(serving.ManifestError, match="backendRefs.1.weight"):
            serving.validate_manifest(broken, region.kubernetes_version)


def test_rendered_objects_validate(canary_root, tmp_path):
    result = CliRunner().invoke(app, ["render", "--stack", "prod", "--root", str(canary_root), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / MODEL / "configs" / "canary.pbtxt").is_file()
    assert list((tmp_path / "kubernetes").glob(f"*/*-deployment-triton-{MODEL}-canary.yaml"))


# ---------------------------------------------------------------- the release and the offline program


def test_the_release_uploads_both_versions_and_the_canary_config(canary_root):
    plan = build_plan(load_fleet(canary_root, "prod"))
    objects = release_objects(plan, canary_root)
    for source in ("s3://modelfleet-models-us-east-1/fraud-detector", "gs://modelfleet-model-repository/fraud-detector"):
        keys = {o.key.split("/", 1)[1] for o in objects if o.uri.startswith(source + "/")}
        assert {"config.pbtxt", "configs/canary.pbtxt", "1/model.py", f"{CANARY}/model.py"} <= keys, keys


def test_the_offline_program_declares_the_canary(canary_root):
    from modelfleet.offline import evaluate

    resources = evaluate(canary_root, "dev").resources
    deployments = [r for r in resources if r.type == "kubernetes:apps/v1:Deployment"
                   and r.inputs["metadata"]["name"].startswith(f"triton-{MODEL}")]
    assert sorted(r.inputs["metadata"]["name"] for r in deployments) == [f"triton-{MODEL}", f"triton-{MODEL}-canary"]
    canary = next(r for r in deployments if r.inputs["metadata"]["name"].endswith("-canary"))
    objects = {r.inputs.get("key") or r.inputs.get("name") for r in resources if r.type == "aws:s3/bucketObjectv2:BucketObjectv2"}
    assert f"{MODEL}/configs/canary.pbtxt" in objects and f"{MODEL}/{CANARY}/model.py" in objects
    from modelfleet.review import review

    assert review(evaluate(canary_root, "dev")).mandatory == [], "the canary passes every policy of the pack"
    # The model's routes wait for both Deployments: the canary's weight arrives once its pods are ready.
    routes = [r for r in resources if r.type.startswith("kubernetes:gateway.networking.k8s.io/v1:")
              and r.inputs["metadata"]["name"] == f"triton-{MODEL}"]
    assert len(routes) == 2
    for route in routes:
        assert canary.urn in route.dependencies and next(
            d.urn for d in deployments if not d.inputs["metadata"]["name"].endswith("-canary")) in route.dependencies
    # The canary's pods wait for the objects they read: its config and its version's files.
    waits_for = {urn.rsplit("::", 1)[1] for urn in canary.dependencies if "bucketObjectv2" in urn}
    assert {f"aws-us-east-1-{MODEL}-configs-canary.pbtxt", f"aws-us-east-1-{MODEL}-{CANARY}-model.py"} <= waits_for


# ---------------------------------------------------------------- the local Envoy and the report


def test_the_local_envoy_weighs_two_tritons_in_one_route(canary_root):
    plan = build_plan(load_fleet(canary_root, "local"))
    ports = LocalPorts(http=1, grpc=2, admin=3, triton_http=4, triton_grpc=5, extproc=7,
                       canary_triton_http=8, canary_triton_grpc=9)
    bootstrap = envoy_bootstrap(plan.gateway, ports, "audit.log")
    clusters = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"] for c in bootstrap["static_resources"]["clusters"]}
    versions = {c["name"]: c.get("metadata", {}).get("filter_metadata", {}).get("modelfleet", {}).get("version")
                for c in bootstrap["static_resources"]["clusters"]}
    checked = 0
    for listener in bootstrap["static_resources"]["listeners"]:
        grpc = listener["name"].endswith("grpc")
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        [route] = [r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
                   if r.get("name") == MODEL]
        weighted = route["route"]["weighted_clusters"]["clusters"]
        assert [w["weight"] for w in weighted] == [100 - PERCENT, PERCENT]
        assert [clusters[w["name"]] for w in weighted] == ([5, 9] if grpc else [4, 8])
        # The SLO metrics match a model's clusters by name: the canary's must match too.
        assert all(re.fullmatch(rf"(.*/)?triton-{MODEL}(/.*)?", w["name"]) for w in weighted)
        # The audit line's version is the chosen cluster's: the stable's (the spec's `version`) or the canary's.
        assert [versions[w["name"]] for w in weighted] == [str(yaml.safe_load(
            (canary_root / "models" / f"{MODEL}.yaml").read_text()).get("version", 1)), str(CANARY)]
        assert hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]["version"] == \
            "%METADATA(CLUSTER:modelfleet:version)%"
        checked += 1
    assert checked == 2
    with pytest.raises(ValueError, match="no canary Triton runs"):
        envoy_bootstrap(plan.gateway, LocalPorts(1, 2, 3, 4, 5, 6, 7), "audit.log")


def test_the_plan_states_the_split(canary_root):
    from modelfleet.offline import evaluate

    plan = build_plan(load_fleet(canary_root, "dev"))
    report = Report(plan, evaluate(canary_root, "dev"))
    [gateway] = report.gateways()
    [route] = [r for r in gateway["routes"] if r["model"] == MODEL]
    assert route["versions"] == [{"version": 1, "track": "stable", "weight": 90},
                                 {"version": CANARY, "track": "canary", "weight": 10}]
    markdown = render_markdown(report)
    assert f"v1 90% · v{CANARY} 10% canary" in markdown
    assert re.search(rf"\| {MODEL} v{CANARY} 10% canary \| aws:us-east-1 \| 120 \| 1 \|", markdown), markdown
    capacity = report.to_json()["capacity"]["models"][MODEL]["regions"]["aws:us-east-1"]
    assert capacity["canary"]["rps"] == 120 and capacity["rps_stable"] == 1080


def test_modelfleet_up_runs_a_second_triton_for_the_canaries(canary_root, tmp_path):
    """`up`'s processes: the canary Triton on its own ports with the canary's flags, and Envoy's config pointing the
    canary clusters at it."""
    from modelfleet.local import default_ports, local_processes

    plan = build_plan(load_fleet(canary_root, "local"))
    ports = default_ports(plan)
    processes = {p.name: p for p in local_processes(plan, canary_root, tmp_path, ports)}
    canary = processes["triton-canary"]
    assert "--model-config-name=canary" in canary.command and f"--load-model={MODEL}" in canary.command
    assert [a for a in canary.command if a.startswith("--load-model")] == [f"--load-model={MODEL}"]
    assert set(canary.ports.values()).isdisjoint(processes["triton"].ports.values())
    repository = tmp_path / "model-repository" / MODEL
    assert (repository / "configs" / "canary.pbtxt").is_file() and (repository / str(CANARY) / "model.py").is_file()
    envoy = yaml.safe_load((tmp_path / "gateway" / "envoy.yaml").read_text())
    ports_of = {c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"] for c in envoy["static_resources"]["clusters"]}
    assert ports_of[f"triton-{MODEL}/canary"] == ports["triton-canary-http"]
    assert ports_of[f"triton-{MODEL}/grpc/canary"] == ports["triton-canary-grpc"]
    # Prometheus scrapes both Tritons in one job, as the cloud's ServiceMonitor selects both Deployments' pods.
    prometheus = yaml.safe_load((tmp_path / "monitoring" / "prometheus.yml").read_text())
    [triton_job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "triton"]
    assert [t for c in triton_job["static_configs"] for t in c["targets"]] == [
        f"127.0.0.1:{ports['triton-metrics']}", f"127.0.0.1:{ports['triton-canary-metrics']}"]
    # `serve` and `render` use the gateway's own defaults: the same canary ports as `up`'s.
    from modelfleet.gateway.envoy_config import default_ports as gateway_defaults

    defaults = gateway_defaults(plan.gateway)
    assert (defaults.canary_triton_http, defaults.canary_triton_grpc) == (
        ports["triton-canary-http"], ports["triton-canary-grpc"])
    assert "triton-canary-http" not in default_ports(build_plan(load_fleet(Path(__file__).parent.parent, "local")))
