"""The top of the component tree: one `Region` per region of the plan, each with its own providers.

The contract with later components (Triton, gateway, monitoring): a `Region` exposes
- `kubernetes`: the `pulumi_kubernetes.Provider` of its cluster; pass it as `provider=` to every object;
- `triton_identity`: `namespace`, `service_account` and `annotations` (an Output of the ServiceAccount
  annotations that give Triton read access to its models: IRSA role on AWS, workload identity on GCP);
- `cloud_provider`: the region's AWS or GCP provider.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as kubernetes

from components.cluster_addons import ClusterAutoscaler, GpuSoftware
from components.cluster_aws import EksCluster
from components.cluster_gcp import GkeCluster
from components.cluster_identity import AwsTritonIdentity, GcpTritonIdentity, TritonIdentity
from components.network_aws import AwsNetwork
from components.network_gcp import GcpNetwork
from components.providers import cloud_provider, eks_kubeconfig, gke_kubeconfig, kubernetes_provider
from components.monitoring import Monitoring
from components.serving import Serving
from modelfleet.plan import FleetPlan, RegionPlan


class Region(pulumi.ComponentResource):
    """Everything modelfleet runs in one cloud region: network, GPU cluster, cluster software, Triton's identity."""

    kubernetes: kubernetes.Provider
    triton_identity: TritonIdentity

    def __init__(self, region: RegionPlan, fleet: FleetPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:fleet:Region", region.key, None, opts)
        self.plan = region
        self.cloud_provider = cloud_provider(region, fleet, pulumi.ResourceOptions(parent=self))
        # Children inherit the region's provider: nothing can land in another region by accident.
        in_region = pulumi.ResourceOptions(parent=self, providers=[self.cloud_provider])
        tags = dict(fleet.tags)
        if region.cloud == "aws":
            self._aws(region, tags, in_region)
        else:
            self._gcp(region, fleet, tags, in_region)
        # KEDA and Triton need schedulable nodes (on EKS also the device plugin, or GPU pods never fit): without
        # this they race the node groups, and their Helm/Deployment awaits time out on an empty cluster.
        self.monitoring = Monitoring(fleet, region, self.kubernetes, needs=self.serving_needs,
                                     opts=pulumi.ResourceOptions(parent=self))
        self.serving = Serving(fleet, region, self.kubernetes, self.triton_identity.annotations,
                               needs=self.serving_needs,
                               opts=pulumi.ResourceOptions(parent=self, depends_on=[self.triton_identity]),
                               prometheus=[self.monitoring.release])
        self.register_outputs({
            "clusterName": self.cluster.name,
            "endpoint": self.cluster.endpoint,
            "tritonAnnotations": self.triton_identity.annotations,
        })

    def _aws(self, region: RegionPlan, tags: dict[str, str], in_region: pulumi.ResourceOptions) -> None:
        self.network = AwsNetwork(region, opts=in_region)
        self.cluster = EksCluster(region, self.network, tags, opts=in_region)
        self.kubernetes = kubernetes_provider(
            f"{region.key}-k8s",
            eks_kubeconfig(self.cluster.name, self.cluster.endpoint, self.cluster.ca_data, region.region),
            pulumi.ResourceOptions(parent=self),
        )
        node_groups = list(self.cluster.node_groups.values())
        self.gpu_software = GpuSoftware(region, self.kubernetes, node_groups, opts=in_region)
        self.autoscaler = ClusterAutoscaler(region, self.cluster, self.kubernetes, node_groups, opts=in_region)
        self.triton_identity = AwsTritonIdentity(region, self.cluster, opts=in_region)
        self.serving_needs: list[pulumi.Resource] = [*node_groups, self.gpu_software.device_plugin]

    def _gcp(self, region: RegionPlan, fleet: FleetPlan, tags: dict[str, str],
             in_region: pulumi.ResourceOptions) -> None:
        assert fleet.gcp_project, "the spec requires gcp_project for GCP regions"
        self.network = GcpNetwork(region, opts=in_region)
        self.cluster = GkeCluster(region, self.network, fleet.gcp_project, tags, opts=in_region)
        self.kubernetes = kubernetes_provider(
            f"{region.key}-k8s",
            gke_kubeconfig(self.cluster.name, self.cluster.endpoint, self.cluster.ca_data),
            pulumi.ResourceOptions(parent=self),
        )
        # GKE brings the device plugin with its managed driver, DCGM with managed monitoring, and its own
        # node autoscaler within each pool's bounds: no charts needed there.
        self.triton_identity = GcpTritonIdentity(region, [self.cluster.cluster], opts=in_region)
        self.serving_needs = list(self.cluster.node_pools.values())


class Cost(pulumi.ComponentResource):
    """The plan's cost estimate as a resource of the stack, so policy packs see it under `pulumi preview` as
    they do offline: its props are its registered outputs (the contract in policies/README.md)."""

    def __init__(self, fleet: FleetPlan, opts: pulumi.ResourceOptions | None = None):
        props = {
            "currency": "USD",
            "monthlyUsd": fleet.monthly_usd,
            "budgetMonthlyUsd": fleet.budget_monthly_usd,
            "lines": [
                {"region": region.key, "item": line.item, "quantity": line.quantity,
                 "hourlyUsdEach": line.hourly_usd_each, "monthlyUsd": line.monthly_usd}
                for region in fleet.regions for line in region.cost
            ],
        }
        super().__init__("modelfleet:fleet:Cost", "cost", props, opts)
        self.register_outputs(props)


def deploy(fleet: FleetPlan) -> list[Region]:
    regions = [Region(region, fleet) for region in fleet.regions]
    if regions:
        Cost(fleet)
    return regions
