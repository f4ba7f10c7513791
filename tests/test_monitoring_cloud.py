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
