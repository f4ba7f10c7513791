"""Traces, cloud side, as plain data: the OpenTelemetry Collector that receives Triton's and Envoy's OTLP spans
exports them to the cloud's own trace backend — AWS X-Ray (`awsxray` exporter) on EKS, Google Cloud Trace
(`googlecloud` exporter) on GKE — as a cloud identity bound to the collector's Kubernetes service account (IRSA on
EKS, Workload Identity on GKE), allowed to write traces and nothing else.

Why the cloud backends: both are managed and already billed per span, with no extra store to run; Tempo or Jaeger
in the cluster would be one more stateful service per region. Both exporters ship in the collector-contrib image
(opentelemetry-collector-releases distributions/otelcol-contrib/manifest.yaml lists awsxrayexporter and
googlecloudexporter), not in the slimmer `-k8s` image, hence the contrib image.

The exporters' API calls, and what they need:
- awsxray (exporter/awsxrayexporter, its README): `PutTraceSegments` per batch of segments, credentials by the AWS
  SDK's default chain (IRSA's web identity token included). It sends `PutTelemetryRecords` only with
  `telemetry.enabled` (default false, left off). Random W3C trace ids are accepted (the exporter reformats them).
  X-Ray's write actions take no resource ARN: `Resource: "*"`.
- googlecloud (exporter/googlecloudexporter, traces through Cloud Trace API v2): `BatchWriteSpans`, which needs
  `cloudtrace.traces.patch`, held by `roles/cloudtrace.agent`.
"""

from __future__ import annotations

from modelfleet import versions
from modelfleet.monitoring.kubernetes import SYSTEM_POOL
from modelfleet.plan import FleetPlan, RegionPlan

NAMESPACE = versions.OPENTELEMETRY_COLLECTOR.namespace
SERVICE_ACCOUNT = "opentelemetry-collector"  # named in the chart's values, so the cloud identities can trust it
IMAGE = "otel/opentelemetry-collector-contrib"  # tag: the chart's appVersion
XRAY_ACTIONS = ("xray:PutTraceSegments",)
CLOUD_TRACE_ROLE = "roles/cloudtrace.agent"
CLOUD_TRACE_API = "cloudtrace.googleapis.com"


def xray_write_policy() -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "WriteTraces", "Effect": "Allow", "Action": list(XRAY_ACTIONS), "Resource": "*"}]}


def gcp_account_id(environment: str, region: str) -> str:
    """The collector's Google service account id: shorter than Triton's `<environment>-triton-<region>`, which the
    plan checks fits GCP's 6-30 characters, so it fits too; never cut (two regions must not share an id)."""
    return f"otel-{environment}-{region}"


def workload_identity_member(project: str) -> str:
    return f"serviceAccount:{project}.svc.id.goog[{NAMESPACE}/{SERVICE_ACCOUNT}]"


def trace_exporter(fleet: FleetPlan, region: RegionPlan) -> tuple[str, dict]:
    """(exporter name, its config) for the region's cloud."""
    if region.cloud == "aws":
        return "awsxray", {"region": region.region}
    return "googlecloud", {"project": fleet.gcp_project}


def collector_values(fleet: FleetPlan, region: RegionPlan, account_annotations) -> dict:
    """The collector chart's values: an OTLP receiver (gRPC 4317, HTTP 4318) in a Deployment on the system pool,
    traces batched and exported to the cloud's backend as the service account `account_annotations` binds to a
    cloud identity (an Output at deploy time)."""
    name, config = trace_exporter(fleet, region)
    return {
        "mode": "deployment",
        "image": {"repository": IMAGE},
        "nodeSelector": SYSTEM_POOL,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT, "annotations": account_annotations},
        "config": {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "${env:MY_POD_IP}:4317"},
                                                 "http": {"endpoint": "${env:MY_POD_IP}:4318"}}}},
            "exporters": {name: config},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                                                 "exporters": [name]}}},
        },
    }
