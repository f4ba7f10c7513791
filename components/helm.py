"""Third-party charts, installed the one way modelfleet installs them: pinned, atomic, in their own namespace."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as kubernetes

from modelfleet.versions import Chart


def pinned_release(name: str, chart: Chart, values: pulumi.Input[dict], opts: pulumi.ResourceOptions
                   ) -> kubernetes.helm.v3.Release:
    # Helm objects carry no cloud tags; they are labelled by Helm (app.kubernetes.io/managed-by, helm.sh/chart)
    # and live on nodes whose instances carry the stack's tags.
    # An OCI chart has no repository index: Helm takes its full reference as the chart, and no repository.
    oci = chart.repository.startswith("oci://")
    return kubernetes.helm.v3.Release(
        name,
        name=chart.chart,
        chart=f"{chart.repository}/{chart.chart}" if oci else chart.chart,
        version=chart.version,
        repository_opts=None if oci else kubernetes.helm.v3.RepositoryOptsArgs(repo=chart.repository),
        namespace=chart.namespace,
        create_namespace=True,
        atomic=True,
        values=values,
        opts=opts,
    )
