"""Every third-party chart modelfleet installs, pinned in one place. Bump here, nowhere else.

Plain data (no Pulumi): the components install these, and `modelfleet render` writes them for reviewers.

Chart versions are exact (never ranges), so `pulumi preview` shows an upgrade as a diff of this file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chart:
    chart: str
    version: str
    repository: str
    namespace: str


# Advertises `nvidia.com/gpu` on EKS GPU nodes. The accelerated AL2023 AMI ships the driver and container
# toolkit, so the whole GPU operator is not needed; GKE installs its own plugin with the managed driver.
NVIDIA_DEVICE_PLUGIN = Chart(
    chart="nvidia-device-plugin",
    version="0.17.4",
    repository="https://nvidia.github.io/k8s-device-plugin",
    namespace="nvidia",
)

# GPU utilisation, memory and XID errors as Prometheus metrics on EKS. GKE runs its managed DCGM exporter
# instead (monitoring_config DCGM), which understands GKE's driver install path.
DCGM_EXPORTER = Chart(
    chart="dcgm-exporter",
    version="4.8.2",
    repository="https://nvidia.github.io/dcgm-exporter/helm-charts",
    namespace="nvidia",
)

# Scales EKS managed node groups within the plan's bounds (docs/adr/0001-node-autoscaling.md).
# Chart 9.50.1 ships cluster-autoscaler 1.33.0: keep its minor equal to the clusters' Kubernetes minor
# (spec `kubernetes_version`, default 1.33) when bumping either.
CLUSTER_AUTOSCALER = Chart(
    chart="cluster-autoscaler",
    version="9.50.1",
    repository="https://kubernetes.github.io/autoscaler",
    namespace="kube-system",
)

ALL_CHARTS = (NVIDIA_DEVICE_PLUGIN, DCGM_EXPORTER, CLUSTER_AUTOSCALER)


# Scales Triton on its own queue time per request (docs/adr/0002-autoscaling.md); installed on every cluster.
# Chart and app versions move together; modelfleet/serving.py holds the Kubernetes versions 2.20 is tested on.
KEDA = Chart(
    chart="keda",
    version="2.20.0",
    repository="https://kedacore.github.io/charts",
    namespace="keda",
)
# The Kubernetes minors KEDA 2.20 supports (its compatibility matrix): validate refuses a stack outside them.
KEDA_KUBERNETES = ("1.33", "1.35")
