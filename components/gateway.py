"""The AI gateway on one region's cluster: Envoy Gateway, its Redis, its secrets, and the objects of
`modelfleet.gateway.manifests`, declared as typed resources. Nothing is decided here.

Per region:
- cloud: a registry for the inspection service image (ECR / Artifact Registry; the release step pushes to it and
  the stack names the digest), managed Redis with TLS and an AUTH token (ElastiCache / Memorystore; why managed:
  `manifests.RedisPlan`), the gateway's secrets in the secret manager (TLS certificate, API keys per scope, the
  Redis token), and an identity that may read exactly those secrets (IRSA role / Google service account);
- cluster: the Envoy Gateway and External Secrets charts (pinned, modelfleet/versions.py), then every gateway
  object, each through the cluster's Kubernetes provider.

Why the certificate comes from the secret manager, not ACM or a Google-managed certificate: Envoy Gateway
terminates TLS in its Envoy pods (that is where SNI, ALPN for gRPC, JWT and API keys are seen), behind a TCP
passthrough network load balancer. ACM certificates cannot be exported to a pod (only to ACM-integrated load
balancers), and Google-managed certificates live only on Google's L7 load balancers; either would move TLS to the
load balancer and leave the LB-to-Envoy hop in plain text. The certificate (PEM chain + key, from the
organisation's CA or a public one) is a secret-manager secret synced into the listener's Secret; renewal is a new
secret version, picked up within the ExternalSecret's refresh interval without a restart.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.cluster_aws import EksCluster, irsa_role
from components.helm import pinned_release
from modelfleet import serving, versions
from modelfleet.gateway import manifests
from modelfleet.plan import LABEL_PREFIX, FleetPlan, RegionPlan, gcp_account_id
from modelfleet.routing import peering

REGISTRY_REPOSITORY = "modelfleet"  # ECR: modelfleet/gateway-inspector; Artifact Registry: .../modelfleet/gateway-inspector
REDIS_TOKEN_CHARS = 64  # ElastiCache AUTH tokens: 16-128 printable characters
SECRET_READ_ACTIONS = ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")
GCP_SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"
GCP_REGISTRY_READER = "roles/artifactregistry.reader"

# Typed classes for the built-in kinds the gateway declares; everything else is a custom resource.
_BUILT_IN = {
    "ServiceAccount": k8s.core.v1.ServiceAccount,
    "ConfigMap": k8s.core.v1.ConfigMap,
    "Service": k8s.core.v1.Service,
    "Deployment": k8s.apps.v1.Deployment,
    "PodDisruptionBudget": k8s.policy.v1.PodDisruptionBudget,
    "NetworkPolicy": k8s.networking.v1.NetworkPolicy,
}


def declare(name: str, obj: dict, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """One manifest as its typed resource: the dict's fields, as built, become the resource's inputs."""
    fields = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    kind = obj["kind"]
    if kind in _BUILT_IN:
        return _BUILT_IN[kind](name, **{_snake(k): v for k, v in fields.items()}, opts=opts)
    return k8s.apiextensions.CustomResource(name, api_version=obj["apiVersion"], kind=kind, **fields, opts=opts)


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


class GatewayCloud(pulumi.ComponentResource):
    """What the gateway needs from the region's cloud; the subclasses are the two clouds."""

    inspector_repository: pulumi.Output[str]
    redis_host: pulumi.Output[str]
    redis_cidr: Any
    redis_ca_pem: Any = None
    secrets_annotations: pulumi.Output[dict]


class AwsGatewayCloud(GatewayCloud):
    def __init__(self, fleet: FleetPlan, region: RegionPlan, cluster: EksCluster, network: Any,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:aws:GatewayCloud", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key, redis = region.key, manifests.redis_plan(fleet, region)

        repository = aws.ecr.Repository(
            f"{key}-gateway-inspector",
            name=f"{REGISTRY_REPOSITORY}/{manifests.INSPECTOR}",
            image_tag_mutability="IMMUTABLE",  # a digest the stack names can never be re-pointed
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")],
            opts=child,
        )
        self.inspector_repository = repository.repository_url

        secrets = {what: aws.secretsmanager.Secret(f"{key}-gateway-{what}", name=secret, opts=child)
                   for what, secret in _secret_ids(fleet, region).items()}
        token = random.RandomPassword(f"{key}-gateway-redis-token", length=REDIS_TOKEN_CHARS, special=False,
                                      opts=child)
        aws.secretsmanager.SecretVersion(
            f"{key}-gateway-redis-auth",
            secret_id=secrets["redis-auth"].id,
            secret_string=pulumi.Output.secret(token.result.apply(lambda t: json.dumps({"token": t}))),
            opts=child,
        )

        subnets = aws.elasticache.SubnetGroup(
            f"{key}-gateway-redis", description=f"Rate limit Redis of {region.cluster_name}",
            subnet_ids=network.private_subnet_ids, opts=child)
        firewall = aws.ec2.SecurityGroup(
            f"{key}-gateway-redis",
            description=f"Rate limit Redis of {region.cluster_name}: Redis port from the region's network only",
            vpc_id=network.vpc.id,
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=redis.port, to_port=redis.port,
                                                      cidr_blocks=[region.cidr])],
            opts=child,
        )
        self.redis = aws.elasticache.ReplicationGroup(
            f"{key}-gateway-redis",
            # Named, not auto-named: replication group ids are at most 40 characters.
            replication_group_id=f"modelfleet-{fleet.environment}-gateway",
            description=f"Envoy Gateway global rate limit counters, {region.cluster_name}",
            engine="redis",
            engine_version=redis.engine_version,
            node_type=redis.node_type,
            num_cache_clusters=redis.nodes,
            automatic_failover_enabled=redis.nodes > 1,
            multi_az_enabled=redis.nodes > 1,
            port=redis.port,
            subnet_group_name=subnets.name,
            security_group_ids=[firewall.id],
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            auth_token=token.result,  # a Pulumi secret: encrypted in the state, never in config
            opts=child,
        )
        self.redis_host = self.redis.primary_endpoint_address
        self.redis_cidr = region.cidr  # ElastiCache's endpoint moves between the private subnets on failover

        namespace = serving.namespace_name(fleet)
        role = irsa_role(f"{key}-gateway-secrets", cluster, namespace, manifests.SECRETS_SERVICE_ACCOUNT, opts=child)
        arns = pulumi.Output.all(*[s.arn for s in secrets.values()])
        aws.iam.RolePolicy(
            f"{key}-gateway-secrets",
            role=role.id,
            policy=arns.apply(lambda a: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": list(SECRET_READ_ACTIONS), "Resource": sorted(a)}]}, sort_keys=True)),
            opts=child,
        )
        self.secrets_annotations = role.arn.apply(lambda arn: {"eks.amazonaws.com/role-arn": arn})
        self.register_outputs({"repository": self.inspector_repository, "redis": self.redis_host})


class GcpGatewayCloud(GatewayCloud):
    def __init__(self, fleet: FleetPlan, region: RegionPlan, network: Any, node_account: gcp.serviceaccount.Account,
                 depends_on: Sequence[pulumi.Resource], opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:gcp:GatewayCloud", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key, redis = region.key, manifests.redis_plan(fleet, region)
        project = fleet.gcp_project

        registry = gcp.artifactregistry.Repository(
            f"{key}-gateway-registry",
            repository_id=REGISTRY_REPOSITORY,
            location=region.region,
            format="DOCKER",
            docker_config=gcp.artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
            opts=child,
        )
        gcp.artifactregistry.RepositoryIamMember(
            f"{key}-gateway-registry-nodes",
            repository=registry.name,
            location=region.region,
            role=GCP_REGISTRY_READER,
            member=node_account.email.apply(lambda email: f"serviceAccount:{email}"),
            opts=child,
        )
        self.inspector_repository = registry.repository_id.apply(
            lambda repo: f"{region.region}-docker.pkg.dev/{project}/{repo}/{manifests.INSPECTOR}")

        self.redis = gcp.redis.Instance(
            f"{key}-gateway-redis",
            name=f"modelfleet-{fleet.environment}-gateway",
            display_name=f"Envoy Gateway rate limit counters, {region.cluster_name}",
            tier=redis.tier,
            memory_size_gb=redis.memory_gib,
            region=region.region,
            redis_version=redis.engine_version,
            authorized_network=network.network.id,
            auth_enabled=True,
            transit_encryption_mode="SERVER_AUTHENTICATION",
            opts=child,
        )
        self.redis_host = self.redis.host
        self.redis_cidr = self.redis.host.apply(lambda host: f"{host}/32")
        self.redis_ca_pem = self.redis.server_ca_certs.apply(lambda certs: certs[0].cert if certs else "")

        secrets = {what: gcp.secretmanager.Secret(
            f"{key}-gateway-{what}",
            secret_id=secret,
            replication=gcp.secretmanager.SecretReplicationArgs(
                user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(
                    replicas=[gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(location=region.region)])),
            opts=child) for what, secret in _secret_ids(fleet, region).items()}
        gcp.secretmanager.SecretVersion(
            f"{key}-gateway-redis-auth",
            secret=secrets["redis-auth"].id,
            # Memorystore generates the AUTH string; it reaches the secret manager as a Pulumi secret.
            secret_data=pulumi.Output.secret(self.redis.auth_string.apply(lambda t: json.dumps({"token": t}))),
            opts=child,
        )

        identity = region.identity
        account = gcp.serviceaccount.Account(
            f"{key}-gateway-secrets",
            # No longer than Triton's `<env>-triton-<region>`, which the plan checks fits GCP's 30 characters.
            account_id=gcp_account_id(fleet.environment, "gwsec", region.region),
            display_name=f"External Secrets for the gateway in {region.cluster_name} (its secrets, read-only)",
            opts=child,
        )
        namespace = serving.namespace_name(fleet)
        gcp.serviceaccount.IAMMember(
            f"{key}-gateway-secrets-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{identity.workload_pool}[{namespace}/{manifests.SECRETS_SERVICE_ACCOUNT}]",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )
        for what, secret in secrets.items():
            gcp.secretmanager.SecretIamMember(
                f"{key}-gateway-{what}-read",
                secret_id=secret.id,
                role=GCP_SECRET_ACCESSOR,
                member=account.email.apply(lambda email: f"serviceAccount:{email}"),
                opts=child,
            )
        self.secrets_annotations = account.email.apply(lambda email: {"iam.gke.io/gcp-service-account": email})
        self.register_outputs({"repository": self.inspector_repository, "redis": self.redis_host})


def _secret_ids(fleet: FleetPlan, region: RegionPlan) -> dict[str, str]:
    """The gateway's secrets in the region's secret manager, by what they hold."""
    assert fleet.gateway is not None
    ids = {"tls": manifests.secret_id(fleet, region, "tls"),
           "redis-auth": manifests.secret_id(fleet, region, "redis-auth")}
    for scope in manifests.scopes(fleet.gateway):
        ids[f"api-keys-{manifests.scope_slug(scope)}"] = manifests.api_keys_secret_id(fleet, region, scope)
    return ids | peering.secret_ids(fleet, region)


class Gateway(pulumi.ComponentResource):
    """Envoy in front of Triton on one cluster, configured from the gateway plan."""

    def __init__(self, fleet: FleetPlan, region: RegionPlan, kubernetes: pulumi.ProviderResource,
                 cloud: GatewayCloud, needs: Sequence[pulumi.Resource], opts: pulumi.ResourceOptions | None = None,
                 backends: Mapping[str, Sequence[pulumi.Resource]] | None = None):
        """`needs`: what must exist first — the cluster's nodes, and Triton's namespace (the Gateway, routes and
        policies live beside the Services they route to). `backends`: per model's Kubernetes name, its Triton
        services; a model's routes wait for them, so a new canary's weight reaches the route only once its pods
        are ready (Pulumi awaits the Deployment), never a share of requests sent to a Service without endpoints."""
        super().__init__("modelfleet:gateway:Gateway", f"{region.key}-gateway", None,
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(providers={"kubernetes": kubernetes})))
        assert fleet.gateway is not None and fleet.gateway_image_digest, "the spec requires a digest in the cloud"
        redis = manifests.redis_plan(fleet, region)
        plan = manifests.CloudGateway(
            plan=fleet.gateway,
            inspector_image=cloud.inspector_repository.apply(lambda repo: f"{repo}@{fleet.gateway_image_digest}"),
            redis_host=cloud.redis_host,
            redis_port=redis.port,
            redis_cidr=cloud.redis_cidr,
            redis_ca_config_map=manifests.REDIS_CA_CONFIG_MAP if region.cloud == "gcp" else None,
            redis_ca_pem=cloud.redis_ca_pem,
        )
        charts = pulumi.ResourceOptions(parent=self, depends_on=list(needs))
        self.external_secrets = pinned_release(f"{region.key}-external-secrets", versions.EXTERNAL_SECRETS, {
            "installCRDs": True,
            "nodeSelector": {serving.POOL_LABEL: "system"},
        }, charts)
        self.envoy_gateway = pinned_release(f"{region.key}-envoy-gateway", versions.ENVOY_GATEWAY,
                                            peering.with_backend_api(fleet, manifests.envoy_gateway_values(plan)),
                                            charts)
        # The objects need the CRDs both charts install, and Triton's namespace.
        after = pulumi.ResourceOptions(parent=self, depends_on=[*needs, self.external_secrets, self.envoy_gateway])
        def options(obj: dict) -> pulumi.ResourceOptions:
            if obj["kind"] not in ("HTTPRoute", "GRPCRoute"):
                return after
            waits = (backends or {}).get(obj["metadata"].get("labels", {}).get(f"{LABEL_PREFIX}/model", ""), [])
            return pulumi.ResourceOptions.merge(after, pulumi.ResourceOptions(depends_on=list(waits)))

        self.objects = [
            declare(f"{region.key}-gateway-{obj['kind'].lower()}-{obj['metadata']['name']}", obj, options(obj))
            for obj in manifests.region_objects(fleet, region, plan, cloud.secrets_annotations)
        ]
        self.register_outputs({"hostname": fleet.gateway.hostname, "objects": len(self.objects)})
