"""The top of the component tree: one `Region` per region of the plan, each with its own providers.

The contract with later components (Triton, gateway, monitoring): a `Region` exposes
- `kubernetes`: the `pulumi_kubernetes.Provider` of its cluster; pass it as `provider=` to every object;
- `triton_identity`: `namespace`, `service_account` and `annotations` (an Output of the ServiceAccount
  annotations that give Triton read access to its models: IRSA role on AWS, workload identity on GCP);
- `cloud_provider`: the region's AWS or GCP provider;
- `gateway`: the AI gateway in front of Triton (components/gateway.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from components.cluster_addons import ClusterAutoscaler, GpuSoftware
from components.tracing import AwsTraceIdentity, GcpTraceIdentity
from components.cluster_aws import EksCluster
from components.cluster_gcp import GkeCluster
from components.cluster_identity import AwsTritonIdentity, GcpTritonIdentity, TritonIdentity
from components.network_aws import AwsNetwork
from components.network_gcp import GcpNetwork
from components.providers import cloud_provider, eks_kubeconfig, gke_kubeconfig, kubernetes_provider
from components.release import bucket_object
from components import routing
from components.gateway import AwsGatewayCloud, Gateway, GcpGatewayCloud
from components.monitoring import Monitoring
from components.serving import Serving
from modelfleet.plan import FleetPlan, RegionPlan
from modelfleet.release import ReleaseError, ReleaseObject, objects_read_by, release_objects


class Region(pulumi.ComponentResource):
    """Everything modelfleet runs in one cloud region: network, GPU cluster, cluster software, Triton's identity."""

    kubernetes: kubernetes.Provider
    triton_identity: TritonIdentity

    def __init__(self, region: RegionPlan, fleet: FleetPlan, apis: Sequence[pulumi.Resource] = (),
                 release: tuple[ReleaseObject, ...] = (),
                 published: dict[tuple[str, str], pulumi.Resource] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        """`release`: every object of the stack's model repositories; this region writes those it is the
        writer of into `published` (shared by all regions) and its Triton pods wait for the ones they read."""
        super().__init__("modelfleet:fleet:Region", region.key, None, opts)
        self.plan = region
        # Every resource of the region goes through this provider, so a provider that waits for the project's
        # APIs makes all of them wait (a GKE cluster created before container.googleapis.com is on fails).
        self.cloud_provider = cloud_provider(region, fleet, pulumi.ResourceOptions(
            parent=self, depends_on=list(apis) if region.cloud == "gcp" else []))
        # Children inherit the region's provider: nothing can land in another region by accident.
        in_region = pulumi.ResourceOptions(parent=self, providers=[self.cloud_provider])
        tags = dict(fleet.tags)
        if region.cloud == "aws":
            self._aws(region, fleet, tags, in_region)
        else:
            self._gcp(region, fleet, tags, in_region)
        # KEDA and Triton need schedulable nodes (on EKS also the device plugin, or GPU pods never fit): without
        # this they race the node groups, and their Helm/Deployment awaits time out on an empty cluster.
        self.monitoring = Monitoring(fleet, region, self.kubernetes, self.trace_identity, needs=self.serving_needs,
                                     opts=pulumi.ResourceOptions(parent=self))
        published = {} if published is None else published
        for obj in release:
            if obj.writer == region.key:
                published[(obj.bucket, obj.key)] = bucket_object(obj, in_region)
        reads = {p.model: [published[(o.bucket, o.key)] for o in objects_read_by(release, region, p)]
                 for p in region.placements}
        # Triton's pods read their models at start: they wait for the IAM grants and bindings, not only the role,
        # and for their repository's objects.
        self.serving = Serving(fleet, region, self.kubernetes, self.triton_identity.annotations,
                               needs=self.serving_needs, grants=self.triton_identity.grants, release=reads,
                               prometheus=[self.monitoring.release],
                               opts=pulumi.ResourceOptions(parent=self, depends_on=[self.triton_identity]))
        # The gateway's charts come after the node pools like every add-on; its objects live in Triton's namespace.
        self.gateway = Gateway(fleet, region, self.kubernetes, self.gateway_cloud,
                               needs=[*self.serving_needs, self.serving.namespace],
                               opts=pulumi.ResourceOptions(parent=self), backends=self.serving.by_model)
        self.register_outputs({
            "clusterName": self.cluster.name,
            "endpoint": self.cluster.endpoint,
            "tritonAnnotations": self.triton_identity.annotations,
        })

    def _aws(self, region: RegionPlan, fleet: FleetPlan, tags: dict[str, str],
             in_region: pulumi.ResourceOptions) -> None:
        self.network = AwsNetwork(region, opts=in_region)
        self.cluster = EksCluster(region, self.network, tags, opts=in_region)
        self.kubernetes = kubernetes_provider(
            f"{region.key}-k8s",
            eks_kubeconfig(self.cluster.name, self.cluster.endpoint, self.cluster.ca_data, region.region),
            # Every Kubernetes call runs as the deployer: only once its access entry and policy exist.
            pulumi.ResourceOptions(parent=self, depends_on=self.cluster.admin_access),
        )
        node_groups = list(self.cluster.node_groups.values())
        self.gpu_software = GpuSoftware(region, self.kubernetes, node_groups, opts=in_region)
        self.autoscaler = ClusterAutoscaler(region, self.cluster, self.kubernetes, node_groups, opts=in_region)
        self.triton_identity = AwsTritonIdentity(region, self.cluster, opts=in_region)
        self.trace_identity = AwsTraceIdentity(fleet, region, self.cluster, opts=in_region)
        self.serving_needs: list[pulumi.Resource] = [*node_groups, self.gpu_software.device_plugin]
        self.gateway_cloud = AwsGatewayCloud(fleet, region, self.cluster, self.network, opts=in_region)

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
        # GKE brings the device plugin with its managed driver and its own node autoscaler within each pool's
        # bounds; its managed DCGM metrics go to Cloud Monitoring, not to the cluster's Prometheus that the GPU
        # alerts run on, so the DCGM exporter chart runs here too.
        self.gpu_software = GpuSoftware(region, self.kubernetes, list(self.cluster.node_pools.values()),
                                        opts=in_region)
        self.triton_identity = GcpTritonIdentity(region, fleet.gcp_project, [self.cluster.cluster], opts=in_region)
        self.trace_identity = GcpTraceIdentity(fleet, region, [self.cluster.cluster], opts=in_region)
        self.serving_needs = list(self.cluster.node_pools.values())
        self.gateway_cloud = GcpGatewayCloud(fleet, region, self.network, self.cluster.node_account,
                                             depends_on=[self.cluster.cluster], opts=in_region)


class GcpApis(pulumi.ComponentResource):
    """The Google APIs the stack's resources call, enabled in its project before any region's resources."""

    def __init__(self, fleet: FleetPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:gcp:Apis", fleet.gcp_project, None, opts)
        provider = gcp.Provider("gcp-project", project=fleet.gcp_project, default_labels=dict(fleet.tags),
                                opts=pulumi.ResourceOptions(parent=self))
        self.services = [
            gcp.projects.Service(
                service.split(".")[0],
                project=fleet.gcp_project,
                service=service,
                # Other workloads of the project may use these APIs: destroying the stack leaves them on.
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=pulumi.ResourceOptions(parent=self, provider=provider),
            )
            for service in fleet.gcp_services
        ]
        self.register_outputs({"services": list(fleet.gcp_services)})


class Cost(pulumi.ComponentResource):
    """The plan's cost estimate as a resource of the stack, so policy packs see it under `pulumi preview` as
    they do offline: its props are its registered outputs (the contract in policies/README.md)."""

    def __init__(self, fleet: FleetPlan, regions: Sequence[RegionPlan] | None = None, dns: bool = True,
                 opts: pulumi.ResourceOptions | None = None):
        """`regions` and `dns`: the part of the fleet's cost this stack declares (modelfleet:role) — every region
        and Route53 in one stack; a regional stack its region; the global stack Route53."""
        regions = fleet.regions if regions is None else regions
        global_cost = fleet.global_cost if dns else ()
        props = {
            "currency": "USD",
            "monthlyUsd": round(sum(r.monthly_usd for r in regions) + sum(l.monthly_usd for l in global_cost), 2),
            "budgetMonthlyUsd": fleet.budget_monthly_usd,
            "lines": [
                {"region": region.key, "item": line.item, "quantity": line.quantity,
                 "hourlyUsdEach": line.hourly_usd_each, "monthlyUsd": line.monthly_usd}
                for region in regions for line in region.cost
            ] + [
                {"region": "global", "item": line.item, "quantity": line.quantity,
                 "hourlyUsdEach": line.hourly_usd_each, "monthlyUsd": line.monthly_usd}
                for line in global_cost
            ],
        }
        super().__init__("modelfleet:fleet:Cost", "cost", props, opts)
        self.register_outputs(props)


class DeployerAccess(pulumi.ComponentResource):
    """How `pulumi up` reaches the cluster APIs, as the stack decided it, for the policy pack to read (its props
    are its outputs, as for Cost): `deployer-access-decided` flags the example stacks' placeholder."""

    def __init__(self, fleet: FleetPlan, opts: pulumi.ResourceOptions | None = None):
        cidrs = sorted({cidr for region in fleet.regions for cidr in region.endpoint_public_cidrs})
        props = {
            "placeholder": fleet.deployer_access_placeholder,
            "privateOnly": all(region.endpoint_private_only for region in fleet.regions),
            "publicAccessCidrs": cidrs,
        }
        super().__init__("modelfleet:fleet:DeployerAccess", "deployer-access", props, opts)
        self.register_outputs(props)


class GatewayRelease(pulumi.ComponentResource):
    """The inspection-service image the stack names for its gateways, for the policy pack to read (props are its
    outputs, as for DeployerAccess): `gateway-image-released` flags the example stacks' all-zero digest. A plain
    config value, so it is known in a preview where the registry (and so the Deployment's image) is not."""

    def __init__(self, fleet: FleetPlan, opts: pulumi.ResourceOptions | None = None):
        props = {"inspectorImageDigest": fleet.gateway_image_digest,
                 "regions": [region.key for region in fleet.regions]}
        super().__init__("modelfleet:fleet:GatewayRelease", "gateway-release", props, opts)
        self.register_outputs(props)


def deploy(fleet: FleetPlan, root: Path | None = None) -> list[Region]:
    """The stack's part of the fleet (`modelfleet:role`): every region and the global routing (all), one region
    exporting its gateway entry (regional), or only the global routing over the regional stacks' entries (global)."""
    if fleet.role == "global":
        routing.deploy_global(fleet)
        Cost(fleet, regions=(), dns=True)
        return []
    try:
        # Before any resource: missing artefacts stop the program, as a bad spec does.
        release = release_objects(fleet, root or Path.cwd())
    except ReleaseError as exc:
        raise pulumi.RunError(f"the release cannot be built:\n{exc}") from None
    deployed = [r for r in fleet.regions if fleet.role == "all" or r.ref == fleet.role_region]
    keys = {r.key for r in deployed}
    # A regional stack writes the model objects its region is the writer of; objects another region's stack
    # writes are not waited for (no dependency crosses stacks: bring that stack up first).
    release = tuple(o for o in release if o.writer in keys)
    apis = GcpApis(fleet).services if fleet.gcp_services and any(r.cloud == "gcp" for r in deployed) else []
    published: dict[tuple[str, str], pulumi.Resource] = {}
    regions = [Region(region, fleet, apis, release, published) for region in deployed]
    if regions:
        Cost(fleet, regions=deployed, dns=fleet.role == "all")
        DeployerAccess(fleet)
        if fleet.gateway is not None and fleet.gateway_image_digest:
            GatewayRelease(fleet)
        routing.deploy(fleet, regions)  # global: its own provider, over every region's entry
    return regions
