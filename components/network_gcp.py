"""A private VPC network for one GCP region: one subnet with pod and service ranges, egress only through NAT."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from modelfleet.plan import GCP_DENY_ALL_PRIORITY, GCP_FLOW_LOG_SAMPLING, RegionPlan

PODS_RANGE = "pods"
SERVICES_RANGE = "services"


class GcpNetwork(pulumi.ComponentResource):
    """Custom-mode network, a subnet with secondary ranges and private Google access, Cloud Router + NAT, and
    a lowest-priority deny of all ingress (GKE adds the narrow allows it needs above it)."""

    def __init__(self, region: RegionPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:gcp:Network", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = region.key

        self.network = gcp.compute.Network(
            key,
            # Custom mode: no auto subnet in every region of the world, only the range the plan gives.
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=child,
        )
        self.subnet = gcp.compute.Subnetwork(
            key,
            network=self.network.id,
            region=region.region,
            ip_cidr_range=region.private_subnets[0],
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=PODS_RANGE, ip_cidr_range=region.pods_cidr),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=SERVICES_RANGE,
                                                           ip_cidr_range=region.services_cidr),
            ],
            # Nodes without external addresses still reach Cloud Storage and Artifact Registry.
            private_ip_google_access=True,
            log_config=gcp.compute.SubnetworkLogConfigArgs(
                aggregation_interval="INTERVAL_5_SEC",
                flow_sampling=GCP_FLOW_LOG_SAMPLING,
                metadata="INCLUDE_ALL_METADATA",
            ),
            opts=child,
        )
        router = gcp.compute.Router(key, network=self.network.id, region=region.region, opts=child)
        gcp.compute.RouterNat(
            key,
            router=router.name,
            region=region.region,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[gcp.compute.RouterNatSubnetworkArgs(name=self.subnet.id,
                                                             source_ip_ranges_to_nats=["ALL_IP_RANGES"])],
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=child,
        )
        gcp.compute.Firewall(
            f"{key}-deny-all-ingress",
            network=self.network.id,
            direction="INGRESS",
            priority=GCP_DENY_ALL_PRIORITY,
            source_ranges=["0.0.0.0/0"],
            denies=[gcp.compute.FirewallDenyArgs(protocol="all")],
            log_config=gcp.compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA"),
            opts=child,
        )
        self.register_outputs({"networkId": self.network.id, "subnetId": self.subnet.id})
