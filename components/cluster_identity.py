"""Triton's cloud identity in one cluster: read-only on its models' repository prefixes, nothing else.

The contract with the serving components: `Region.triton_identity` has `namespace`, `service_account` and
`annotations`, the metadata annotations Triton's Kubernetes ServiceAccount needs (AWS
`eks.amazonaws.com/role-arn`, GCP `iam.gke.io/gcp-service-account`).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from components.cluster_aws import EksCluster, irsa_role
from modelfleet import access
from modelfleet.plan import RegionPlan
from modelfleet.spec import kube_name

AWS_ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"
GCP_ACCOUNT_ANNOTATION = "iam.gke.io/gcp-service-account"


class TritonIdentity(pulumi.ComponentResource):
    """What both clouds' identities expose."""

    namespace: str
    service_account: str
    annotations: pulumi.Output[dict[str, str]]


class AwsTritonIdentity(TritonIdentity):
    """An IRSA role for `namespace/triton` with s3:GetObject and s3:ListBucket on each model's prefix only."""

    def __init__(self, region: RegionPlan, cluster: EksCluster, opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:aws:TritonIdentity", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = region.identity
        self.namespace, self.service_account = identity.namespace, identity.service_account
        self.role = irsa_role(f"{region.key}-triton", cluster, identity.namespace, identity.service_account,
                              opts=child, name_prefix=f"{identity.cloud_account}-")
        aws.iam.RolePolicy(
            f"{region.key}-triton-model-read",
            role=self.role.id,
            policy=json.dumps(access.s3_read_policy(identity), sort_keys=True),
            opts=child,
        )
        self.annotations = self.role.arn.apply(lambda arn: {AWS_ROLE_ANNOTATION: arn})
        self.register_outputs({"roleArn": self.role.arn, "annotations": self.annotations})


class GcpTritonIdentity(TritonIdentity):
    """A Google service account that `namespace/triton` impersonates through workload identity, with
    objectViewer on each model's bucket restricted by an IAM condition to the model's prefix."""

    def __init__(self, region: RegionPlan, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:gcp:TritonIdentity", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identity = region.identity
        self.namespace, self.service_account = identity.namespace, identity.service_account
        self.account = gcp.serviceaccount.Account(
            f"{region.key}-triton",
            account_id=identity.cloud_account,
            display_name=f"Triton in {region.cluster_name} (model repository read-only)",
            opts=child,
        )
        # The workload pool exists once the cluster has workload identity on, hence the dependency.
        gcp.serviceaccount.IAMMember(
            f"{region.key}-triton-workload-identity",
            service_account_id=self.account.name,
            role="roles/iam.workloadIdentityUser",
            member=identity.gcp_member,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        for grant in identity.grants:
            condition = access.gcs_read_condition(grant)
            gcp.storage.BucketIAMMember(
                f"{region.key}-triton-read-{kube_name(grant.model)}",
                bucket=grant.bucket,
                role=access.GCS_READ_ROLE,
                member=self.account.email.apply(lambda email: f"serviceAccount:{email}"),
                condition=gcp.storage.BucketIAMMemberConditionArgs(title=condition[0], expression=condition[1])
                if condition else None,
                opts=child,
            )
        self.annotations = self.account.email.apply(lambda email: {GCP_ACCOUNT_ANNOTATION: email})
        self.register_outputs({"email": self.account.email, "annotations": self.annotations})
