"""Governance: cloud resources carry the required tags/labels; every served model names its owner and its SLO;
what holds a stack's state of the world (clusters, databases, load balancers) cannot be deleted by accident."""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs,
                           ResourceValidationPolicy)

from ._util import (OWNER_KEY, SLO_AVAILABILITY_KEY, SLO_P99_KEY, annotations_of, as_dict, config, get, is_triton,
                    labels_of, pod_template, short, truthy)

DEFAULT_REQUIRED = ["team", "cost-center", "environment", "managed-by"]

# AWS types modelfleet creates that accept tags (default tags reach them through the provider). Any other AWS
# resource is checked too when it sets `tags` itself.
AWS_TAGGABLE = {
    "aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway", "aws:ec2/natGateway:NatGateway",
    "aws:ec2/eip:Eip", "aws:ec2/routeTable:RouteTable", "aws:ec2/securityGroup:SecurityGroup",
    "aws:ec2/launchTemplate:LaunchTemplate", "aws:ec2/instance:Instance", "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup", "aws:eks/addon:Addon", "aws:kms/key:Key",
    "aws:iam/role:Role", "aws:iam/policy:Policy", "aws:iam/openIdConnectProvider:OpenIdConnectProvider",
    "aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup", "aws:lb/listener:Listener",
    "aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2", "aws:ecr/repository:Repository",
    "aws:cloudwatch/logGroup:LogGroup", "aws:acm/certificate:Certificate", "aws:route53/zone:Zone",
    "aws:elasticache/replicationGroup:ReplicationGroup",
}
# GCP types with a `labels` field that the provider's default_labels reach.
GCP_LABELLED = {
    "gcp:container/cluster:Cluster": "resourceLabels", "gcp:storage/bucket:Bucket": "labels",
    "gcp:compute/address:Address": "labels", "gcp:compute/globalAddress:GlobalAddress": "labels",
    "gcp:kms/cryptoKey:CryptoKey": "labels", "gcp:redis/instance:Instance": "labels",
}


def _aws_provider_tags(props) -> dict:
    return {str(k): v for k, v in as_dict(get(as_dict(get(props, "defaultTags")), "tags")).items()}


def _missing(tags: dict, required: list[str]) -> list[str]:
    return [k for k in required if not str(tags.get(k) or "").strip()]


def _tags(args: ResourceValidationArgs, report: ReportViolation) -> None:
    t, p, who = args.resource_type, args.props, short(args.urn)
    required = [str(k) for k in config(args, "required_tags", DEFAULT_REQUIRED)]
    if t == "pulumi:providers:aws":
        missing = _missing(_aws_provider_tags(p), required)
        if missing:
            report(f"{who}: the provider's default_tags lack {', '.join(missing)}, so resources created through it are "
                   "untagged. Fix: default_tags={'tags': {...}} with every required tag (the stack's "
                   "modelfleet:required_tags feed it).")
    elif t == "pulumi:providers:gcp":
        missing = _missing(as_dict(get(p, "defaultLabels")), required)
        if missing:
            report(f"{who}: the provider's default_labels lack {', '.join(missing)}. Fix: default_labels with every "
                   "required label (the stack's modelfleet:required_tags feed it).")
    elif t.startswith("aws:") and (t in AWS_TAGGABLE or get(p, "tags") is not None):
        inherited = _aws_provider_tags(args.provider.props) if args.provider is not None else {}
        effective = {**inherited, **as_dict(get(p, "tags"))}
        missing = _missing(effective, required)
        if missing:
            report(f"{who}: missing required tags {', '.join(missing)} (neither on the resource nor in its provider's "
                   "default_tags). Fix: create it with the region's explicit provider, whose default_tags carry the "
                   "stack's modelfleet:required_tags, or set tags on it.")
    elif t in GCP_LABELLED:
        inherited = as_dict(get(args.provider.props, "defaultLabels")) if args.provider is not None else {}
        effective = {**inherited, **as_dict(get(p, GCP_LABELLED[t]))}
        missing = _missing(effective, required)
        if missing:
            report(f"{who}: missing required labels {', '.join(missing)} (neither on the resource nor in its provider's "
                   "default_labels). Fix: use the region's explicit provider or set the labels on it.")


required_tags = ResourceValidationPolicy(
    name="required-tags",
    description="AWS and GCP resources carry the required tags/labels, on the resource or through the provider's "
                "default tags/labels.",
    enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "required_tags": {"type": "array", "items": {"type": "string"}, "default": DEFAULT_REQUIRED,
                          "description": "Tag/label keys every taggable resource must carry, non-empty."},
    }),
    validate=_tags,
)


def _owner_and_slo(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not is_triton(args.resource_type, args.props):
        return
    template = pod_template(args.resource_type, args.props)
    meta = {**labels_of(args.props), **annotations_of(args.props), **labels_of(template), **annotations_of(template)}
    missing = [k for k in (OWNER_KEY, SLO_P99_KEY, SLO_AVAILABILITY_KEY) if not str(meta.get(k) or "").strip()]
    if missing:
        report(f"{short(args.urn)}: the Triton workload does not say {', '.join(missing)}, so nobody is paged and "
               "its alerts have no target. Fix: annotate the workload with modelfleet.io/owner (the model spec's "
               "owner), modelfleet.io/slo-p99-ms and modelfleet.io/slo-availability (its slo), and label it "
               "modelfleet.io/model.")


model_owner_and_slo = ResourceValidationPolicy(
    name="model-owner-and-slo",
    description="Every Triton workload names its model's owner and SLO (modelfleet.io/owner, slo-p99-ms, "
                "slo-availability labels or annotations).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_owner_and_slo,
)

# Resource type -> (its deletion-protection prop, the provider's default when unset). GKE clusters and Cloud SQL
# instances default to protected in the provider (pulumi_gcp container.Cluster / sql.DatabaseInstance docs); the
# AWS ones and GCE instances default to unprotected.
PROTECTABLE = {
    "aws:eks/cluster:Cluster": ("deletionProtection", False),
    "aws:lb/loadBalancer:LoadBalancer": ("enableDeletionProtection", False),
    "aws:alb/loadBalancer:LoadBalancer": ("enableDeletionProtection", False),
    "aws:rds/instance:Instance": ("deletionProtection", False),
    "aws:rds/cluster:Cluster": ("deletionProtection", False),
    "aws:dynamodb/table:Table": ("deletionProtectionEnabled", False),
    "gcp:container/cluster:Cluster": ("deletionProtection", True),
    "gcp:compute/instance:Instance": ("deletionProtection", False),
    "gcp:sql/databaseInstance:DatabaseInstance": ("deletionProtection", True),
}


def _deletion_protection(args: ResourceValidationArgs, report: ReportViolation) -> None:
    entry = PROTECTABLE.get(args.resource_type)
    if entry is None:
        return
    prop, default = entry
    value = get(args.props, prop)
    if not (truthy(value) or (value is None and default)):
        report(f"{short(args.urn)}: {prop} is {'unset (off by default)' if value is None else value}, so one "
               "mistaken `pulumi destroy` or replacement deletes it with everything it serves. Fix: set "
               f"{prop}=True (modelfleet sets it from the plan's deletion_protection in prod); to remove it on "
               "purpose, turn it off in one deployment and delete in the next.")


deletion_protection = ResourceValidationPolicy(
    name="deletion-protection",
    description="Clusters, databases, load balancers and instances have deletion protection on (mandatory in prod; "
                "disabled in dev and staging, which are rebuilt at will).",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=_deletion_protection,
)

POLICIES = [required_tags, model_owner_and_slo, deletion_protection]
