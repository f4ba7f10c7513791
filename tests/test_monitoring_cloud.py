"""Monitoring's cloud half, on the evaluated program: GPU metrics reach the cluster's Prometheus on GKE as on EKS
(the DCGM exporter chart with GKE's driver path, a ServiceMonitor selecting it, alerts reading the metrics it emits)."""

from __future__ import annotations

import json
import re

from pathlib import Path

import pytest

from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan

from modelfleet.monitoring.dashboards import dashboards
from modelfleet.monitoring.rules import monitoring_plan

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "kubernetes:helm.sh/v3:Release"
MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"

# The counters the dcgm-exporter image emits by default: the uncommented rows of NVIDIA/dcgm-exporter
# etc/default-counters.csv, copied here by hand (the exporter's list, not modelfleet's).
DCGM_DEFAULT_COUNTERS = {
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
    "DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE",
}
# The label the exporter puts the GPU user's pod in (dcgm-exporter's transformation `podAttribute = "pod"`).
DCGM_POD_LABEL = "pod"


def _tolerates(tolerations: list[dict], taint) -> bool:
    return any(t.get("key") == taint.key and t.get("effect") in (None, taint.effect)
               and (t.get("operator") == "Exists" or t.get("value") == taint.value) for t in tolerations)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_gke_regions_run_the_dcgm_exporter_the_gpu_alerts_read(stack, evaluated):
    program = evaluated(stack)
    plan = build_plan(load_fleet(ROOT, stack))
    gke = [r for r in plan.regions if r.cloud == "gcp"]
    assert gke, f"{stack} has GKE regions"
    for region in gke:
        provider = f"{region.key}-k8s"
        [release] = [r for r in program.resources if r.type == RELEASE and r.provider == provider
                     and r.inputs["chart"] == "dcgm-exporter"]
        values = release.inputs["values"]
        # GKE's driver lives on the host under /home/kubernetes/bin/nvidia, reached at /usr/local/nvidia.
        mounts = {m["name"]: m["mountPath"] for m in values["extraVolumeMounts"]}
        assert [(v["hostPath"], mounts[v["name"]]) for v in values["extraHostVolumes"]] == [
            ("/home/kubernetes/bin/nvidia", "/usr/local/nvidia")]
        assert {"name": "LD_LIBRARY_PATH", "value": "/usr/local/nvidia/lib64"} in values["extraEnv"]
        # GKE's device plugin names GPUs nvidia0..: the pod mapping must match by device name to label `pod`.
        assert {"name": "DCGM_EXPORTER_KUBERNETES_GPU_ID_TYPE", "value": "device-name"} in values["extraEnv"]
        assert values["securityContext"]["privileged"] is True  # /dev/nvidia* without requesting a GPU
        gpu_pools = [p for p in region.pools if p.gpus_per_node]
        assert gpu_pools
        for pool in gpu_pools:  # it lands on every GPU pool of the region
            assert set(values["nodeSelector"].items()) <= set(pool.labels), pool.name
            assert all(_tolerates(values["tolerations"], t) for t in pool.taints), pool.name
        # GKE's managed DCGM would be a second exporter on the same GPUs, reporting only to Cloud Monitoring.
        [cluster] = [r for r in program.resources if r.type == "gcp:container/cluster:Cluster"
                     and r.name.startswith(region.key)]
        assert "DCGM" not in cluster.inputs["monitoringConfig"]["enableComponents"]

        [monitor] = [r for r in program.resources if r.type == MONITOR and r.provider == provider
                     and r.inputs["metadata"]["name"] == "dcgm-exporter"]
        spec = monitor.inputs["spec"]
        # The chart labels its Service app.kubernetes.io/name=<chart name> and names the port `metrics`
        # (deployment/templates/_helpers.tpl, service.yaml), in the release's namespace.
        assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": "dcgm-exporter"}
        assert spec["namespaceSelector"]["matchNames"] == [release.inputs["namespace"]]
        [endpoint] = spec["endpoints"]
        assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True  # keep the GPU user's `pod`

    mon = monitoring_plan(plan)
    queries = json.dumps([g.to_dict() for g in mon.groups]) + json.dumps(dashboards(plan, mon))
    used = set(re.findall(r"DCGM_FI_[A-Z_]+", queries))
    assert used and used <= DCGM_DEFAULT_COUNTERS
    gpu_alerts = [r for g in mon.groups for r in g.to_dict()["rules"] if "DCGM_FI_" in r["expr"]]
    assert len(gpu_alerts) == 2 * len(plan.models)  # under-used and saturated, per model
    assert all(re.search(rf'\b{DCGM_POD_LABEL}=~"triton-', r["expr"]) for r in gpu_alerts)


# Traces. What each exporter calls, and the permission each call needs, from the exporters' sources and the clouds'
# IAM references (not from modelfleet): the awsxray exporter calls PutTraceSegments (PutTelemetryRecords only with
# its telemetry on, off by default); the googlecloud exporter writes spans with Cloud Trace v2 BatchWriteSpans.
EXPORTER_PERMISSIONS = {
    "awsxray": {"PutTraceSegments": "xray:PutTraceSegments"},
    "googlecloud": {"google.devtools.cloudtrace.v2.TraceService.BatchWriteSpans": "cloudtrace.traces.patch"},
}
# Permissions of the predefined GCP roles involved (IAM basic and predefined roles reference).
GCP_ROLE_PERMISSIONS = {"roles/cloudtrace.agent": {"cloudtrace.traces.patch"}}
CONTRIB_IMAGE = "otel/opentelemetry-collector-contrib"  # the distribution that ships both exporters


def _collector(program, provider):
    [release] = [r for r in program.resources if r.type == RELEASE and r.provider == provider
                 and r.inputs["chart"] == "opentelemetry-collector"]
    return release.inputs["values"]


def _needed(exporter: str) -> set[str]:
    return set(EXPORTER_PERMISSIONS[exporter].values())


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_traces_go_to_the_clouds_trace_backend_with_write_only_grants(stack, evaluated):
    program = evaluated(stack)
    plan = build_plan(load_fleet(ROOT, stack))
    of = lambda typ: [r for r in program.resources if r.type == typ]  # noqa: E731
    assert {r.cloud for r in plan.regions} == {"aws", "gcp"}
    for region in plan.regions:
        values = _collector(program, f"{region.key}-k8s")
        assert values["image"]["repository"] == CONTRIB_IMAGE
        pipeline = values["config"]["service"]["pipelines"]["traces"]
        [exporter] = pipeline["exporters"]
        account = values["serviceAccount"]
        assert account["create"] is True and account["name"] == "opentelemetry-collector"
        if region.cloud == "aws":
            assert exporter == "awsxray" and values["config"]["exporters"]["awsxray"] == {"region": region.region}
            [policy] = [p for p in of("aws:iam/rolePolicy:RolePolicy") if p.name == f"{region.key}-otel-collector-xray"]
            [role] = [r for r in of("aws:iam/role:Role") if r.id == policy.inputs["role"]]
            assert account["annotations"] == {"eks.amazonaws.com/role-arn": role.outputs["arn"]}
            statements = json.loads(policy.inputs["policy"])["Statement"]
            assert [s["Effect"] for s in statements] == ["Allow"]
            assert set(statements[0]["Action"]) == _needed("awsxray")  # all it calls, nothing more
            assert statements[0]["Resource"] == "*"  # X-Ray's write actions take no resource ARN
            # No other policy on the role.
            assert [p.name for p in of("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id] == [policy.name]
            assert not [a for a in of("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                        if a.inputs["role"] in (role.id, role.outputs.get("name"))]
            [trust] = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
            subjects = [v for k, v in trust["Condition"]["StringEquals"].items() if k.endswith(":sub")]
            assert subjects == ["system:serviceaccount:monitoring:opentelemetry-collector"]
        else:
            assert exporter == "googlecloud"
            assert values["config"]["exporters"]["googlecloud"] == {"project": plan.gcp_project}
            [gsa] = [a for a in of("gcp:serviceaccount/account:Account") if a.name == f"{region.key}-otel-collector"]
            assert account["annotations"] == {"iam.gke.io/gcp-service-account": gsa.outputs["email"]}
            assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", gsa.inputs["accountId"])  # GCP's account id rule
            member = f"serviceAccount:{gsa.outputs['email']}"
            project_roles = [m.inputs["role"] for m in of("gcp:projects/iAMMember:IAMMember")
                             if m.inputs["member"] == member]
            assert len(project_roles) == 1
            assert _needed("googlecloud") <= set().union(*(GCP_ROLE_PERMISSIONS[r] for r in project_roles))
            [binding] = [m for m in of("gcp:serviceaccount/iAMMember:IAMMember")
                         if m.inputs["serviceAccountId"] == gsa.outputs["name"]]
            assert binding.inputs["role"] == "roles/iam.workloadIdentityUser"
            assert binding.inputs["member"] == (f"serviceAccount:{plan.gcp_project}.svc.id.goog"
                                                "[monitoring/opentelemetry-collector]")
    ids = [a.inputs["accountId"] for a in of("gcp:serviceaccount/account:Account")
           if a.name.endswith("-otel-collector")]
    assert len(ids) == len(set(ids)) == sum(r.cloud == "gcp" for r in plan.regions)
    assert "cloudtrace.googleapis.com" in plan.gcp_services


def test_the_gateway_latency_and_error_selectors_match_envoy_gateways_cluster_names(project_copy):
    """Envoy Gateway names a route's upstream cluster `<kind>/<ns>/<route>/rule/<i>` (envoyproxy/gateway
    internal/gatewayapi/helpers.go, `irRouteDestinationName`), the local Envoy `triton-<model>`: each model's
    selector takes its own clusters of both, for any rule, and no other model's. A Triton name that is no DNS label
    (routes use the Kubernetes name) is the case where the two names differ."""
    from modelfleet.gateway import manifests
    from modelfleet.gateway.envoy_config import model_cluster
    from modelfleet.monitoring import metrics

    from tests.test_monitoring import rename_sentiment

    rename_sentiment(project_copy, "sentiment_v2.1")
    plan = build_plan(load_fleet(project_copy, "prod"))
    mon = monitoring_plan(plan)
    assert any(mm.model != mm.kube_name for mm in mon.models)

    clusters = {}
    for mm in mon.models:
        route = plan.gateway.route(mm.model)
        names = [model_cluster(mm.model, grpc) for grpc in (False, True)]
        for obj in (manifests.http_route(plan, route), manifests.grpc_route(plan, route)):
            meta = obj["metadata"]
            names += [f"{obj['kind'].lower()}/{meta['namespace']}/{meta['name']}/rule/{i}" for i in range(3)]
        clusters[mm.model] = names
    assert len(clusters) == len(plan.models) == 2
    for mm in mon.models:
        matcher = re.fullmatch(r'envoy_cluster_name=~"(.*)"', metrics.upstream_selector(mm.model, mm.kube_name))
        pattern = re.compile(matcher.group(1))
        for model, names in clusters.items():
            assert all(bool(pattern.fullmatch(n)) == (model == mm.model) for n in names), (mm.model, model)
