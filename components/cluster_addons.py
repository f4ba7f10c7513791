"""Cluster software from third-party charts: the NVIDIA GPU stack and the node autoscaler, pinned in
`modelfleet/versions.py`.

Helm talks to the cluster's private API endpoint: `pulumi up` must run where that endpoint is reachable (a CI
runner in the VPC, or a stack whose spec lists the runner's CIDR in `cluster_endpoint.public_access_cidrs`).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as kubernetes

from components.helm import pinned_release
from components.cluster_aws import EksCluster, irsa_role
from modelfleet import access, versions
from modelfleet.monitoring.kubernetes import dcgm_exporter_cloud_values
from modelfleet.plan import GPU_TAINT_KEY, RegionPlan

GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")  # set on every GPU pool by the plan
SYSTEM_POOL_LABEL = ("modelfleet.io/pool", "system")


def _gpu_placement() -> dict:
    return {
        "nodeSelector": {GPU_NODE_LABEL[0]: GPU_NODE_LABEL[1]},
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }


class GpuSoftware(pulumi.ComponentResource):
    """The NVIDIA device plugin (advertises `nvidia.com/gpu`; EKS only, GKE installs its own with the managed
    driver) and the DCGM exporter (GPU metrics for the cluster's Prometheus) on GPU nodes."""

    def __init__(self, region: RegionPlan, kubernetes_provider: kubernetes.Provider, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:k8s:GpuSoftware", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=kubernetes_provider, depends_on=depends_on)
        self.device_plugin = (pinned_release(f"{region.key}-nvidia-device-plugin", versions.NVIDIA_DEVICE_PLUGIN,
                                             _gpu_placement(), child) if region.cloud == "aws" else None)
        self.dcgm_exporter = pinned_release(f"{region.key}-dcgm-exporter", versions.DCGM_EXPORTER, {
            **_gpu_placement(),
            # The monitoring stack declares the exporter's ServiceMonitor (modelfleet/monitoring/kubernetes.py).
            "serviceMonitor": {"enabled": False},
            **dcgm_exporter_cloud_values(region.cloud),
        }, pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            depends_on=[self.device_plugin] if self.device_plugin else [])))
        self.register_outputs({"releases": [r.status for r in (self.device_plugin, self.dcgm_exporter) if r]})


class ClusterAutoscaler(pulumi.ComponentResource):
    """cluster-autoscaler on EKS: grows and shrinks each managed node group within the plan's bounds, with an
    IRSA role that can only resize this cluster's groups."""

    def __init__(self, region: RegionPlan, cluster: EksCluster, kubernetes_provider: kubernetes.Provider,
                 depends_on: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:aws:ClusterAutoscaler", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace, service_account = access.CLUSTER_AUTOSCALER_SERVICE_ACCOUNT
        role = irsa_role(f"{region.key}-cluster-autoscaler", cluster, namespace, service_account, opts=child)
        aws.iam.RolePolicy(
            f"{region.key}-cluster-autoscaler",
            role=role.id,
            policy=cluster.name.apply(lambda name: json.dumps(access.cluster_autoscaler_policy(name), sort_keys=True)),
            opts=child,
        )
        self.release = pinned_release(f"{region.key}-cluster-autoscaler", versions.CLUSTER_AUTOSCALER, {
            "cloudProvider": "aws",
            "awsRegion": region.region,
            "autoDiscovery": {"clusterName": cluster.name},
            "rbac": {"serviceAccount": {
                "create": True,
                "name": service_account,
                "annotations": {"eks.amazonaws.com/role-arn": role.arn},
            }},
            "nodeSelector": {SYSTEM_POOL_LABEL[0]: SYSTEM_POOL_LABEL[1]},
            "extraArgs": {
                # The spot and on-demand pools of one GPU class are alternatives: fill the cheapest that fits.
                "expander": "least-waste",
                "balance-similar-node-groups": "true",
                "skip-nodes-with-system-pods": "false",
            },
        }, pulumi.ResourceOptions(parent=self, provider=kubernetes_provider, depends_on=depends_on))
        self.register_outputs({"roleArn": role.arn})
