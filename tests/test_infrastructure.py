"""The infrastructure as declared: every recorded resource of `dev` and `prod`, checked against the spec.

Each stack is evaluated once per session (the `evaluated` fixture) by the real program under the SDK's mocks.
Assertions run over all resources of a kind, never a sample, and compare with the plan the spec produces.
"""

from __future__ import annotations

import inspect
import ipaddress
import json
import re
from functools import cache
from pathlib import Path

import pytest

from modelfleet import versions
from modelfleet.loader import load_fleet
from modelfleet.offline import Recorded, evaluate
from modelfleet.plan import GPU_TAINT_KEY, FleetPlan, RegionPlan, build_plan

PROJECT = Path(__file__).resolve().parent.parent
STACKS = ["dev", "prod"]

REGION = "modelfleet:fleet:Region"
SUBNET = "aws:ec2/subnet:Subnet"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
NAT = "aws:ec2/natGateway:NatGateway"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EKS = "aws:eks/cluster:Cluster"
KMS_KEY = "aws:kms/key:Key"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
GKE = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"
GSA = "gcp:serviceaccount/account:Account"
BUCKET_MEMBER = "gcp:storage/bucketIAMMember:BucketIAMMember"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
SA_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
K8S_PROVIDER = "pulumi:providers:kubernetes"
EFFECTS = {"NoSchedule": "NO_SCHEDULE", "NoExecute": "NO_EXECUTE", "PreferNoSchedule": "PREFER_NO_SCHEDULE"}


# ---------------------------------------------------------------------------------------------- helpers

@cache
def plan_of(stack: str) -> FleetPlan:
    return build_plan(load_fleet(PROJECT, stack))


class Stack:
    """One evaluated stack: its resources, indexed, and the plan it was built from."""

    def __init__(self, resources: list[Recorded], plan: FleetPlan):
        self.resources = resources
        self.plan = plan
        self.by_urn = {r.urn: r for r in resources}
        self.providers = {r.name: r for r in resources if r.is_provider}

    def of(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def region_of(self, resource: Recorded) -> RegionPlan:
        node: Recorded | None = resource
        while node is not None and node.type != REGION:
            node = self.by_urn.get(node.parent) if node.parent else None
        assert node is not None, f"{resource.urn} is outside every Region component"
        return next(r for r in self.plan.regions if r.key == node.name)

    def pool_of(self, resource: Recorded) -> object:
        region = self.region_of(resource)
        return next(p for p in region.pools if resource.name == f"{region.key}-{p.name}")


@pytest.fixture(params=STACKS)
def stack(request, evaluated) -> Stack:
    return Stack(evaluated(request.param).resources, plan_of(request.param))


def _json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else value


def _sdk_class(resource_type: str):
    """The Python SDK class of a resource type token, e.g. `aws:ec2/vpc:Vpc` -> `pulumi_aws.ec2.Vpc`."""
    import importlib

    package, module_path, name = resource_type.split(":")
    module = module_path.split("/")[0]
    sdk = importlib.import_module(f"pulumi_{package}" + ("" if module == "index" else f".{module}"))
    return getattr(sdk, name)


def _init_params(resource_type: str) -> set[str]:
    cls = _sdk_class(resource_type)
    return set(inspect.signature(cls._internal_init).parameters)


# ------------------------------------------------------------------------------------- no public address

def test_no_subnet_hands_out_public_addresses(stack):
    subnets = stack.of(SUBNET)
    assert len(subnets) == sum(2 * len(r.zones) for r in stack.plan.regions if r.cloud == "aws")
    assert all(s.inputs.get("mapPublicIpOnLaunch") is False for s in subnets), \
        [s.name for s in subnets if s.inputs.get("mapPublicIpOnLaunch") is not False]


def _aws(stack: Stack) -> list[RegionPlan]:
    return [r for r in stack.plan.regions if r.cloud == "aws"]


def _gcp(stack: Stack) -> list[RegionPlan]:
    return [r for r in stack.plan.regions if r.cloud == "gcp"]


def test_nodes_live_only_in_private_subnets_without_public_ips(stack):
    subnets = {s.id: s for s in stack.of(SUBNET)}
    private = {i for i, s in subnets.items() if "kubernetes.io/role/internal-elb" in s.inputs.get("tags", {})}
    public = set(subnets) - private
    assert len(private) == len(public) == sum(len(r.zones) for r in _aws(stack))
    groups = stack.of(NODE_GROUP)
    assert len(groups) == sum(len(r.pools) for r in _aws(stack))
    for group in groups:
        assert set(group.inputs["subnetIds"]) <= private and not set(group.inputs["subnetIds"]) & public, group.name
        # Without a network interface in the launch template, the subnet decides about public addresses.
        assert all(subnets[i].inputs["mapPublicIpOnLaunch"] is False for i in group.inputs["subnetIds"])
    templates = stack.of(LAUNCH_TEMPLATE)
    assert len(templates) == len(groups), "one launch template per pool"
    assert {g.inputs["launchTemplate"]["id"] for g in groups} == {t.id for t in templates}
    for template in templates:
        # No network interface block: nothing can set associatePublicIpAddress; the subnet's false applies.
        assert "networkInterfaces" not in template.inputs, template.name
    # Private route tables reach the internet only through NAT, never an internet gateway.
    private_routes = [t for t in stack.of(ROUTE_TABLE) if "-private-" in t.name]
    assert len(private_routes) == sum(len(r.zones) for r in _aws(stack))
    for table in private_routes:
        assert all("gatewayId" not in route and route.get("natGatewayId") for route in table.inputs["routes"])


def test_gke_nodes_are_private(stack):
    clusters = stack.of(GKE)
    assert len(clusters) == sum(r.cloud == "gcp" for r in stack.plan.regions)
    for cluster in clusters:
        assert cluster.inputs["privateClusterConfig"]["enablePrivateNodes"] is True
    pools = stack.of(NODE_POOL)
    assert len(pools) == sum(len(r.pools) for r in _gcp(stack))
    for pool in pools:
        assert pool.inputs.get("networkConfig", {}).get("enablePrivateNodes") in (None, True)


# ------------------------------------------------------------------------------------------ GPU node pools

def _gpu_pools(stack: Stack) -> list[tuple[Recorded, object]]:
    return [(r, stack.pool_of(r)) for r in stack.of(NODE_GROUP) + stack.of(NODE_POOL)]


def test_every_planned_pool_exists_with_its_bounds(stack):
    recorded = {(stack.region_of(r).key, pool.name) for r, pool in _gpu_pools(stack)}
    planned = {(region.key, pool.name) for region in stack.plan.regions for pool in region.pools}
    assert recorded == planned
    for resource, pool in _gpu_pools(stack):
        if resource.type == NODE_GROUP:
            scaling = resource.inputs["scalingConfig"]
            assert (scaling["minSize"], scaling["desiredSize"], scaling["maxSize"]) == \
                (pool.min_nodes, pool.desired_nodes, pool.max_nodes), resource.name
            assert resource.inputs["capacityType"] == {"on-demand": "ON_DEMAND", "spot": "SPOT"}[pool.capacity]
            assert resource.inputs["instanceTypes"] == [pool.instance_type]
        else:
            scaling = resource.inputs["autoscaling"]
            assert (scaling["totalMinNodeCount"], scaling["totalMaxNodeCount"]) == (pool.min_nodes, pool.max_nodes)
            assert resource.inputs["nodeConfig"].get("spot", False) is (pool.capacity == "spot")
            assert resource.inputs["nodeConfig"]["machineType"] == pool.instance_type


def test_every_gpu_pool_is_tainted_and_labelled(stack):
    gpu = [(r, p) for r, p in _gpu_pools(stack) if p.is_gpu]
    assert gpu, "the example stacks declare GPU pools"
    for resource, pool in gpu:
        taints = resource.inputs["taints"] if resource.type == NODE_GROUP else resource.inputs["nodeConfig"]["taints"]
        labels = resource.inputs["labels"] if resource.type == NODE_GROUP else resource.inputs["nodeConfig"]["labels"]
        # On GKE the value matches the taint GKE itself puts on GPU nodes, so the node keeps one per key and effect.
        value = "true" if resource.type == NODE_GROUP else "present"
        assert {"key": GPU_TAINT_KEY, "value": value, "effect": "NO_SCHEDULE"} in taints, resource.name
        assert labels["modelfleet.io/hardware-class"] == pool.hardware_class
        assert labels["modelfleet.io/pool"] == pool.name
        assert labels["nvidia.com/gpu.present"] == "true"
        if resource.type == NODE_GROUP:
            assert resource.inputs["amiType"] in ("AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA")
        else:
            (accelerator,) = resource.inputs["nodeConfig"]["guestAccelerators"]
            assert (accelerator["type"], accelerator["count"]) == (pool.accelerator, pool.gpus_per_node)
            assert accelerator["gpuDriverInstallationConfig"]["gpuDriverVersion"] in ("DEFAULT", "LATEST")
    # ...and nothing but GPU pools carries the GPU taint, so system pods never wait for a GPU node.
    for resource, pool in _gpu_pools(stack):
        if not pool.is_gpu:
            taints = resource.inputs["taints"] if resource.type == NODE_GROUP else resource.inputs["nodeConfig"]["taints"]
            assert not taints, resource.name


def _expected_disk_gib(region: RegionPlan, pool_name: str) -> int:
    """The node disk sizing rule, restated independently of the plan's code: at least 100 GiB; above that, 40 GiB
    for the Triton image (about 20 GiB unpacked, again as compressed layers in containerd's content store) and
    20 GiB of model repository cache per model placed on the pool."""
    models = sum(1 for p in region.placements if p.pool == pool_name)
    return max(100, 40 + 20 * models)


def test_launch_templates_require_imdsv2_and_size_the_root_volume(stack):
    templates = {t.id: t for t in stack.of(LAUNCH_TEMPLATE)}
    groups = stack.of(NODE_GROUP)
    assert len(groups) == len(templates) == sum(len(r.pools) for r in _aws(stack))
    for group in groups:
        pool, region = stack.pool_of(group), stack.region_of(group)
        template = templates[group.inputs["launchTemplate"]["id"]]
        metadata = template.inputs["metadataOptions"]
        assert metadata["httpTokens"] == "required"
        assert metadata["httpPutResponseHopLimit"] == region.imds_hop_limit == 1
        (root,) = template.inputs["blockDeviceMappings"]
        assert root["ebs"]["volumeSize"] == pool.disk_gib == _expected_disk_gib(region, pool.name) >= 100
        assert root["ebs"]["encrypted"] == "true"


def test_gke_node_disks_are_sized_like_eks_root_volumes(stack):
    pools = stack.of(NODE_POOL)
    assert len(pools) == sum(len(r.pools) for r in _gcp(stack))
    for resource in pools:
        pool, region = stack.pool_of(resource), stack.region_of(resource)
        assert resource.inputs["nodeConfig"]["diskSizeGb"] == _expected_disk_gib(region, pool.name) >= 100
        assert resource.inputs["nodeConfig"]["diskType"] == "pd-balanced"


def test_a_pool_shared_by_many_models_gets_a_larger_disk_on_both_clouds(project_copy):
    """The example pools all sit at the 100 GiB floor; four models on one pool need more, on EKS and GKE alike."""
    source = (project_copy / "models" / "fraud-detector.yaml").read_text()
    names = ["fraud-detector"] + [f"fraud-{suffix}" for suffix in ("a", "b", "c")]
    for name in names[1:]:
        # Each its own repository folder, all from the example's built artefacts (which the release uploads).
        (project_copy / "models" / f"{name}.yaml").write_text(source.replace("fraud-detector", name).replace(
            f"local: build/model-artifacts/{name}", "local: build/model-artifacts/fraud-detector"))
    stack_file = project_copy / "stacks" / "Pulumi.staging.yaml"
    stack_file.write_text(stack_file.read_text().replace("modelfleet:models: [fraud-detector, sentiment]",
                                                         f"modelfleet:models: [{', '.join(names)}, sentiment]"))
    stack = Stack(evaluate(project_copy, "staging").resources, build_plan(load_fleet(project_copy, "staging")))
    shared = 0
    for region in stack.plan.regions:
        pool = next(p for p in region.pools if {pl.model for pl in region.placements if pl.pool == p.name} >= set(names))
        expected = _expected_disk_gib(region, pool.name)
        assert expected == 40 + 20 * len(names) > 100
        if region.cloud == "aws":
            group = next(g for g in stack.of(NODE_GROUP) if g.name == f"{region.key}-{pool.name}")
            template = next(t for t in stack.of(LAUNCH_TEMPLATE) if t.id == group.inputs["launchTemplate"]["id"])
            assert template.inputs["blockDeviceMappings"][0]["ebs"]["volumeSize"] == expected
        else:
            resource = next(r for r in stack.of(NODE_POOL) if r.name == f"{region.key}-{pool.name}")
            assert resource.inputs["nodeConfig"]["diskSizeGb"] == expected
        shared += 1
    assert shared == 2, "staging has one AWS and one GCP region"


def test_prod_clusters_are_deletion_protected_and_keep_a_year_of_logs(stack):
    prod = stack.plan.environment == "prod"
    expected_protection, expected_retention = {"prod": (True, 365), "dev": (False, 30)}[stack.plan.environment]
    clusters = stack.of(EKS) + stack.of(GKE)
    assert len(clusters) == len(stack.plan.regions)
    for cluster in clusters:
        assert cluster.inputs["deletionProtection"] is expected_protection is prod, cluster.name
    # Per AWS region: the control plane's log group and the flow logs' one.
    groups = stack.of("aws:cloudwatch/logGroup:LogGroup")
    assert len(groups) == 2 * len(_aws(stack)) > 0
    for group in groups:
        assert group.inputs["retentionInDays"] == expected_retention, group.name


# -------------------------------------------------------------------------------------- cluster endpoints

WORLD = {"0.0.0.0/0", "::/0"}
# Real public ranges (not documentation, private or reserved), as a CI runner's egress would be.
DEPLOYERS = ("34.120.10.0/28", "52.94.8.7/32")
EXAMPLE_ENDPOINT = "    public_access_cidrs: []\n    placeholder: true\n"


def _check_endpoints(stack: Stack) -> None:
    eks = stack.of(EKS)
    assert len(eks) == len(_aws(stack))
    for cluster in eks:
        region = stack.region_of(cluster)
        vpc = cluster.inputs["vpcConfig"]
        assert vpc["endpointPrivateAccess"] is True
        assert vpc["endpointPublicAccess"] is (not region.endpoint_private_only)
        assert vpc.get("publicAccessCidrs", []) == list(region.endpoint_public_cidrs)
        # Public access without a list would be AWS's default, 0.0.0.0/0.
        assert not vpc["endpointPublicAccess"] or vpc["publicAccessCidrs"]
        assert not WORLD & set(vpc.get("publicAccessCidrs", []))
    gke = stack.of(GKE)
    assert len(gke) == len(_gcp(stack))
    for cluster in gke:
        region = stack.region_of(cluster)
        private = cluster.inputs["privateClusterConfig"]
        assert private["enablePrivateEndpoint"] is region.endpoint_private_only
        # A deployer in another region of the network reaches the private endpoint too.
        assert private["masterGlobalAccessConfig"]["enabled"] is True
        authorized = cluster.inputs["masterAuthorizedNetworksConfig"]
        allowed = [b["cidrBlock"] for b in authorized["cidrBlocks"]]
        assert allowed == [cidr for cidr, _ in region.master_authorized_cidrs] == [region.cidr,
                                                                                  *region.endpoint_public_cidrs]
        assert authorized["gcpPublicCidrsAccessEnabled"] is False
        assert not WORLD & set(allowed)


def test_the_example_stacks_keep_private_endpoints_until_the_deployer_access_is_decided(stack):
    """The examples carry no deployer CIDR (a documentation range would lock `pulumi up` out while looking set):
    private endpoints only, and a placeholder marker that `check` flags (tests/test_check.py)."""
    assert stack.plan.deployer_access_placeholder is True
    assert all(r.endpoint_private_only and not r.endpoint_public_cidrs for r in stack.plan.regions)
    _check_endpoints(stack)
    assert all("publicAccessCidrs" not in c.inputs["vpcConfig"] for c in stack.of(EKS))
    (access,) = stack.of("modelfleet:fleet:DeployerAccess")
    assert access.inputs == {"placeholder": True, "privateOnly": True, "publicAccessCidrs": []}


def test_listed_cidrs_and_only_those_reach_the_endpoint(project_copy):
    stack_file = project_copy / "stacks" / "Pulumi.prod.yaml"
    text = stack_file.read_text()
    assert EXAMPLE_ENDPOINT in text
    stack_file.write_text(text.replace(EXAMPLE_ENDPOINT, f"    public_access_cidrs: [{', '.join(DEPLOYERS)}]\n"))
    plan = build_plan(load_fleet(project_copy, "prod"))
    assert all(r.endpoint_public_cidrs == DEPLOYERS for r in plan.regions)
    resources = evaluate(project_copy, "prod").resources
    _check_endpoints(Stack(resources, plan))
    (access,) = [r for r in resources if r.type == "modelfleet:fleet:DeployerAccess"]
    assert access.inputs == {"placeholder": False, "privateOnly": False, "publicAccessCidrs": sorted(DEPLOYERS)}


# ------------------------------------------------------------------------------------- secrets encryption

def test_secrets_are_envelope_encrypted_with_a_rotating_key(stack):
    kms_keys = {k.outputs["arn"]: k for k in stack.of(KMS_KEY)}
    assert len(kms_keys) == len(stack.of(EKS)) == len(_aws(stack))
    for cluster in stack.of(EKS):
        (config,) = cluster.inputs["encryptionConfig"] if isinstance(cluster.inputs["encryptionConfig"], list) \
            else [cluster.inputs["encryptionConfig"]]
        assert config["resources"] == ["secrets"]
        key = kms_keys[config["provider"]["keyArn"]]
        assert key.inputs["enableKeyRotation"] is True
        assert key.inputs["rotationPeriodInDays"] == stack.region_of(cluster).kms_rotation_days == 90
        assert stack.region_of(key).key == stack.region_of(cluster).key
        assert cluster.inputs["enabledClusterLogTypes"] == ["api", "audit", "authenticator", "controllerManager",
                                                            "scheduler"]
    crypto_keys = {k.id: k for k in stack.of(CRYPTO_KEY)}
    assert len(crypto_keys) == len(stack.of(GKE)) == len(_gcp(stack))
    for cluster in stack.of(GKE):
        encryption = cluster.inputs["databaseEncryption"]
        assert encryption["state"] == "ENCRYPTED"
        region = stack.region_of(cluster)
        assert crypto_keys[encryption["keyName"]].inputs["rotationPeriod"] == region.kms_rotation_period \
            == f"{90 * 86_400}s"


def test_gcp_key_rings_survive_a_destroy_and_a_fresh_stack_gets_its_own(stack):
    """GCP never deletes key rings: destroy only forgets them, so names are auto-named (a fresh ring after a
    destroy and re-create) and the ring is retained on delete, as it would be anyway."""
    rings = stack.of("gcp:kms/keyRing:KeyRing")
    assert len(rings) == len(_gcp(stack))
    for ring in rings:
        assert "name" not in ring.inputs, "an explicit name would collide with the ring a destroy left behind"
        assert ring.retain_on_delete is True


# -------------------------------------------------------------------------------------- Triton's identity

def _model_sources(stack: Stack, region: RegionPlan) -> set[tuple[str, str]]:
    """(bucket, prefix) of each model in `region`, read from the specs: the region's own bucket on AWS."""
    out = set()
    for model in stack.plan.models:
        uri = model.source.uri(region.cloud, region.region)
        bucket, _, prefix = uri.split("://", 1)[1].partition("/")
        out.add((bucket, prefix.strip("/")))
    return out


def test_irsa_role_only_reads_the_model_prefixes(stack):
    aws_regions = [r for r in stack.plan.regions if r.cloud == "aws"]
    triton_roles = [r for r in stack.of(ROLE) if r.name.endswith("-triton")]
    assert len(triton_roles) == len(aws_regions)
    for role in triton_roles:
        region = stack.region_of(role)
        sources = _model_sources(stack, region)
        (statement,) = _json(role.inputs["assumeRolePolicy"])["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        conditions = statement["Condition"]["StringEquals"]
        subjects = {v for k, v in conditions.items() if k.endswith(":sub")}
        audiences = {v for k, v in conditions.items() if k.endswith(":aud")}
        assert subjects == {region.identity.subject} == {f"system:serviceaccount:modelfleet-{stack.plan.environment}:triton"}
        assert audiences == {"sts.amazonaws.com"}

        policies = [p for p in stack.of(ROLE_POLICY) if p.inputs["role"] == role.id]
        assert len(policies) == 1, "exactly one inline policy"
        assert not [a for a in stack.of(ROLE_ATTACHMENT) if a.inputs["role"] in (role.id, role.outputs["name"])]
        read, listed = set(), set()
        for st in _json(policies[0].inputs["policy"])["Statement"]:
            assert st["Effect"] == "Allow"
            assert set(st["Action"]) <= {"s3:GetObject", "s3:ListBucket"}, st
            for resource in st["Resource"]:
                assert "*" not in resource.split(":::")[1].split("/")[0], "no wildcard buckets"
            if st["Action"] == ["s3:GetObject"]:
                for resource in st["Resource"]:
                    bucket, _, path = resource.removeprefix("arn:aws:s3:::").partition("/")
                    assert path.endswith("/*") and "*" not in path[:-2]
                    read.add((bucket, path[:-2]))
            else:
                (resource,) = st["Resource"]
                # IfExists: Triton's HeadBucket carries no prefix (tests/test_triton_storage_access.py).
                prefixes = st["Condition"]["StringLikeIfExists"]["s3:prefix"]
                bucket = resource.removeprefix("arn:aws:s3:::")
                (prefix,) = {p.removesuffix("/*") for p in prefixes}
                listed.add((bucket, prefix))
        assert read == listed == sources


def test_workload_identity_only_reads_the_model_prefixes(stack):
    gcp_regions = [r for r in stack.plan.regions if r.cloud == "gcp"]
    accounts = [a for a in stack.of(GSA) if a.name.endswith("-triton")]
    assert len(accounts) == len(gcp_regions)
    for account in accounts:
        region = stack.region_of(account)
        sources = _model_sources(stack, region)
        member = f"serviceAccount:{account.outputs['email']}"
        # Only Triton's Kubernetes service account may act as it...
        (binding,) = [m for m in stack.of(SA_MEMBER) if m.inputs["serviceAccountId"] == account.outputs["name"]]
        assert binding.inputs["role"] == "roles/iam.workloadIdentityUser"
        assert binding.inputs["member"] == (f"serviceAccount:{stack.plan.gcp_project}.svc.id.goog"
                                            f"[modelfleet-{stack.plan.environment}/triton]")
        # ...it holds no project role...
        assert not [m for m in stack.of(PROJECT_MEMBER) if m.inputs["member"] == member]
        # ...it may read each model bucket's metadata (Triton's GCS client does first), through a role with just
        # that permission, held to the bucket...
        roles = {r.outputs["name"]: r for r in stack.of("gcp:projects/iAMCustomRole:IAMCustomRole")
                 if stack.region_of(r).key == region.key}
        assert len(roles) == 1
        (role,) = roles.values()
        assert role.inputs["permissions"] == ["storage.buckets.get"]
        assert re.fullmatch(r"[a-zA-Z0-9_.]{3,64}", role.inputs["roleId"])
        metadata = [m for m in stack.of(BUCKET_MEMBER) if m.inputs["member"] == member and m.inputs["role"] in roles]
        assert {(m.inputs["bucket"], m.inputs["condition"]["expression"]) for m in metadata} == {
            (bucket, f'resource.name == "projects/_/buckets/{bucket}"') for bucket, _ in sources}
        # ...and reads objects only under each model's prefix.
        grants = [m for m in stack.of(BUCKET_MEMBER) if m.inputs["member"] == member and m not in metadata]
        seen = set()
        for grant in grants:
            assert grant.inputs["role"] == "roles/storage.objectViewer"
            expression = grant.inputs["condition"]["expression"]
            match = re.fullmatch(r'resource\.name\.startsWith\("projects/_/buckets/([^/"]+)/objects/([^"]+)/"\)'
                                 r' \|\| (.+)', expression)
            assert match and match.group(1) == grant.inputs["bucket"], expression
            prefix = match.group(2)
            for clause in match.group(3).split(" || "):
                assert clause in (
                    f'api.getAttribute("storage.googleapis.com/objectListPrefix", "") == "{prefix}"',
                    f'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{prefix}/")',
                ), clause
            seen.add((grant.inputs["bucket"], prefix))
        assert seen == sources, region.key


def test_node_roles_are_least_privilege(stack):
    allowed = {"arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
               "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly"}
    node_roles = [r for r in stack.of(ROLE) if r.name.endswith("-nodes")]
    assert node_roles
    for role in node_roles:
        attached = {a.inputs["policyArn"] for a in stack.of(ROLE_ATTACHMENT)
                    if a.inputs["role"] == role.outputs["name"]}
        assert attached == allowed
        assert not [p for p in stack.of(ROLE_POLICY) if p.inputs["role"] == role.id]
    for account in [a for a in stack.of(GSA) if a.name.endswith("-nodes")]:
        member = f"serviceAccount:{account.outputs['email']}"
        roles = {m.inputs["role"] for m in stack.of(PROJECT_MEMBER) if m.inputs["member"] == member}
        assert roles and not roles & {"roles/editor", "roles/owner", "roles/storage.admin", "roles/iam.serviceAccountUser"}


# --------------------------------------------------------------------------------------------- NAT layout

def test_nat_layout_matches_the_environment(stack):
    expected = {"prod": 3, "dev": 1}[stack.plan.environment]
    for region in [r for r in stack.plan.regions if r.cloud == "aws"]:
        nats = [n for n in stack.of(NAT) if stack.region_of(n).key == region.key]
        assert len(nats) == region.nat_gateways == expected
        tables = [t for t in stack.of(ROUTE_TABLE) if stack.region_of(t).key == region.key and "-private-" in t.name]
        used = {route["natGatewayId"] for t in tables for route in t.inputs["routes"]}
        assert used == {n.id for n in nats}, "every NAT gateway serves a zone, every zone has one"
        nat_subnets = {n.inputs["subnetId"] for n in nats}
        public = {s.id for s in stack.of(SUBNET) if "kubernetes.io/role/elb" in s.inputs.get("tags", {})}
        assert nat_subnets <= public
    assert len(stack.of("gcp:compute/routerNat:RouterNat")) == sum(r.cloud == "gcp" for r in stack.plan.regions)


def test_model_and_image_pulls_have_private_endpoints(stack):
    endpoints = stack.of("aws:ec2/vpcEndpoint:VpcEndpoint")
    for region in [r for r in stack.plan.regions if r.cloud == "aws"]:
        mine = {e.inputs["serviceName"]: e for e in endpoints if stack.region_of(e).key == region.key}
        prefix = f"com.amazonaws.{region.region}."
        assert mine[prefix + "s3"].inputs["vpcEndpointType"] == "Gateway"
        for service in ("ecr.api", "ecr.dkr", "sts"):
            assert mine[prefix + service].inputs["vpcEndpointType"] == "Interface"
            assert mine[prefix + service].inputs["privateDnsEnabled"] is True
    assert len(stack.of("aws:ec2/flowLog:FlowLog")) == sum(r.cloud == "aws" for r in stack.plan.regions)


def test_region_networks_never_overlap(stack):
    ranges = [ipaddress.ip_network(v.inputs["cidrBlock"]) for v in stack.of("aws:ec2/vpc:Vpc")]
    ranges += [ipaddress.ip_network(s.inputs["ipCidrRange"]) for s in stack.of("gcp:compute/subnetwork:Subnetwork")]
    assert len(ranges) == len(stack.plan.regions)
    for i, a in enumerate(ranges):
        assert all(not a.overlaps(b) for b in ranges[i + 1:])


# ------------------------------------------------------------------------------------------- tags, labels

def test_required_tags_on_every_taggable_resource(stack):
    required = dict(stack.plan.tags)
    assert {"team", "cost-center", "environment"} <= required.keys()
    checked = 0
    for resource in stack.resources:
        if not resource.custom or resource.is_provider:
            continue
        cloud = resource.type.split(":")[0]
        if cloud not in ("aws", "gcp"):
            continue
        params = _init_params(resource.type)
        provider = stack.providers[resource.provider].inputs
        if cloud == "aws" and "tags" in params:
            defaults = _json(provider["defaultTags"])["tags"]
            effective = {**defaults, **resource.inputs.get("tags", {})}
            assert required.items() <= effective.items(), resource.urn
            checked += 1
        if cloud == "gcp" and "labels" in params:
            assert required.items() <= {**_json(provider["defaultLabels"]), **resource.inputs.get("labels", {})}.items()
            checked += 1
        if cloud == "gcp" and "resource_labels" in params:
            # Provider default labels do not reach GKE's resource_labels: they must be explicit.
            assert required.items() <= resource.inputs["resourceLabels"].items(), resource.urn
            checked += 1
    assert checked > 10
    # What the resources launch at run time does not inherit default tags: explicit everywhere.
    for template in stack.of(LAUNCH_TEMPLATE):
        kinds = {spec["resourceType"] for spec in template.inputs["tagSpecifications"]}
        assert kinds == {"instance", "volume", "network-interface"}
        for spec in template.inputs["tagSpecifications"]:
            assert required.items() <= spec["tags"].items(), template.name
    for pool in stack.of(NODE_POOL):
        assert required.items() <= pool.inputs["nodeConfig"]["resourceLabels"].items(), pool.name


# ---------------------------------------------------------------------------------- Kubernetes and Helm

def test_one_kubernetes_provider_per_cluster_with_exec_auth(stack):
    providers = stack.of(K8S_PROVIDER)
    assert len(providers) == len(stack.plan.regions)
    for provider in providers:
        config = json.loads(provider.inputs["kubeconfig"])
        (user,) = config["users"]
        assert set(user["user"]) == {"exec"}, "no token, password or client key in the state"
        command = user["user"]["exec"]["command"]
        region = stack.region_of(provider)
        assert command == {"aws": "aws", "gcp": "gke-gcloud-auth-plugin"}[region.cloud]
        (cluster,) = config["clusters"]
        assert cluster["cluster"]["server"].startswith("https://")
        assert cluster["name"] == region.cluster_name
    for release in stack.of(HELM_RELEASE):
        assert release.provider in {p.name for p in providers}, release.name


def test_helm_releases_pin_their_chart_versions(stack):
    releases = stack.of(HELM_RELEASE)
    pinned = {(c.chart, c.repository): c.version for c in versions.ALL_CHARTS}
    ours = [r for r in releases if (r.inputs["chart"], r.inputs.get("repositoryOpts", {}).get("repo")) in pinned]
    # EKS runs all three; GKE only the DCGM exporter (its own device plugin and node autoscaler).
    assert len(ours) == sum(len(versions.ALL_CHARTS) if r.cloud == "aws" else 1 for r in stack.plan.regions)
    assert {r.inputs["chart"] for r in ours if stack.region_of(r).cloud == "gcp"} <= {versions.DCGM_EXPORTER.chart}
    for release in ours:
        assert release.inputs["version"] == pinned[(release.inputs["chart"], release.inputs["repositoryOpts"]["repo"])]
    # Every release in the program, ours or another component's: an exact version from a named repository over
    # HTTPS, or an OCI chart by its full reference (Envoy Gateway publishes only there; its tags carry a `v`).
    for release in releases:
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", release.inputs.get("version", "")), release.name
        if release.inputs["chart"].startswith("oci://"):
            assert "repositoryOpts" not in release.inputs, release.name
        else:
            assert release.inputs["repositoryOpts"]["repo"].startswith("https://"), release.name


def test_gpu_software_tolerates_the_gpu_taint(stack):
    gpu_software = [r for r in stack.of(HELM_RELEASE) if r.inputs["chart"] in ("nvidia-device-plugin", "dcgm-exporter")]
    # EKS clusters install both charts; GKE brings its own driver and device plugin, and runs the DCGM exporter
    # chart for the cluster's Prometheus (its managed DCGM metrics reach only Cloud Monitoring).
    assert len(gpu_software) == len(_aws(stack)) + len(stack.plan.regions) > len(_aws(stack)) > 0
    for release in gpu_software:
        values = release.inputs["values"]
        assert {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
        assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_cluster_autoscaler_resizes_only_its_own_cluster(stack):
    autoscalers = [r for r in stack.of(HELM_RELEASE) if r.inputs["chart"] == "cluster-autoscaler"]
    assert len(autoscalers) == len(_aws(stack)) > 0, "one per EKS cluster (GKE brings its own)"
    for release in autoscalers:
        region = stack.region_of(release)
        assert release.inputs["values"]["autoDiscovery"]["clusterName"] == region.cluster_name
        role_arn = release.inputs["values"]["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
        (role,) = [r for r in stack.of(ROLE) if r.outputs["arn"] == role_arn]
        (policy,) = [p for p in stack.of(ROLE_POLICY) if p.inputs["role"] == role.id]
        for statement in _json(policy.inputs["policy"])["Statement"]:
            mutating = [a for a in statement["Action"] if not a.split(":")[1].startswith(("Describe", "Get"))]
            if mutating:
                condition = statement["Condition"]["StringEquals"]
                assert condition == {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{region.cluster_name}": "owned"}


@pytest.mark.parametrize("name", ["staging", "local"])
def test_other_stacks_evaluate(evaluated, name):
    stack = Stack(evaluated(name).resources, plan_of(name))
    assert len(stack.of(REGION)) == len(stack.plan.regions)
    assert len(stack.of(K8S_PROVIDER)) == len(stack.plan.regions)
    assert bool(stack.resources) is (name != "local"), "local runs on this machine: no cloud resources"


# ------------------------------------------------------------------------------- GKE cluster and network

FIREWALL = "gcp:compute/firewall:Firewall"
SUBNETWORK = "gcp:compute/subnetwork:Subnetwork"


def test_gcp_networks_deny_all_ingress_below_every_allow(stack):
    rules = stack.of(FIREWALL)
    denies = [r for r in rules if r.inputs.get("denies")]
    assert len(denies) == len(_gcp(stack))
    for rule in denies:
        assert rule.inputs["direction"] == "INGRESS"
        assert rule.inputs["priority"] == 65534
        assert rule.inputs["sourceRanges"] == ["0.0.0.0/0"]
        assert rule.inputs["denies"] == [{"protocol": "all"}]
    # Every allow ranks above the deny and never admits the world.
    for rule in [r for r in rules if r.inputs.get("allows")]:
        assert rule.inputs["priority"] < 65534 and not WORLD & set(rule.inputs["sourceRanges"]), rule.name


def test_gke_control_plane_reaches_the_webhooks_on_its_nodes(stack):
    """KEDA's metrics API server (6443) and admission webhooks (9443) run on the nodes; GKE's own rule opens
    only 443 and 10250 from the control plane."""
    allows = [r for r in stack.of(FIREWALL) if r.inputs.get("allows")]
    assert len(allows) == len(_gcp(stack))
    accounts = {a.name: a for a in stack.of(GSA)}
    for rule in allows:
        region = stack.region_of(rule)
        (planned,) = region.node_ingress
        assert rule.inputs["direction"] == "INGRESS"
        assert rule.inputs["priority"] == planned.priority == 1000
        assert rule.inputs["sourceRanges"] == [region.master_cidr]
        assert rule.inputs["allows"] == [{"protocol": "tcp", "ports": ["6443", "9443"]}]
        network = stack.of("gcp:compute/network:Network")
        assert rule.inputs["network"] in {n.id for n in network if stack.region_of(n).key == region.key}
        # Only the cluster's nodes, by their service account.
        assert rule.inputs["targetServiceAccounts"] == [accounts[f"{region.key}-nodes"].outputs["email"]]


def test_gcp_subnet_has_private_google_access_and_the_planned_secondary_ranges(stack):
    subnets = stack.of(SUBNETWORK)
    assert len(subnets) == len(_gcp(stack))
    clusters = {stack.region_of(c).key: c for c in stack.of(GKE)}
    for subnet in subnets:
        region = stack.region_of(subnet)
        assert subnet.inputs["privateIpGoogleAccess"] is True
        assert subnet.inputs["ipCidrRange"] == region.private_subnets[0]
        ranges = {r["rangeName"]: r["ipCidrRange"] for r in subnet.inputs["secondaryIpRanges"]}
        assert ranges == {"pods": region.pods_cidr, "services": region.services_cidr}
        policy = clusters[region.key].inputs["ipAllocationPolicy"]
        assert (policy["clusterSecondaryRangeName"], policy["servicesSecondaryRangeName"]) == ("pods", "services")
        assert clusters[region.key].inputs["subnetwork"] == subnet.id


def test_gke_cluster_hardening(stack):
    clusters = stack.of(GKE)
    assert len(clusters) == len(_gcp(stack))
    for cluster in clusters:
        region = stack.region_of(cluster)
        inputs = cluster.inputs
        assert inputs["workloadIdentityConfig"] == {"workloadPool": region.identity.workload_pool} \
            == {"workloadPool": f"{stack.plan.gcp_project}.svc.id.goog"}
        assert inputs["enableShieldedNodes"] is True
        assert inputs["releaseChannel"] == {"channel": region.release_channel} == {"channel": "REGULAR"}
        assert inputs["loggingConfig"]["enableComponents"] == list(region.control_plane_logs)
        assert {"SYSTEM_COMPONENTS", "APISERVER", "WORKLOADS"} <= set(inputs["loggingConfig"]["enableComponents"])
        assert "SYSTEM_COMPONENTS" in inputs["monitoringConfig"]["enableComponents"]
        assert inputs["monitoringConfig"]["managedPrometheus"] == {"enabled": True}
        assert inputs["datapathProvider"] == "ADVANCED_DATAPATH", "Dataplane V2 enforces NetworkPolicy"
    for pool in stack.of(NODE_POOL):
        config = pool.inputs["nodeConfig"]
        assert config["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
        assert config["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}


def test_gke_node_pools_are_not_replaced_when_traffic_changes(stack):
    """initial_node_count forces a replacement (a fixed-name pool, deleted first): it comes from the pool's
    minimum, not from traffic, and later changes to it are ignored; the autoscaler owns the count."""
    pools = stack.of(NODE_POOL)
    assert len(pools) == sum(len(r.pools) for r in _gcp(stack))
    for resource in pools:
        pool, region = stack.pool_of(resource), stack.region_of(resource)
        assert "initialNodeCount" in resource.ignore_changes
        assert resource.inputs["initialNodeCount"] == pool.initial_nodes_per_zone \
            == -(-pool.min_nodes // len(region.zones))
        assert resource.inputs["autoscaling"]["locationPolicy"] == pool.location_policy
    for group in stack.of(NODE_GROUP):
        assert "scalingConfig.desiredSize" in group.ignore_changes


def test_gke_pool_sizes_do_not_follow_traffic(project_copy):
    model = project_copy / "models" / "fraud-detector.yaml"
    before = build_plan(load_fleet(project_copy, "prod"))
    model.write_text(model.read_text().replace("rps: 400", "rps: 4000"))
    after = build_plan(load_fleet(project_copy, "prod"))
    initial = lambda plan: [(r.key, p.name, p.initial_nodes_per_zone) for r in plan.regions for p in r.pools]  # noqa: E731
    assert initial(before) == initial(after)
    assert not [w for w in before.warnings if "starts with" in w]
    # A pool that would start above its maximum (one node in each of three zones, at most two) is called out.
    model.write_text(model.read_text().replace("min_replicas: 2", "min_replicas: 1").replace("max_replicas: 12",
                                                                                              "max_replicas: 2"))
    small = build_plan(load_fleet(project_copy, "prod"))
    assert [w for w in small.warnings if "starts with" in w] == [
        f"{r} pool gpu-l4 starts with 1 node(s) in each of 3 zones, above its maximum of 2; raise the models' "
        "max_replicas" for r in ("gcp:us-central1", "gcp:europe-west4")]


# ----------------------------------------------------------------------------------- EKS cluster details

OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"
ADDON = "aws:eks/addon:Addon"


def test_irsa_trusts_the_clusters_own_oidc_provider(stack):
    providers = stack.of(OIDC)
    assert len(providers) == len(stack.of(EKS)) == len(_aws(stack))
    issuers = {stack.region_of(c).key: c.outputs["identities"][0]["oidcs"][0]["issuer"] for c in stack.of(EKS)}
    irsa_roles = [r for r in stack.of(ROLE) if "AssumeRoleWithWebIdentity" in json.dumps(_json(r.inputs["assumeRolePolicy"]))]
    # Triton, the VPC CNI, cluster-autoscaler, the gateway's secret reader and the trace collector in each region.
    assert len(irsa_roles) == 5 * len(_aws(stack))
    for provider in providers:
        region = stack.region_of(provider)
        assert provider.inputs["url"] == issuers[region.key]
        assert provider.inputs["clientIdLists"] == ["sts.amazonaws.com"]
        host = provider.inputs["url"].removeprefix("https://")
        mine = [r for r in irsa_roles if stack.region_of(r).key == region.key]
        assert len(mine) == 5
        for role in mine:
            (statement,) = _json(role.inputs["assumeRolePolicy"])["Statement"]
            assert statement["Principal"] == {"Federated": provider.outputs["arn"]}
            assert set(statement["Condition"]["StringEquals"]) == {f"{host}:sub", f"{host}:aud"}


def test_network_policy_is_enforced_on_eks(stack):
    addons = stack.of(ADDON)
    assert len(addons) == 3 * len(_aws(stack))
    for region in _aws(stack):
        mine = {a.inputs["addonName"]: a for a in addons if stack.region_of(a).key == region.key}
        assert set(mine) == {"vpc-cni", "kube-proxy", "coredns"} == {a.name for a in region.addons}
        assert json.loads(mine["vpc-cni"].inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
        for addon in mine.values():
            # EKS's default version for the cluster's minor, looked up at deploy time.
            assert addon.inputs["addonVersion"].startswith("v"), addon.name
            assert addon.inputs["resolveConflictsOnUpdate"] == "OVERWRITE"


def test_eks_nodes_follow_the_cluster_version_and_wait_for_the_cni(stack):
    groups = stack.of(NODE_GROUP)
    assert len(groups) == sum(len(r.pools) for r in _aws(stack))
    addons = {(stack.region_of(a).key, a.inputs["addonName"]): a.urn for a in stack.of(ADDON)}
    for group in groups:
        region = stack.region_of(group)
        assert group.inputs["version"] == region.kubernetes_version
        assert {addons[(region.key, "vpc-cni")], addons[(region.key, "kube-proxy")]} <= set(group.dependencies)
    # coredns is a Deployment: it becomes ACTIVE only with nodes to run on.
    for addon in [a for a in stack.of(ADDON) if a.inputs["addonName"] == "coredns"]:
        key = stack.region_of(addon).key
        assert {g.urn for g in groups if stack.region_of(g).key == key} <= set(addon.dependencies)


# ------------------------------------------------------------------------------------ deployment order

SERVING = "modelfleet:serving:Serving"


def _under(stack: Stack, ancestor: Recorded) -> list[Recorded]:
    def inside(resource: Recorded) -> bool:
        node = resource
        while node.parent:
            if node.parent == ancestor.urn:
                return True
            node = stack.by_urn[node.parent]
        return False

    return [r for r in stack.resources if r.custom and inside(r)]


def test_keda_and_triton_wait_for_nodes_and_gpu_software(stack):
    servings = stack.of(SERVING)
    assert len(servings) == len(stack.plan.regions)
    for serving in servings:
        region = stack.region_of(serving)
        nodes = {r.urn for r in stack.of(NODE_GROUP) + stack.of(NODE_POOL) if stack.region_of(r).key == region.key}
        assert len(nodes) == len(region.pools)
        needed = set(nodes)
        if region.cloud == "aws":
            (plugin,) = [r for r in stack.of(HELM_RELEASE) if r.inputs["chart"] == "nvidia-device-plugin"
                         and stack.region_of(r).key == region.key]
            needed.add(plugin.urn)
        children = _under(stack, serving)
        keda = [r for r in children if r.type == HELM_RELEASE and r.inputs["chart"] == "keda"]
        deployments = [r for r in children if r.type == "kubernetes:apps/v1:Deployment"]
        assert len(keda) == 1 and len(deployments) == len(region.placements)
        for resource in children:
            assert needed <= set(resource.dependencies), resource.name


def triton_deployments(stack):
    """Triton's Deployments, one per placement (the gateway's inspector is a Deployment too)."""
    return [d for d in stack.of("kubernetes:apps/v1:Deployment")
            if d.inputs["metadata"]["labels"]["app.kubernetes.io/name"] == "triton"]


def test_triton_waits_for_its_iam_grants_and_bindings(stack):
    """A pod that starts before its read grant (or workload-identity binding) exists fails to load its model."""
    grant_types = {ROLE_POLICY, SA_MEMBER, BUCKET_MEMBER}
    deployments = triton_deployments(stack)
    assert len(deployments) == sum(len(r.placements) for r in stack.plan.regions)
    for deployment in deployments:
        region = stack.region_of(deployment)
        grants = {r.urn for r in stack.resources if r.type in grant_types and stack.region_of(r).key == region.key
                  and r.name.startswith(f"{region.key}-triton")}
        # AWS: the read policy; GCP: the workload-identity binding, and per model the read and bucket grants.
        assert len(grants) == (1 if region.cloud == "aws" else 1 + 2 * len(region.identity.grants)), region.key
        assert grants <= set(deployment.dependencies), deployment.name


def test_rollout_waits_cover_the_cold_start(stack):
    """progressDeadlineSeconds and Pulumi's wait on each Deployment are at least the plan's cold start (a first
    rollout brings up a node, pulls the image and loads the model), and Pulumi waits longer than Kubernetes."""
    deployments = triton_deployments(stack)
    assert len(deployments) == sum(len(r.placements) for r in stack.plan.regions)
    for deployment in deployments:
        region = stack.region_of(deployment)
        placement = next(p for p in region.placements if deployment.name == f"{region.key}-{p.model}")
        model = stack.plan.model(placement.model)
        # Independent of the plan's sum: a GPU node (300 s), the image (180 s), Triton and the model (60 + 120 s).
        cold = (300 if model.hardware.is_gpu else 120) + 180 + 60 + {"python": 120, "onnxruntime": 120}[model.backend]
        deadline = deployment.inputs["spec"]["progressDeadlineSeconds"]
        assert deadline >= cold
        timeouts = dict(deployment.custom_timeouts)
        assert set(timeouts) == {"create", "update"}
        for value in timeouts.values():
            assert re.fullmatch(r"\d+s", value) and int(value[:-1]) > deadline


# ------------------------------------------------------------------------------------------------ cost

def test_interface_endpoints_are_priced_per_zone(stack):
    for region in stack.plan.regions:
        endpoints = [e for e in stack.of("aws:ec2/vpcEndpoint:VpcEndpoint")
                     if stack.region_of(e).key == region.key and e.inputs["vpcEndpointType"] == "Interface"]
        lines = [line for line in region.cost if line.item.startswith("interface endpoints")]
        if region.cloud == "gcp":
            assert not endpoints and not lines
            continue
        assert len(endpoints) == len(region.interface_endpoints) == 3
        (line,) = lines
        assert line.quantity == sum(len(e.inputs["subnetIds"]) for e in endpoints) == 3 * len(region.zones)
        assert line.hourly_usd_each == 0.01


# ------------------------------------------------------------------------------------------ cluster access

ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
ACCESS_POLICY = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
CLUSTER_ADMIN = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


def _check_cluster_access(stack: Stack, deployer: str, admins: tuple[str, ...]) -> None:
    clusters = stack.of(EKS)
    assert len(clusters) == len(_aws(stack))
    k8s_providers = {p.name: p for p in stack.of(K8S_PROVIDER)}
    for cluster in clusters:
        region = stack.region_of(cluster)
        # No implicit admin: every principal with access is a declared, reviewable access entry.
        assert cluster.inputs["accessConfig"] == {"authenticationMode": "API",
                                                  "bootstrapClusterCreatorAdminPermissions": False}
        entries = [e for e in stack.of(ACCESS_ENTRY) if stack.region_of(e).key == region.key]
        policies = [p for p in stack.of(ACCESS_POLICY) if stack.region_of(p).key == region.key]
        expected = {deployer, *admins}
        assert len(entries) == len(policies) == len(expected)
        assert {e.inputs["principalArn"] for e in entries} == expected
        for entry in entries:
            assert entry.inputs["clusterName"] == region.cluster_name and entry.inputs["type"] == "STANDARD"
        for policy in policies:
            assert policy.inputs["policyArn"] == CLUSTER_ADMIN and policy.inputs["accessScope"] == {"type": "cluster"}
        # The Kubernetes provider acts as the deployer: it waits for the deployer's access.
        provider = k8s_providers[f"{region.key}-k8s"]
        assert {p.urn for p in policies} <= set(provider.dependencies)


def test_eks_access_is_declared_for_the_deployer_not_bootstrapped(stack):
    _check_cluster_access(stack, "arn:aws:iam::123456789012:user/ci", ())


def test_the_stacks_admin_roles_get_access_entries(project_copy):
    stack_file = project_copy / "stacks" / "Pulumi.dev.yaml"
    ci = "arn:aws:iam::210987654321:role/modelfleet-ci"
    stack_file.write_text(stack_file.read_text().replace(
        "  modelfleet:cluster_endpoint:\n", f"  modelfleet:cluster_endpoint:\n    admin_role_arns: [{ci}]\n"))
    plan = build_plan(load_fleet(project_copy, "dev"))
    _check_cluster_access(Stack(evaluate(project_copy, "dev").resources, plan), "arn:aws:iam::123456789012:user/ci",
                          (ci,))



# ------------------------------------------------------------------------------------------------ GCP APIs

# Which API each kind of resource the program declares calls (Google's API per REST resource), by type prefix.
API_OF = {"gcp:compute/": "compute.googleapis.com", "gcp:container/": "container.googleapis.com",
          "gcp:kms/": "cloudkms.googleapis.com", "gcp:serviceaccount/": "iam.googleapis.com",
          "gcp:projects/iAMCustomRole": "iam.googleapis.com",
          "gcp:projects/iAMMember": "cloudresourcemanager.googleapis.com",
          "gcp:storage/": "storage.googleapis.com", "gcp:artifactregistry/": "artifactregistry.googleapis.com",
          "gcp:redis/": "redis.googleapis.com", "gcp:secretmanager/": "secretmanager.googleapis.com"}


def test_gcp_apis_are_enabled_before_anything_uses_them(stack):
    services = {s.inputs["service"]: s for s in stack.of("gcp:projects/service:Service")}
    gcp_resources = [r for r in stack.resources if r.custom and r.type.startswith("gcp:")
                     and r.type != "gcp:projects/service:Service"]
    if not _gcp(stack):
        assert not services and not gcp_resources
        return
    needed = {api for r in gcp_resources for prefix, api in API_OF.items() if r.type.startswith(prefix)}
    assert len(gcp_resources) == sum(1 for r in gcp_resources if any(r.type.startswith(p) for p in API_OF)), \
        "every GCP resource type has an API in API_OF"
    # GKE's logging and managed Prometheus need their APIs as well.
    assert needed | {"logging.googleapis.com", "monitoring.googleapis.com"} <= set(services)
    for service in services.values():
        assert service.inputs["project"] == stack.plan.gcp_project and service.inputs["disableOnDestroy"] is False
    # Each region's resources go through its provider, which waits for every API.
    for resource in gcp_resources:
        provider = stack.providers[resource.provider]
        assert {s.urn for s in services.values()} <= set(provider.dependencies), resource.name



# ------------------------------------------------------------------------------- model repository per region

def test_each_aws_region_reads_a_bucket_of_its_own_region(evaluated):
    """prod runs two AWS regions: Triton signs S3 requests for AWS_DEFAULT_REGION, so each region's pods, grant
    and release objects use that region's bucket (the example buckets are named after their region)."""
    stack = Stack(evaluated("prod").resources, plan_of("prod"))
    aws_regions = _aws(stack)
    assert [r.region for r in aws_regions] == ["us-east-1", "eu-west-1"]
    buckets = {}
    for region in aws_regions:
        for placement in region.placements:
            bucket = placement.source.split("://", 1)[1].split("/", 1)[0]
            assert bucket == f"modelfleet-models-{region.region}", placement
            buckets.setdefault(region.region, set()).add(bucket)
        assert {g.bucket for g in region.identity.grants} == buckets[region.region]
    assert buckets["us-east-1"].isdisjoint(buckets["eu-west-1"])
    deployments = [d for d in triton_deployments(stack) if stack.region_of(d).cloud == "aws"]
    assert len(deployments) == sum(len(r.placements) for r in aws_regions)
    for deployment in deployments:
        region = stack.region_of(deployment)
        (container,) = deployment.inputs["spec"]["template"]["spec"]["containers"]
        assert {"name": "AWS_DEFAULT_REGION", "value": region.region} in container["env"]
        (repository,) = [a for a in container["args"] if a.startswith("--model-repository=")]
        assert repository == f"--model-repository=s3://modelfleet-models-{region.region}"
