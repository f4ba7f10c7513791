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

# GPU utilisation, memory and XID errors as Prometheus metrics, on EKS and GKE (on GKE with the driver's host path
# mounted: modelfleet/monitoring/kubernetes.py `dcgm_exporter_cloud_values`).
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


# Prometheus (operator), Alertmanager, Grafana and kube-state-metrics per cluster: what KEDA queries and what the
# alerts run on (modelfleet/monitoring/kubernetes.py). 67.8.0 ships prometheus-operator v0.79.2.
KUBE_PROMETHEUS_STACK = Chart(
    chart="kube-prometheus-stack",
    version="67.8.0",
    repository="https://prometheus-community.github.io/helm-charts",
    namespace="monitoring",
)

# Receives OTLP traces from Triton (--trace-config mode=opentelemetry) and the gateway's Envoy, beside Prometheus.
# Chart 0.158.3 ships collector 0.153.0; `image.repository` must be set (the chart has no default image).
OPENTELEMETRY_COLLECTOR = Chart(
    chart="opentelemetry-collector",
    version="0.158.3",
    repository="https://open-telemetry.github.io/opentelemetry-helm-charts",
    namespace="monitoring",
)
# The Kubernetes minors KEDA 2.20 supports (its compatibility matrix): validate refuses a stack outside them.
KEDA_KUBERNETES = ("1.33", "1.35")

# The AI gateway's control plane (docs in modelfleet/gateway/manifests.py): Gateway API and Envoy Gateway CRDs,
# the controller, and the global rate limit service it deploys. Published only as an OCI chart. The CRD schemas
# modelfleet validates its objects against are vendored in modelfleet/data/envoy-gateway-crd-schemas.yaml; bump
# both together.
ENVOY_GATEWAY = Chart(
    chart="gateway-helm",
    version="v1.9.3",
    repository="oci://docker.io/envoyproxy",
    namespace="envoy-gateway-system",
)

# Syncs the gateway's secrets (API keys, TLS certificate, Redis auth token) from AWS Secrets Manager / GCP Secret
# Manager into Kubernetes Secrets, so no secret value passes through Pulumi config or state. CRD schemas vendored
# in modelfleet/data/external-secrets-crd-schemas.yaml.
EXTERNAL_SECRETS = Chart(
    chart="external-secrets",
    version="2.0.0",
    repository="https://charts.external-secrets.io",
    namespace="external-secrets",
)
