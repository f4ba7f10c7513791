"""Monitoring on a region's cluster: kube-prometheus-stack (pinned) and the manifests of
`modelfleet.monitoring.kubernetes` — scrape targets, a PrometheusRule per model, dashboards — declared after it,
since its CRDs must exist first; and the OpenTelemetry Collector (pinned), exporting traces as the region's trace
identity (components/tracing.py). Nothing is decided here."""

from __future__ import annotations

from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from components.helm import pinned_release
from components.tracing import AwsTraceIdentity, GcpTraceIdentity
from modelfleet import versions
from modelfleet.monitoring import kubernetes as mk8s
from modelfleet.monitoring import tracing
from modelfleet.monitoring.rules import monitoring_plan
from modelfleet.plan import FleetPlan, RegionPlan


class Monitoring(pulumi.ComponentResource):
    """Prometheus, Alertmanager, Grafana and kube-state-metrics on one cluster, with modelfleet's rules."""

    def __init__(self, fleet: FleetPlan, region: RegionPlan, kubernetes: pulumi.ProviderResource,
                 trace_identity: AwsTraceIdentity | GcpTraceIdentity, needs: Sequence[pulumi.Resource] = (),
                 opts: pulumi.ResourceOptions | None = None):
        name = f"{region.key}-monitoring"
        super().__init__("modelfleet:monitoring:Monitoring", name, None,
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(providers={"kubernetes": kubernetes})))
        child = pulumi.ResourceOptions(parent=self, depends_on=list(needs))
        self.release = pinned_release(f"{region.key}-kube-prometheus-stack", versions.KUBE_PROMETHEUS_STACK,
                                      mk8s.stack_values(fleet, monitoring_plan(fleet)), child)
        # The collector exports as its cloud identity: only once that identity may write traces.
        self.collector = pinned_release(
            f"{region.key}-opentelemetry-collector", versions.OPENTELEMETRY_COLLECTOR,
            tracing.collector_values(fleet, region, trace_identity.annotations),
            pulumi.ResourceOptions(parent=self, depends_on=[*needs, *trace_identity.grants]))
        after = pulumi.ResourceOptions(parent=self, depends_on=[*needs, self.release])
        self.objects = []
        for obj in mk8s.region_monitoring_objects(fleet, region):
            meta = obj["metadata"]
            key = f"{region.key}-{obj['kind'].lower()}-{meta['namespace']}-{meta['name']}"
            if obj["kind"] == "ConfigMap":
                self.objects.append(k8s.core.v1.ConfigMap(key, metadata=meta, data=obj["data"], opts=after))
            else:
                self.objects.append(k8s.apiextensions.CustomResource(
                    key, api_version=obj["apiVersion"], kind=obj["kind"], metadata=meta, spec=obj["spec"], opts=after))
        self.register_outputs({"namespace": versions.KUBE_PROMETHEUS_STACK.namespace})
