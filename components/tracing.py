"""The OpenTelemetry Collector's cloud identity in one cluster: allowed to write traces to the cloud's backend
(AWS X-Ray, Google Cloud Trace) and nothing else, bound to the collector's Kubernetes service account
(`modelfleet.monitoring.tracing`). `annotations` go on that service account through the chart's values."""

from __future__ import annotations

import json
from typing import Sequence

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from components.cluster_aws import EksCluster, irsa_role
from components.cluster_identity import AWS_ROLE_ANNOTATION, GCP_ACCOUNT_ANNOTATION
from modelfleet.monitoring import tracing
from modelfleet.plan import FleetPlan, RegionPlan


class AwsTraceIdentity(pulumi.ComponentResource):
    """An IRSA role for the collector with xray:PutTraceSegments only."""

    def __init__(self, fleet: FleetPlan, region: RegionPlan, cluster: EksCluster,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:aws:TraceIdentity", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = irsa_role(f"{region.key}-otel-collector", cluster, tracing.NAMESPACE, tracing.SERVICE_ACCOUNT,
                         opts=child, name_prefix=f"{fleet.environment}-otel-")
        self.grants = [aws.iam.RolePolicy(f"{region.key}-otel-collector-xray", role=role.id,
                                          policy=json.dumps(tracing.xray_write_policy(), sort_keys=True), opts=child)]
        self.annotations = role.arn.apply(lambda arn: {AWS_ROLE_ANNOTATION: arn})
        self.register_outputs({"roleArn": role.arn})


class GcpTraceIdentity(pulumi.ComponentResource):
    """A Google service account the collector impersonates through Workload Identity, with roles/cloudtrace.agent
    on the project."""

    def __init__(self, fleet: FleetPlan, region: RegionPlan, depends_on: Sequence[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("modelfleet:gcp:TraceIdentity", region.key, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        assert fleet.gcp_project, "the spec requires gcp_project for GCP regions"
        account = gcp.serviceaccount.Account(
            f"{region.key}-otel-collector",
            account_id=tracing.gcp_account_id(fleet.environment, region.region),
            display_name=f"OpenTelemetry Collector in {region.cluster_name} (writes traces)",
            opts=child,
        )
        # The workload pool exists once the cluster has workload identity on, hence the dependency.
        self.grants = [
            gcp.serviceaccount.IAMMember(
                f"{region.key}-otel-collector-workload-identity",
                service_account_id=account.name,
                role="roles/iam.workloadIdentityUser",
                member=tracing.workload_identity_member(fleet.gcp_project),
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
            ),
            gcp.projects.IAMMember(
                f"{region.key}-otel-collector-cloudtrace",
                project=fleet.gcp_project,
                role=tracing.CLOUD_TRACE_ROLE,
                member=account.email.apply(lambda email: f"serviceAccount:{email}"),
                opts=child,
            ),
        ]
        self.annotations = account.email.apply(lambda email: {GCP_ACCOUNT_ANNOTATION: email})
        self.register_outputs({"email": account.email})
