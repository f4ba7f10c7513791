"""Triton on a region's cluster: the manifests of `modelfleet.serving`, declared as typed Kubernetes resources.

Nothing is decided here. `Serving` (one per region) declares the environment's Namespace, the Triton
ServiceAccount with the cloud identity, KEDA (Helm release) and one `TritonService` per model placed in the
region; `TritonService` declares that model's Deployment, Service, PodDisruptionBudget, NetworkPolicy and
KEDA ScaledObject. Every child uses the cluster's Kubernetes provider, inherited from the component.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components.helm import pinned_release

from modelfleet import canary, serving, versions
from modelfleet.plan import FleetPlan, Placement, RegionPlan
from modelfleet.render import cloud_configs


def _meta(obj: dict) -> dict:
    return obj["metadata"]


class TritonService(pulumi.ComponentResource):
    """One model served by Triton on one cluster, autoscaled by KEDA on Triton's queue time."""

    def __init__(self, name: str, fleet: FleetPlan, region: RegionPlan, placement: Placement,
                 config_text: str | None, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None, scaler_needs: Sequence[pulumi.Resource] = (),
                 canary: bool = False):
        """`canary`: the placement's canary Deployment (modelfleet.canary) instead of its stable one."""
        super().__init__("modelfleet:serving:TritonService", name, None, opts)
        self.model_kube_name = fleet.model(placement.model).kube_name
        child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        w = (serving.canary_workload if canary else serving.workload)(fleet, region, placement, config_text)

        deployment = serving.deployment(fleet, w)
        wait = f"{placement.deploy_timeout_s}s"
        self.deployment = k8s.apps.v1.Deployment(
            name, metadata=_meta(deployment), spec=deployment["spec"],
            # KEDA owns the replica count between the plan's bounds. Pulumi waits for the rollout as long as the
            # plan's cold start needs (its default, 10 minutes, is shorter than a GPU cold start).
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                ignore_changes=["spec.replicas"],
                custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait))),
        )
        svc = serving.service(fleet, w)
        self.service = k8s.core.v1.Service(name, metadata=_meta(svc), spec=svc["spec"], opts=child)
        pdb = serving.pod_disruption_budget(fleet, w)
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(name, metadata=_meta(pdb), spec=pdb["spec"],
                                                                   opts=child)
        policy = serving.network_policy(fleet, w)
        self.network_policy = k8s.networking.v1.NetworkPolicy(name, metadata=_meta(policy), spec=policy["spec"],
                                                              opts=child)
        scaled = serving.scaled_object(fleet, w)
        self.scaled_object = k8s.apiextensions.CustomResource(
            name, api_version=scaled["apiVersion"], kind=scaled["kind"], metadata=_meta(scaled),
            spec=scaled["spec"],
            # The Prometheus its triggers query comes first (scaler_needs).
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[self.deployment, *scaler_needs])),
        )
        self.register_outputs({"service": svc["metadata"]["name"], "namespace": w.namespace})


class Serving(pulumi.ComponentResource):
    """Everything Triton needs on one region's cluster, through that cluster's Kubernetes provider."""

    def __init__(self, fleet: FleetPlan, region: RegionPlan, kubernetes: pulumi.ProviderResource,
                 identity_annotations: Mapping[str, Any] | pulumi.Output, needs: Sequence[pulumi.Resource] = (),
                 configs: Mapping[str, str] | None = None, grants: Sequence[pulumi.Resource] = (),
                 release: Mapping[str, Sequence[pulumi.Resource]] | None = None,
                 opts: pulumi.ResourceOptions | None = None,
                 prometheus: Sequence[pulumi.Resource] = ()):
        """`needs`: what must exist before anything here can run — the cluster's node groups or pools, and on
        EKS the GPU device plugin; without them KEDA and Triton race an empty cluster and time out.
        `grants`: the IAM grants and workload-identity bindings Triton reads its models with; `release`: per
        model, the objects of its repository in the region's bucket. Triton's pods wait for both."""
        name = f"{region.key}-serving"
        super().__init__("modelfleet:serving:Serving", name, None,
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(providers={"kubernetes": kubernetes})))
        serving.check_keda_supports(region.kubernetes_version)
        configs = cloud_configs(fleet) if configs is None else configs
        # A component's depends_on does not reach its children: each child names what it needs itself.
        child = pulumi.ResourceOptions(parent=self, depends_on=list(needs))

        ns = serving.namespace(fleet)
        self.namespace = k8s.core.v1.Namespace(f"{region.key}-{ns['metadata']['name']}", metadata=_meta(ns),
                                               opts=child)
        after_ns = pulumi.ResourceOptions(parent=self, depends_on=[*needs, self.namespace])
        account = serving.service_account(fleet, {})
        metadata = dict(_meta(account))
        metadata["annotations"] = identity_annotations
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{region.key}-triton", metadata=metadata,
            automount_service_account_token=account["automountServiceAccountToken"], opts=after_ns,
        )
        self.keda = pinned_release(f"{region.key}-keda", versions.KEDA, serving.keda_release_values(), child)
        self.models = [
            TritonService(f"{region.key}-{fleet.model(placement.model).kube_name}{canary.SUFFIX if track else ''}",
                          fleet, region, placement,
                          configs.get(canary.config_key(placement.model) if track else placement.model),
                          depends_on=[*needs, self.namespace, self.service_account, self.keda, *grants,
                                      *(release or {}).get(placement.model, ())],
                          opts=child, scaler_needs=prometheus, canary=track)
            for placement in region.placements
            for track in ((False, True) if placement.canary else (False,))
        ]
        # Per model's Kubernetes name: its Triton services (stable, and canary), for what must wait on them.
        self.by_model: dict[str, list[TritonService]] = {}
        for service in self.models:
            self.by_model.setdefault(service.model_kube_name, []).append(service)
        self.register_outputs({"namespace": ns["metadata"]["name"]})
