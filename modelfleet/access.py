"""Access policies as plain data: what every identity modelfleet creates may do, and nothing more.

Pure functions over plan values (no Pulumi): components serialise them, tests parse them back and check that
Triton can only read its models' prefixes. Values only known after deployment (the OIDC issuer, the cluster
name) are parameters, so the same functions serve `pulumi up` and the offline plan.
"""

from __future__ import annotations

import re

from modelfleet.plan import BucketGrant, IdentityPlan

# What Triton's storage clients call, from triton-inference-server/core src/filesystem/implementations/:
# - s3.h: every IsDirectory/FileExists/LocalizePath starts with HeadBucket (authorised as s3:ListBucket on the
#   bucket, with no s3:prefix in the request), then ListObjectsV2 with Prefix "<model>/" (s3:ListBucket with
#   s3:prefix), HeadObject and GetObject on the files (both s3:GetObject).
# - gcs.h: IsDirectory calls GetBucketMetadata (storage.buckets.get), then ListObjects with a prefix
#   (storage.objects.list), GetObjectMetadata and ReadObject (storage.objects.get).
S3_READ_ACTIONS = ("s3:GetObject",)
S3_LIST_ACTIONS = ("s3:ListBucket",)
GCS_READ_ROLE = "roles/storage.objectViewer"  # storage.objects.get and storage.objects.list
# No predefined role holds storage.buckets.get alone (legacyBucketReader also lists every object and takes no
# condition), so a custom role carries just it, bound on each model bucket.
GCS_BUCKET_METADATA_PERMISSIONS = ("storage.buckets.get",)
GKE_NODE_ROLES = (
    # What a GKE node needs to ship logs and metrics and pull images: Google's documented minimum for a
    # least-privilege node service account, instead of the project-editor default compute account.
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
    "roles/artifactregistry.reader",
)
EKS_CLUSTER_POLICIES = ("arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",)
# Nodes pull images and join the cluster; nothing else. The VPC CNI's permissions go to its own IRSA role.
EKS_NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
)
EKS_CNI_POLICIES = ("arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",)
# What the deployer (and CI) needs on the cluster: Helm releases, CRDs, namespaces and workloads of every kind.
# An access entry with this policy replaces EKS's implicit bootstrap admin, which cannot be seen, audited or
# handed to another role later (EKS API docs: CreateAccessEntry, AssociateAccessPolicy).
EKS_ADMIN_ACCESS_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = ("kube-system", "cluster-autoscaler")
VPC_CNI_SERVICE_ACCOUNT = ("kube-system", "aws-node")


def _object_path(grant: BucketGrant) -> str:
    return f"{grant.prefix}/*" if grant.prefix else "*"


def assume_role_policy(service: str) -> dict:
    """Trust for an AWS service principal (`eks.amazonaws.com`, `ec2.amazonaws.com`, ...)."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def irsa_trust_policy(oidc_provider_arn: str, issuer_url: str, namespace: str, service_account: str) -> dict:
    """Only this one Kubernetes service account, through the cluster's OIDC provider, may assume the role."""
    issuer = issuer_url.removeprefix("https://")
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                f"{issuer}:aud": "sts.amazonaws.com",
            }},
        }],
    }


def _statement_id(model: str, taken: set[str]) -> str:
    """IAM accepts only [A-Za-z0-9] in a Sid and wants them unique within a policy (IAM User Guide, "IAM JSON
    policy elements: Sid"); model names may also hold '_' and '.', and `a-b` and `ab` would otherwise collide."""
    base = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", model) if part)
    sid, n = base, 2
    while sid in taken:
        sid, n = f"{base}{n}", n + 1
    taken.add(sid)
    return sid


def s3_read_policy(identity: IdentityPlan) -> dict:
    """GetObject under each model's prefix only; ListBucket for Triton's HeadBucket and its listings of that
    prefix. No write, no object of another prefix.

    HeadBucket carries no `s3:prefix`, so a plain StringLike on it would deny the very first call Triton makes
    (s3.h CheckClient/IsDirectory). StringLikeIfExists lets a request without a prefix through (HeadBucket, and
    an unprefixed listing: key names only, never contents) and holds every prefixed listing to the model's."""
    statements = []
    sids: set[str] = set()
    for grant in identity.grants:
        sid = _statement_id(grant.model, sids)
        statements.append({
            "Sid": f"Read{sid}",
            "Effect": "Allow",
            "Action": list(S3_READ_ACTIONS),
            "Resource": [f"arn:aws:s3:::{grant.bucket}/{_object_path(grant)}"],
        })
        listing = {
            "Sid": f"List{sid}",
            "Effect": "Allow",
            "Action": list(S3_LIST_ACTIONS),
            "Resource": [f"arn:aws:s3:::{grant.bucket}"],
        }
        if grant.prefix:
            listing["Condition"] = {"StringLikeIfExists": {"s3:prefix": [grant.prefix, f"{grant.prefix}/*"]}}
        statements.append(listing)
    return {"Version": "2012-10-17", "Statement": statements}


def cluster_autoscaler_policy(cluster_name: str) -> dict:
    """Read the node groups of any cluster (those calls take no resource), resize only this cluster's ones:
    EKS tags the auto scaling groups of its managed node groups `k8s.io/cluster-autoscaler/<cluster>`."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Discover",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",
                ],
                "Resource": ["*"],
            },
            {
                "Sid": "ResizeOwnNodeGroups",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                "Resource": ["*"],
                "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}},
            },
        ],
    }


def flow_log_policy(log_group_arn: str) -> dict:
    """VPC flow logs may write to their own log group only."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        }],
    }


def gcs_bucket_metadata_condition(grant: BucketGrant) -> tuple[str, str]:
    """(title, CEL expression) holding the bucket-metadata role to the bucket itself (GetBucketMetadata)."""
    return f"bucket-{grant.model}", f'resource.name == "projects/_/buckets/{grant.bucket}"'


def gcs_read_condition(grant: BucketGrant) -> tuple[str, str] | None:
    """(title, CEL expression) restricting `roles/storage.objectViewer` on the bucket to one prefix: objects
    under it, and listings of it (needs uniform bucket-level access). None when the grant is the whole bucket."""
    if not grant.prefix:
        return None
    objects = f"projects/_/buckets/{grant.bucket}/objects/{grant.prefix}/"
    list_prefix = 'api.getAttribute("storage.googleapis.com/objectListPrefix", "")'
    expression = (
        f'resource.name.startsWith("{objects}") || '
        f'{list_prefix} == "{grant.prefix}" || {list_prefix}.startsWith("{grant.prefix}/")'
    )
    return f"read-{grant.model}", expression
