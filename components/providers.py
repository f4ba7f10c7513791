"""Explicit providers: one cloud provider per region, one Kubernetes provider per cluster.

Nothing ever lands in a default provider's region or cluster by accident. The Kubernetes provider's kubeconfig
authenticates with the cloud CLI's exec plugin (`aws eks get-token`, `gke-gcloud-auth-plugin`): short-lived
tokens from the deployer's own identity, no static secret in the state file.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from modelfleet.plan import FleetPlan, RegionPlan

EXEC_API = "client.authentication.k8s.io/v1beta1"


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


def kubeconfig(name: str, server: str, ca_data: str, command: str, args: list[str]) -> str:
    """A one-cluster kubeconfig whose user runs `command args` for a token."""
    return json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "users": [{"name": name, "user": {"exec": {
            "apiVersion": EXEC_API, "command": command, "args": args, "interactiveMode": "Never",
        }}}],
    }, sort_keys=True)


def eks_kubeconfig(cluster_name: pulumi.Input[str], endpoint: pulumi.Input[str], ca_data: pulumi.Input[str],
                   region: str) -> pulumi.Output[str]:
    return pulumi.Output.all(cluster_name, endpoint, ca_data).apply(lambda a: kubeconfig(
        a[0], a[1], a[2], "aws", ["eks", "get-token", "--cluster-name", a[0], "--region", region, "--output", "json"]))


def gke_kubeconfig(cluster_name: pulumi.Input[str], endpoint: pulumi.Input[str],
                   ca_data: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.all(cluster_name, endpoint, ca_data).apply(
        lambda a: kubeconfig(a[0], f"https://{a[1]}", a[2], "gke-gcloud-auth-plugin", []))


def kubernetes_provider(name: str, config: pulumi.Input[str], opts: pulumi.ResourceOptions) -> kubernetes.Provider:
    # Server-side apply (the default) lets the serving components share objects with in-cluster controllers.
    return kubernetes.Provider(name, kubeconfig=config, opts=opts)
