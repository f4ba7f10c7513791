"""A private GKE cluster with a system node pool and one GPU node pool per GPU pool of the plan."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from components.network_gcp import PODS_RANGE, SERVICES_RANGE, GcpNetwork
from modelfleet import access
from modelfleet.plan import GKE_GPU_DRIVER, GKE_MONITORING, PoolPlan, RegionPlan

EFFECT = {"NoSchedule": "NO_SCHEDULE", "NoExecute": "NO_EXECUTE", "PreferNoSchedule": "PREFER_NO_SCHEDULE"}
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"  # access is decided by IAM roles, not scopes
# Set once at creation; afterwards the autoscaler owns the node count, and a changed value would replace the pool.
CREATE_ONLY = ["initialNodeCount"]


class GkeCluster(pulumi.ComponentResource):
    """Regional GKE: private nodes, a private endpoint (or authorized networks when the stack lists public
    CIDRs), workload identity, shielded nodes, a release channel, KMS-encrypted secrets, logging and monitoring."""

    def __init__(self, region: RegionPlan, network: GcpNetwork, project: str, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:gcp:GkeCluster", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = region.key

        # Application-layer secrets encryption: GKE's service agent wraps etcd secrets with this key.
        # GCP never deletes a key ring (nor a key): `pulumi destroy` only forgets it, and a ring's name stays taken
        # in its project and location forever. The name is therefore auto-named (the logical name and a random
        # suffix, fixed in the state), so a stack destroyed and brought up again gets a fresh ring instead of
        # failing on the old name; retain_on_delete says outright that destroy leaves the ring behind.
        key_ring = gcp.kms.KeyRing(key, location=region.region,
                                   opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True))
        self.secrets_key = gcp.kms.CryptoKey(
            f"{key}-gke-secrets",
            name="gke-secrets",
            key_ring=key_ring.id,
            rotation_period=region.kms_rotation_period,
            opts=child,
        )
        project_info = gcp.organizations.get_project_output(
            project_id=project, opts=pulumi.InvokeOutputOptions(parent=self))
        key_access = gcp.kms.CryptoKeyIAMMember(
            f"{key}-gke-secrets",
            crypto_key_id=self.secrets_key.id,
            role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
            member=project_info.number.apply(
                lambda number: f"serviceAccount:service-{number}@container-engine-robot.iam.gserviceaccount.com"),
            opts=child,
        )

        # Nodes run as their own least-privilege account, never the project-editor default compute account.
        self.node_account = gcp.serviceaccount.Account(
            f"{key}-nodes",
            account_id=region.node_service_account,
            display_name=f"GKE nodes of {region.cluster_name}",
            opts=child,
        )
        node_roles = [
            gcp.projects.IAMMember(
                f"{key}-nodes-{role.split('/')[-1]}",
                project=project,
                role=role,
                member=self.node_account.email.apply(lambda email: f"serviceAccount:{email}"),
                opts=child,
            )
            for role in access.GKE_NODE_ROLES
        ]

        authorized = [gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
            cidr_block=cidr, display_name=name) for cidr, name in region.master_authorized_cidrs]

        self.cluster = gcp.container.Cluster(
            key,
            name=region.cluster_name,
            location=region.region,
            node_locations=list(region.zones),
            network=network.network.id,
            subnetwork=network.subnet.id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=PODS_RANGE,
                services_secondary_range_name=SERVICES_RANGE,
            ),
            # Node pools are managed below; the default pool is removed right after creation.
            remove_default_node_pool=True,
            initial_node_count=1,
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True,
                enable_private_endpoint=region.endpoint_private_only,
                master_ipv4_cidr_block=region.master_cidr,
                # The private endpoint answers clients in every region of the network, not only this one.
                master_global_access_config=gcp.container.ClusterPrivateClusterConfigMasterGlobalAccessConfigArgs(
                    enabled=region.master_global_access),
            ),
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=authorized,
                # Only the listed networks: not every Google Cloud public address.
                gcp_public_cidrs_access_enabled=False,
            ),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=region.identity.workload_pool),
            enable_shielded_nodes=True,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=region.release_channel),
            min_master_version=region.kubernetes_version,
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(
                state="ENCRYPTED", key_name=self.secrets_key.id),
            # Dataplane V2 enforces NetworkPolicy, which the serving components rely on.
            datapath_provider="ADVANCED_DATAPATH",
            logging_config=gcp.container.ClusterLoggingConfigArgs(
                enable_components=list(region.control_plane_logs)),
            monitoring_config=gcp.container.ClusterMonitoringConfigArgs(
                enable_components=list(GKE_MONITORING),
                managed_prometheus=gcp.container.ClusterMonitoringConfigManagedPrometheusArgs(enabled=True),
            ),
            deletion_protection=region.deletion_protection,
            resource_labels={**tags, **region.retiring_labels},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[key_access]),
        )

        self.node_pools: dict[str, gcp.container.NodePool] = {
            pool.name: self._node_pool(key, pool, region, tags, depends_on=node_roles) for pool in region.pools
        }

        # The control plane calls webhooks and aggregated APIs on the nodes (the plan's ports), from its /28.
        self.node_ingress = [
            gcp.compute.Firewall(
                f"{key}-{rule.name}",
                network=network.network.id,
                direction="INGRESS",
                priority=rule.priority,
                source_ranges=list(rule.source_ranges),
                target_service_accounts=[self.node_account.email],
                allows=[gcp.compute.FirewallAllowArgs(protocol=rule.protocol, ports=[str(p) for p in rule.ports])],
                log_config=gcp.compute.FirewallLogConfigArgs(metadata="INCLUDE_ALL_METADATA"),
                opts=child,
            )
            for rule in region.node_ingress
        ]

        self.name = self.cluster.name
        self.endpoint = self.cluster.endpoint
        self.ca_data = self.cluster.master_auth.apply(lambda auth: auth.cluster_ca_certificate)
        self.register_outputs({
            "clusterName": self.cluster.name,
            "endpoint": self.cluster.endpoint,
            "nodePools": {name: pool.name for name, pool in self.node_pools.items()},
        })

    def _node_pool(self, key: str, pool: PoolPlan, region: RegionPlan, tags: dict[str, str],
                   depends_on: list[pulumi.Resource]) -> gcp.container.NodePool:
        accelerators = [gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
            type=pool.accelerator,
            count=pool.gpus_per_node,
            gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                gpu_driver_version=GKE_GPU_DRIVER),
        )] if pool.is_gpu else None
        return gcp.container.NodePool(
            f"{key}-{pool.name}",
            # The pool's plan name, as on EKS; a replacement (new machine type) deletes the old pool first.
            name=pool.name,
            cluster=self.cluster.id,
            location=region.region,
            node_locations=list(region.zones),
            # Per zone, at creation only (CREATE_ONLY): the autoscaler owns the count afterwards.
            initial_node_count=pool.initial_nodes_per_zone,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(
                # Totals across zones, so the bounds mean what they mean on EKS.
                total_min_node_count=pool.min_nodes,
                total_max_node_count=pool.max_nodes,
                location_policy=pool.location_policy,
            ),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=gcp.container.NodePoolNodeConfigArgs(
                machine_type=pool.instance_type,
                image_type=pool.node_image,
                disk_size_gb=pool.disk_gib,
                disk_type="pd-balanced",
                spot=pool.capacity == "spot",
                guest_accelerators=accelerators,
                labels=dict(pool.labels),
                taints=[gcp.container.NodePoolNodeConfigTaintArgs(key=t.key, value=t.value, effect=EFFECT[t.effect])
                        for t in pool.taints],
                # Provider default labels stop at the node pool; the VMs and disks get the stack's labels here.
                resource_labels=tags,
                service_account=self.node_account.email,
                oauth_scopes=[CLOUD_PLATFORM],
                workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
                shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True),
                metadata={"disable-legacy-endpoints": "true"},
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on, delete_before_replace=True,
                                        ignore_changes=CREATE_ONLY),
        )
