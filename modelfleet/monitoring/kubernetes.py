"""Monitoring in each cluster, as plain manifests: kube-prometheus-stack's values, the scrape targets
(ServiceMonitor/PodMonitor), one PrometheusRule per model (labelled `model=<name>`, what the policy
`triton-scraped-and-alerted` looks for) and the dashboards as ConfigMaps for Grafana's sidecar.

kube-prometheus-stack selects PrometheusRules and ServiceMonitors by its `release` label unless
`*SelectorNilUsesHelmValues` is off (its values.yaml): both are done, so objects from any namespace are picked up
and ours also carry the label.
"""

from __future__ import annotations

from modelfleet import serving, versions
from modelfleet.gateway.manifests import inspector_selector
from modelfleet.monitoring.alertmanager import SECRET_NAME, alertmanager_config
from modelfleet.monitoring.dashboards import configmap, dashboards
from modelfleet.monitoring.rules import MonitoringPlan, monitoring_plan
from modelfleet.plan import FleetPlan, RegionPlan

NAMESPACE = serving.PROMETHEUS_NAMESPACE
RELEASE_LABEL = {"release": versions.KUBE_PROMETHEUS_STACK.chart}  # pinned_release names the release after the chart
RETENTION = "15d"  # the 3-day burn-rate window fits several times over
SCRAPE_INTERVAL = "15s"
# The gateway (i11-cloud): Envoy Gateway's proxies in its namespace expose Envoy stats on their `metrics` port;
# the inspection (ext_proc) service beside them exports prometheus-client metrics on `metrics`.
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
ENVOY_PROXY_LABELS = {"app.kubernetes.io/component": "proxy", "app.kubernetes.io/managed-by": "envoy-gateway"}
ENVOY_STATS_PATH = "/stats/prometheus"
DCGM_LABELS = {"app.kubernetes.io/name": "dcgm-exporter"}
SYSTEM_POOL = {serving.POOL_LABEL: "system"}
MODEL_LABEL = f"{serving.LABEL_PREFIX}/model"


def _labels(extra: dict[str, str] | None = None) -> dict[str, str]:
    return dict(sorted({"app.kubernetes.io/part-of": "modelfleet", "app.kubernetes.io/managed-by": "pulumi",
                        **RELEASE_LABEL, **(extra or {})}.items()))


def stack_values(plan: FleetPlan, mon: MonitoringPlan) -> dict:
    """Values for the kube-prometheus-stack chart."""
    return {
        "prometheus": {"prometheusSpec": {
            "ruleSelectorNilUsesHelmValues": False,
            "serviceMonitorSelectorNilUsesHelmValues": False,
            "podMonitorSelectorNilUsesHelmValues": False,
            "retention": RETENTION,
            "scrapeInterval": SCRAPE_INTERVAL,
            "nodeSelector": SYSTEM_POOL,
        }},
        "alertmanager": {
            # The receivers' URLs and the SMTP password live in this Secret (created by operators, never by the
            # program), mounted at /etc/alertmanager/secrets/<name>/ where the config's *_file fields point.
            "alertmanagerSpec": {"secrets": [SECRET_NAME], "nodeSelector": SYSTEM_POOL},
            "config": alertmanager_config(mon, plan.dns_domain),
        },
        "grafana": {"sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1",
                                               "searchNamespace": "ALL"}},
                    "nodeSelector": SYSTEM_POOL},
        "prometheusOperator": {"nodeSelector": SYSTEM_POOL},
        "kube-state-metrics": {"nodeSelector": SYSTEM_POOL},
    }


def _meta(name: str, namespace: str, extra: dict[str, str] | None = None) -> dict:
    return {"name": name, "namespace": namespace, "labels": _labels(extra)}


def triton_service_monitor(plan: FleetPlan) -> dict:
    ns = serving.namespace_name(plan)
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": _meta("triton", ns),
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "triton"}},
                 "namespaceSelector": {"matchNames": [ns]},
                 "endpoints": [{"port": "metrics", "interval": SCRAPE_INTERVAL}]},
    }


def gateway_pod_monitors(plan: FleetPlan) -> list[dict]:
    ns = serving.namespace_name(plan)
    return [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
         "metadata": _meta("envoy-gateway-proxies", ENVOY_GATEWAY_NAMESPACE),
         "spec": {"selector": {"matchLabels": dict(ENVOY_PROXY_LABELS)},
                  "namespaceSelector": {"matchNames": [ENVOY_GATEWAY_NAMESPACE]},
                  "podMetricsEndpoints": [{"port": "metrics", "path": ENVOY_STATS_PATH, "interval": SCRAPE_INTERVAL}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
         "metadata": _meta("modelfleet-gateway", ns),
         "spec": {"selector": {"matchLabels": inspector_selector()},
                  "namespaceSelector": {"matchNames": [ns]},
                  "podMetricsEndpoints": [{"port": "metrics", "interval": SCRAPE_INTERVAL}]}},
    ]


def dcgm_service_monitor() -> dict:
    """The DCGM exporter's Service (the chart's `metrics` port). `honorLabels`: the exporter labels each GPU's
    series with the `pod`/`namespace` of the pod using it (dcgm-exporter pkg/.../transformation `podAttribute`);
    without it Prometheus would overwrite them with the exporter's own pod and keep the GPU user's only as
    `exported_pod`, and the GPU alerts' `pod=~"triton-..."` would never match."""
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": _meta("dcgm-exporter", versions.DCGM_EXPORTER.namespace),
        "spec": {"selector": {"matchLabels": dict(DCGM_LABELS)},
                 "namespaceSelector": {"matchNames": [versions.DCGM_EXPORTER.namespace]},
                 "endpoints": [{"port": "metrics", "interval": SCRAPE_INTERVAL, "honorLabels": True}]},
    }


# GKE installs the NVIDIA driver on the host under /home/kubernetes/bin/nvidia and mounts it into a container at
# /usr/local/nvidia only when the container requests `nvidia.com/gpu`; the exporter requests none (it watches every
# GPU of its node), so it mounts the install directory itself, reaches /dev/nvidia* as a privileged container,
# and finds libnvidia-ml there. This is Google's own DCGM exporter DaemonSet for GKE
# (https://cloud.google.com/stackdriver/docs/managed-prometheus/exporters/nvidia-dcgm, manifest
# GoogleCloudPlatform/prometheus-engine examples/nvidia-dcgm/exporter.yaml), expressed as the pinned chart's values
# (NVIDIA/dcgm-exporter deployment/templates/daemonset.yaml: extraHostVolumes, extraVolumeMounts, extraEnv).
GKE_DRIVER_HOST_PATH = "/home/kubernetes/bin/nvidia"
GKE_DRIVER_MOUNT = "/usr/local/nvidia"


def dcgm_exporter_cloud_values(cloud: str) -> dict:
    """The dcgm-exporter chart's values that differ per cloud. EKS's accelerated AMI puts the driver where the
    NVIDIA container toolkit finds it, so the chart's defaults serve. `extraVolumeMounts` replaces the chart's
    default list, which mounted its counters ConfigMap over the image's /etc/dcgm-exporter/default-counters.csv: the
    image's own file (the counters the GPU alerts use) is read instead."""
    if cloud != "gcp":
        return {}
    return {
        "extraHostVolumes": [{"name": "nvidia-install-dir-host", "hostPath": GKE_DRIVER_HOST_PATH}],
        "extraVolumeMounts": [{"name": "nvidia-install-dir-host", "mountPath": GKE_DRIVER_MOUNT, "readOnly": True}],
        "extraEnv": [{"name": "LD_LIBRARY_PATH", "value": f"{GKE_DRIVER_MOUNT}/lib64"},
                     # GKE's device plugin hands GPUs out by device name (nvidia0), not UUID: the exporter must map
                     # the kubelet's pod resources by name, or no GPU series carries its pod (Google's manifest).
                     {"name": "DCGM_EXPORTER_KUBERNETES_GPU_ID_TYPE", "value": "device-name"}],
        "securityContext": {"privileged": True, "runAsNonRoot": False, "runAsUser": 0},
    }


def prometheus_rules(mon: MonitoringPlan) -> list[dict]:
    """The shared Triton recording rules, then one PrometheusRule per model with its SLI records and alerts."""
    out = []
    for group in mon.groups:
        mm = next((mm for mm in mon.models if group.name in (f"modelfleet-{mm.model}-sli",
                                                            f"modelfleet-{mm.model}-alerts")), None)
        name = f"modelfleet-{mm.kube_name}" if mm else group.name
        if out and out[-1]["metadata"]["name"] == name:
            out[-1]["spec"]["groups"].append(group.to_dict())
            continue
        # Labelled with the model's Kubernetes name, like its workloads; its alerts carry Triton's name (`model`).
        out.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                    "metadata": _meta(name, NAMESPACE, {MODEL_LABEL: mm.kube_name} if mm else None),
                    "spec": {"groups": [group.to_dict()]}})
    return out


def region_monitoring_objects(plan: FleetPlan, region: RegionPlan) -> list[dict]:
    """Everything monitoring declares in one region's cluster besides the chart, in apply order."""
    mon = monitoring_plan(plan)
    objects = [triton_service_monitor(plan), *gateway_pod_monitors(plan)]
    objects.append(dcgm_service_monitor())  # the chart's exporter, on EKS and GKE (components/cluster_addons.py)
    objects += prometheus_rules(mon)
    objects += [configmap(name, board, NAMESPACE) for name, board in dashboards(plan, mon).items()]
    return objects
