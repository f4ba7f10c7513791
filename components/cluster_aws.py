"""A private EKS cluster with a system node group and one managed node group per GPU pool of the plan."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.network_aws import AwsNetwork
from modelfleet import access
from modelfleet.plan import KMS_DELETION_WINDOW_DAYS, AddonPlan, PoolPlan, RegionPlan

CAPACITY = {"on-demand": "ON_DEMAND", "spot": "SPOT"}
EFFECT = {"NoSchedule": "NO_SCHEDULE", "NoExecute": "NO_EXECUTE", "PreferNoSchedule": "PREFER_NO_SCHEDULE"}
# The root device of the AL2023 EKS AMIs.
ROOT_DEVICE = "/dev/xvda"
# The autoscaler owns the node count between min and max; a re-run of the program must not reset it.
AUTOSCALED = ["scalingConfig.desiredSize"]


class EksCluster(pulumi.ComponentResource):
    """EKS with a private API endpoint (public only for the stack's CIDRs), KMS envelope encryption of secrets,
    every control-plane log type, an OIDC provider for IRSA, and the plan's node pools."""

    def __init__(self, region: RegionPlan, network: AwsNetwork, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:aws:EksCluster", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = region.key

        self.secrets_key = aws.kms.Key(
            f"{key}-eks-secrets",
            description=f"Envelope encryption of Kubernetes secrets in {region.cluster_name}",
            enable_key_rotation=True,
            rotation_period_in_days=region.kms_rotation_days,
            deletion_window_in_days=KMS_DELETION_WINDOW_DAYS,
            opts=child,
        )
        cluster_role = aws.iam.Role(
            f"{key}-eks-cluster",
            assume_role_policy=json.dumps(access.assume_role_policy("eks.amazonaws.com")),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{key}-eks-cluster-{i}", role=cluster_role.name, policy_arn=arn, opts=child)
            for i, arn in enumerate(access.EKS_CLUSTER_POLICIES)
        ]
        # Created before the cluster so EKS writes into a group with our retention, not an unbounded one.
        control_plane_logs = aws.cloudwatch.LogGroup(
            f"{key}-eks-control-plane",
            name=f"/aws/eks/{region.cluster_name}/cluster",
            retention_in_days=region.log_retention_days,
            opts=child,
        )

        self.cluster = aws.eks.Cluster(
            key,
            name=region.cluster_name,
            version=region.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=network.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=not region.endpoint_private_only,
                # Only sent when public access is on; AWS would otherwise default to 0.0.0.0/0 there.
                public_access_cidrs=list(region.endpoint_public_cidrs) or None,
            ),
            kubernetes_network_config=aws.eks.ClusterKubernetesNetworkConfigArgs(
                service_ipv4_cidr=region.services_cidr,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=self.secrets_key.arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(region.control_plane_logs),
            access_config=aws.eks.ClusterAccessConfigArgs(
                # Access entries only (no aws-auth ConfigMap), all declared below: no implicit creator admin.
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            deletion_protection=region.deletion_protection,
            tags=region.retiring_labels or None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[control_plane_logs, *attachments]),
        )

        self.admin_access = self._admin_access(key, region)

        issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        self.oidc_issuer = issuer
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{key}-irsa",
            url=issuer,
            client_id_lists=["sts.amazonaws.com"],
            opts=child,
        )

        # The VPC CNI gets its own IRSA role, so the node role does not carry ENI permissions for every pod.
        cni_role = irsa_role(f"{key}-vpc-cni", self, *access.VPC_CNI_SERVICE_ACCOUNT, opts=child)
        cni_attachments = [
            aws.iam.RolePolicyAttachment(f"{key}-vpc-cni-{i}", role=cni_role.name, policy_arn=arn, opts=child)
            for i, arn in enumerate(access.EKS_CNI_POLICIES)
        ]
        before_nodes = [
            self._addon(key, region, addon, service_account_role_arn=cni_role.arn if addon.name == "vpc-cni" else None,
                        depends_on=cni_attachments if addon.name == "vpc-cni" else [])
            for addon in region.addons if not addon.after_nodes
        ]

        self.node_role = aws.iam.Role(
            f"{key}-nodes",
            assume_role_policy=json.dumps(access.assume_role_policy("ec2.amazonaws.com")),
            opts=child,
        )
        node_attachments = [
            aws.iam.RolePolicyAttachment(f"{key}-nodes-{i}", role=self.node_role.name, policy_arn=arn, opts=child)
            for i, arn in enumerate(access.EKS_NODE_POLICIES)
        ]

        self.node_groups: dict[str, aws.eks.NodeGroup] = {}
        for pool in region.pools:
            template = self._launch_template(key, pool, region, tags)
            self.node_groups[pool.name] = aws.eks.NodeGroup(
                f"{key}-{pool.name}",
                cluster_name=self.cluster.name,
                node_role_arn=self.node_role.arn,
                subnet_ids=network.private_subnet_ids,
                ami_type=pool.node_image,
                capacity_type=CAPACITY[pool.capacity],
                instance_types=[pool.instance_type],
                # The control plane's minor: nodes follow the cluster when the stack's kubernetes_version moves.
                version=region.kubernetes_version,
                scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                    min_size=pool.min_nodes, max_size=pool.max_nodes, desired_size=pool.desired_nodes),
                labels=dict(pool.labels),
                taints=[aws.eks.NodeGroupTaintArgs(key=t.key, value=t.value, effect=EFFECT[t.effect])
                        for t in pool.taints],
                launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                    id=template.id, version=template.latest_version.apply(str)),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*before_nodes, *node_attachments],
                                            ignore_changes=AUTOSCALED),
            )
        self.addons = before_nodes + [
            self._addon(key, region, addon, depends_on=list(self.node_groups.values()))
            for addon in region.addons if addon.after_nodes
        ]

        self.name = self.cluster.name
        self.endpoint = self.cluster.endpoint
        self.ca_data = self.cluster.certificate_authority.apply(lambda ca: ca.data)
        self.register_outputs({
            "clusterName": self.cluster.name,
            "endpoint": self.cluster.endpoint,
            "oidcProviderArn": self.oidc_provider.arn,
            "nodeGroups": {name: group.node_group_name for name, group in self.node_groups.items()},
        })

    def _admin_access(self, key: str, region: RegionPlan) -> list[pulumi.Resource]:
        """Cluster-admin access entries: the stack's admin roles, and whoever runs `pulumi up` (the Kubernetes
        provider acts as them). An assumed-role session maps to its role's ARN, which is what EKS accepts."""
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        deployer = aws.iam.get_session_context_output(arn=caller.arn, opts=pulumi.InvokeOutputOptions(parent=self))
        principals: list[tuple[str, pulumi.Input[str]]] = [("deployer", deployer.issuer_arn)]
        principals += [(f"admin-{i}", arn) for i, arn in enumerate(region.admin_role_arns)]
        granted: list[pulumi.Resource] = []
        for name, principal in principals:
            entry = aws.eks.AccessEntry(f"{key}-{name}", cluster_name=self.cluster.name, principal_arn=principal,
                                        type="STANDARD", opts=pulumi.ResourceOptions(parent=self))
            granted.append(aws.eks.AccessPolicyAssociation(
                f"{key}-{name}",
                cluster_name=self.cluster.name,
                principal_arn=entry.principal_arn,
                policy_arn=access.EKS_ADMIN_ACCESS_POLICY,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions(parent=self),
            ))
        return granted

    def _addon(self, key: str, region: RegionPlan, addon: AddonPlan, depends_on: list[pulumi.Resource],
               service_account_role_arn: pulumi.Input[str] | None = None) -> aws.eks.Addon:
        # The version EKS names as the default for the cluster's minor (most_recent=False): qualified by AWS for
        # that minor, and it moves with kubernetes_version, as the node groups do. Pinning versions here would
        # need a bump per minor that nothing could check offline.
        version = aws.eks.get_addon_version_output(
            addon_name=addon.name, kubernetes_version=region.kubernetes_version, most_recent=False,
            opts=pulumi.InvokeOutputOptions(parent=self))
        return aws.eks.Addon(
            f"{key}-{addon.name}",
            cluster_name=self.cluster.name,
            addon_name=addon.name,
            addon_version=version.version,
            configuration_values=json.dumps(dict(addon.configuration), sort_keys=True) if addon.configuration
            else None,
            service_account_role_arn=service_account_role_arn,
            # EKS installs self-managed copies at creation; the managed add-ons take them over.
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )

    def _launch_template(self, key: str, pool: PoolPlan, region: RegionPlan,
                         tags: dict[str, str]) -> aws.ec2.LaunchTemplate:
        # Default tags reach the template, not what it launches: instances, volumes and ENIs get them here.
        launched_tags = {**tags, "Name": f"{region.cluster_name}-{pool.name}"}
        return aws.ec2.LaunchTemplate(
            f"{key}-{pool.name}",
            description=f"{region.cluster_name} {pool.name} nodes",
            update_default_version=True,
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=ROOT_DEVICE,
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    # Sized in the plan for the Triton image and the model repository cache.
                    volume_size=pool.disk_gib, volume_type="gp3", encrypted="true", delete_on_termination="true"),
            )],
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=region.imds_hop_limit,
            ),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=launched_tags)
                for kind in ("instance", "volume", "network-interface")
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )


def irsa_role(name: str, cluster: EksCluster, namespace: str, service_account: str, opts: pulumi.ResourceOptions,
              name_prefix: str | None = None) -> aws.iam.Role:
    """A role only `namespace/service_account` of `cluster` can assume, through its OIDC provider."""
    trust = pulumi.Output.all(cluster.oidc_provider.arn, cluster.oidc_issuer).apply(
        lambda a: json.dumps(access.irsa_trust_policy(a[0], a[1], namespace, service_account), sort_keys=True))
    return aws.iam.Role(name, name_prefix=name_prefix, assume_role_policy=trust, opts=opts)
