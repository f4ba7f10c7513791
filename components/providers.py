"""One explicit cloud provider per region, so nothing ever lands in a default provider's region by accident."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

from modelfleet.plan import FleetPlan, RegionPlan


def cloud_provider(region: RegionPlan, fleet: FleetPlan, opts: pulumi.ResourceOptions) -> pulumi.ProviderResource:
    """The region's provider. Required tags ride on it as default tags/labels, so every taggable resource gets them."""
    tags = dict(fleet.tags)
    if region.cloud == "aws":
        return aws.Provider(
            region.key,
            region=region.region,
            default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
            opts=opts,
        )
    return gcp.Provider(
        region.key,
        project=fleet.gcp_project,
        region=region.region,
        default_labels=tags,
        opts=opts,
    )
