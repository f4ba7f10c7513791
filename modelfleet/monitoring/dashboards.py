"""Grafana dashboards as code (grafana-foundation-sdk, pinned in pyproject.toml): a fleet overview and one per
model — traffic, latency percentiles, queue vs compute time, batch sizes, GPU use, error budgets, cost per 1k
inferences (the plan's cost over the measured inference rate) and drift.

Panels read the recording rules of `modelfleet.monitoring.rules` where one exists (one query per idea), and raw
metrics only where a rule would add nothing. `panel_queries` lists every query, so the tests can parse each with
promtool and check the metrics it names against a real scrape.
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import GridPos

from modelfleet.monitoring import metrics as m
from modelfleet.monitoring import rules as r
from modelfleet.monitoring.rules import ModelMonitoring, MonitoringPlan, num
from modelfleet.plan import FleetPlan

# Grafana's sidecar (kube-prometheus-stack's grafana.sidecar.dashboards) loads ConfigMaps carrying this label.
SIDECAR_LABEL = ("grafana_dashboard", "1")
WIDTH, HEIGHT = 12, 8


def _panel(title: str, unit: str, queries: list[tuple[str, str]], index: int) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).grid_pos(
        GridPos(h=HEIGHT, w=WIDTH, x=(index % 2) * WIDTH, y=(index // 2) * HEIGHT))
    for ref, (expr, legend) in zip("ABCDEFGH", queries):
        panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref))
    return panel


def _model_panels(mm: ModelMonitoring) -> list[tuple[str, str, list[tuple[str, str]]]]:
    sel = m.upstream_selector(mm.model, mm.kube_name)
    model = f'model="{mm.model}"'
    latency = [(f"histogram_quantile({q}, sum by (le) (rate({m.ENVOY_RQ_TIME_BUCKET}{{{sel}}}[5m])))", f"p{p}")
               for q, p in (("0.5", "50"), ("0.9", "90"), ("0.99", "99"))]
    panels = [
        ("Traffic", "reqps", [(f"{r.requests_record('5m')}{{{model}}}", "gateway answers/s"),
                              (f"{r.SUCCESS_RECORD}{{{model}}}", "Triton successes/s")]),
        (f"Latency at the gateway (p99 target {mm.latency_bucket_ms:g} ms bucket)", "ms", latency),
        ("Queue vs compute time per request", "µs", [(f"{r.QUEUE_RECORD}{{{model}}}", "queue"),
                                                    (f"{r.COMPUTE_RECORD}{{{model}}}", "compute")]),
        ("Batch size (inferences per execution)", "short", [(f"{r.BATCH_RECORD}{{{model}}}", "batch")]),
        ("Error budget burn (1h)", "percentunit", [
            (f"{r.availability_record('1h')}{{{model}}} / {num(1 - mm.availability_objective)}", "availability"),
            (f"{r.latency_record('1h')}{{{model}}} / {num(1 - r.LATENCY_OBJECTIVE)}", "latency")]),
        # The plan's hourly cost of the model's replicas over the inferences they served in the last hour.
        ("Cost per 1k inferences (plan's cost)", "currencyUSD", [
            (f"sum({r.COST_RECORD}{{{model}}}) / (sum(rate({m.TRITON_INFERENCES}{{{model}}}[1h])) * 3600) * 1000",
             "USD")]),
    ]
    if mm.gpu:
        panels.append(("GPU utilisation", "percent", [(f"avg({m.DCGM_GPU_UTIL}{{{m.pod_selector(mm.kube_name)}}})",
                                                       "avg"), (f"max({m.DCGM_GPU_UTIL}{{{m.pod_selector(mm.kube_name)}}})",
                                                                "max")]))
    if mm.drift:
        panels.append(("Input drift", "short", [(f"{m.DRIFT_PSI}{{{model}}}", "PSI {{feature}}"),
                                                (f"{m.DRIFT_KS}{{{model}}}", "KS {{feature}}")]))
    return panels


def _fleet_panels() -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [
        ("Requests by model", "reqps", [(r.requests_record("5m"), "{{model}}")]),
        ("Availability errors by model (5m)", "percentunit", [(r.availability_record("5m"), "{{model}}")]),
        ("Requests slower than the SLO by model (5m)", "percentunit", [(r.latency_record("5m"), "{{model}}")]),
        ("Queue time per request by model", "µs", [(r.QUEUE_RECORD, "{{model}}")]),
        ("Triton failures by model", "percentunit", [(r.FAILURE_RATIO_RECORD, "{{model}}")]),
        ("Fleet cost per 1k inferences (plan's cost)", "currencyUSD", [
            (f"sum({r.COST_RECORD}) / (sum(rate({m.TRITON_INFERENCES}[1h])) * 3600) * 1000", "USD")]),
    ]


def _build(uid: str, title: str, panels, tags: list[str]) -> dict:
    board = dashboard.Dashboard(title).uid(uid).tags(tags).refresh("30s").time("now-6h", "now")
    for index, (name, unit, queries) in enumerate(panels):
        board = board.with_panel(_panel(name, unit, queries, index))
    return json.loads(JSONEncoder(sort_keys=True).encode(board.build()))


def dashboards(plan: FleetPlan, mon: MonitoringPlan) -> dict[str, dict]:
    """Dashboard JSON keyed by file stem: `fleet`, and `model-<kube name>` for each model with
    `monitoring.dashboards` (the stem names a ConfigMap: a DNS label)."""
    out = {"fleet": _build(f"modelfleet-{plan.stack}-fleet", f"modelfleet {plan.stack}: fleet",
                           _fleet_panels(), ["modelfleet", plan.stack])}
    for spec, mm in zip(plan.models, mon.models):
        if spec.monitoring.dashboards:
            out[f"model-{mm.kube_name}"] = _build(f"modelfleet-{plan.stack}-{mm.kube_name}",
                                              f"modelfleet {plan.stack}: {mm.model}",
                                              _model_panels(mm),
                                              ["modelfleet", plan.stack, mm.model])
    return out


def panel_queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query of a dashboard."""
    return [(p["title"], t["expr"]) for p in board.get("panels", []) for t in p.get("targets", [])]


def configmap(name: str, board: dict, namespace: str) -> dict:
    """The dashboard as a ConfigMap Grafana's sidecar picks up."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"modelfleet-dashboard-{name}", "namespace": namespace,
                     "labels": {SIDECAR_LABEL[0]: SIDECAR_LABEL[1], "app.kubernetes.io/part-of": "modelfleet"}},
        "data": {f"{name}.json": json.dumps(board, sort_keys=True, indent=1)},
    }
