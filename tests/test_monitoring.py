"""Monitoring computed from the specs: rules that promtool accepts, every alert proven firing and quiet by
promtool's own unit tests, thresholds from the SRE workbook, Alertmanager routes per owner with no inline secret,
dashboards whose every query parses."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

from modelfleet.loader import load_fleet
from modelfleet.monitoring import metrics, promtool
from modelfleet.monitoring.alertmanager import alertmanager_config, receiver_name
from modelfleet.monitoring.dashboards import SIDECAR_LABEL, configmap, dashboards, panel_queries
from modelfleet.monitoring.promtests import unit_tests
from modelfleet.monitoring.render import dump, render_monitoring
from modelfleet.monitoring.rules import monitoring_plan
from modelfleet.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
STACKS = ["local", "dev", "staging", "prod"]


@cache
def plans(stack: str):
    plan = build_plan(load_fleet(ROOT, stack))
    return plan, monitoring_plan(plan)


@pytest.mark.parametrize("stack", STACKS)
def test_rendered_rules_pass_promtool_check(stack, tmp_path):
    plan, mon = plans(stack)
    render_monitoring(plan, tmp_path)
    out = promtool.check_rules(tmp_path / "monitoring" / "rules.yaml")
    assert f"SUCCESS: {len(mon.alerts) + len(mon.records)} rules found" in out


@pytest.mark.parametrize("stack", STACKS)
def test_every_alert_has_a_firing_and_a_quiet_case(stack):
    _, mon = plans(stack)
    assert mon.alerts
    for rule in mon.alerts:
        def fires(case) -> bool:
            return any(set(rule.labels) <= set(labels) for labels in case.firing)
        assert any(fires(case) for case in rule.cases), rule.name
        assert any(not fires(case) for case in rule.cases), rule.name
        assert {"model", "owner", "severity"} <= dict(rule.labels).keys()


def test_promtool_unit_tests_of_every_alert_pass(tmp_path):
    """The rendered tests, on the rendered rules: prod has every kind of alert (GPU on both models, drift on
    sentiment). About a minute of promtool."""
    plan, mon = plans("prod")
    written = render_monitoring(plan, tmp_path)
    tests = [p for p in written if p.parent.name == "tests"]
    out = promtool.test_rules(*tests)
    assert out.count("SUCCESS") == len(tests)
    names = {t["alert_rule_test"][0]["alertname"] for p in tests for t in yaml.safe_load(p.read_text())["tests"]}
    assert names == {r.name for r in mon.alerts}
    kinds = {"ModelAvailabilityBudgetBurn", "ModelLatencyBudgetBurn", "TritonQueueTimeHigh", "TritonModelLoadFailing",
             "TritonReplicasPending", "GpuUnderused", "GpuSaturated", "GatewayRateLimiting", "ModelInputDriftPSI",
             "ModelInputDriftKS", "TritonInferenceFailures"}
    assert names == kinds


def test_a_broken_rule_fails_its_promtool_test(tmp_path):
    """Flip one comparison in the rendered rules: the generated tests must catch it."""
    _, mon = plans("local")
    rules = mon.rule_file()
    alert = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "TritonQueueTimeHigh")
    alert["expr"] = alert["expr"].replace(" > ", " < ")
    (tmp_path / "rules.yaml").write_text(dump(rules))
    quick = unit_tests(mon)[1]
    quick["tests"] = [t for t in quick["tests"] if t["alert_rule_test"][0]["alertname"] == "TritonQueueTimeHigh"]
    assert len(quick["tests"]) == 4  # two models, firing and quiet
    (tmp_path / "tests.yaml").write_text(dump(quick))
    with pytest.raises(promtool.PromtoolError, match="FAILED"):
        promtool.test_rules(tmp_path / "tests.yaml")


def _threshold(expr: str) -> float:
    values = {float(v) for v in re.findall(r"> ([0-9.e-]+)", expr)}
    assert len(values) == 1, expr
    return values.pop()


def test_burn_rate_thresholds_are_the_workbook_table():
    """Independent expectation: budget x (14.4, 6, 3, 1) on windows (1h/5m, 6h/30m, 1d/2h, 3d/6h), by hand."""
    _, mon = plans("prod")
    expected = {
        ("fraud-detector", "availability"): {"1h": 0.0144, "6h": 0.006, "1d": 0.003, "3d": 0.001},   # 99.9%
        ("sentiment", "availability"): {"1h": 0.072, "6h": 0.03, "1d": 0.015, "3d": 0.005},         # 99.5%
        ("fraud-detector", "latency"): {"1h": 0.144, "6h": 0.06, "1d": 0.03, "3d": 0.01},            # p99: 1%
        ("sentiment", "latency"): {"1h": 0.144, "6h": 0.06, "1d": 0.03, "3d": 0.01},
    }
    shorts = {"1h": "5m", "6h": "30m", "1d": "2h", "3d": "6h"}
    severities = {"1h": "page", "6h": "page", "1d": "ticket", "3d": "ticket"}
    burns = [r for r in mon.alerts if r.name.endswith("BudgetBurn")]
    assert len(burns) == 16
    for rule in burns:
        labels = dict(rule.labels)
        long = labels["long_window"]
        assert labels["short_window"] == shorts[long] and labels["severity"] == severities[long]
        assert _threshold(rule.expr) == pytest.approx(expected[(labels["model"], labels["slo"])][long])
        assert f"rate{long}{{" in rule.expr and f"rate{shorts[long]}{{" in rule.expr and "\nand\n" in rule.expr


def test_latency_is_measured_at_a_bucket_no_laxer_than_the_slo():
    _, mon = plans("prod")
    assert {mm.model: mm.latency_bucket_ms for mm in mon.models} == {"fraud-detector": 50, "sentiment": 100}
    assert any("sentiment" in w and "100 ms" in w for w in mon.warnings)
    with pytest.raises(ValueError, match="smallest latency bucket"):
        metrics.latency_bucket_ms(0.2)


def test_alertmanager_routes_each_owner_and_inlines_no_secret(tmp_path):
    plan, mon = plans("prod")
    config = alertmanager_config(mon, plan.dns_domain)
    (tmp_path / "am.yaml").write_text(dump(config))
    subprocess.run(["amtool", "check-config", str(tmp_path / "am.yaml")], check=True, capture_output=True)
    owners = {"payments-ml@example.com", "support-ml@example.com"}
    routes = {r["matchers"][0]: r for r in config["route"]["routes"]}
    for owner in owners:
        route = routes[f'owner="{owner}"']
        receiver = next(x for x in config["receivers"] if x["name"] == route["receiver"])
        assert receiver["email_configs"][0]["to"] == owner
    text = dump(config)
    assert not re.search(r"(?m)^\s*(smtp_auth_password|api_url|routing_key|url|password):", text)
    assert "smtp_auth_password_file:" in text


def test_extra_receivers_are_routed_and_continue_to_the_owner(project_copy):
    spec = project_copy / "models" / "sentiment.yaml"
    spec.write_text(spec.read_text().replace("  drift_detection: true", "  drift_detection: true\n"
                                                                       "  alert_routes: [support-oncall]"))
    plan = build_plan(load_fleet(project_copy, "prod"))
    config = alertmanager_config(monitoring_plan(plan), plan.dns_domain)
    first = config["route"]["routes"][0]
    assert first == {"receiver": "support-oncall", "matchers": ['model="sentiment"'], "continue": True}
    assert {"name": "support-oncall", "slack_configs": [
        {"api_url_file": "/etc/alertmanager/secrets/modelfleet-alertmanager/support-oncall", "send_resolved": True}]} \
        in config["receivers"]
    assert receiver_name("support-ml@example.com") in {r["receiver"] for r in config["route"]["routes"]}


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers outside label matchers, grouping clauses and durations that
    are not function calls."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(by|without|on|ignoring)\s*\([^)]*\)|\"[^\"]*\"", " ", expr)
    return {t for t, call in re.findall(r"(?<![0-9.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", bare)
            if not call and t not in {"and", "or", "unless"}}


def test_every_dashboard_query_parses_and_names_known_series(tmp_path):
    plan, mon = plans("prod")
    boards = dashboards(plan, mon)
    assert set(boards) == {"fleet", "model-fraud-detector", "model-sentiment"}
    queries = [(name, title, expr) for name, board in boards.items() for title, expr in panel_queries(board)]
    # Each query as a recording rule: promtool parses every expression.
    synthetic = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, _, expr) in enumerate(queries)]}]}
    (tmp_path / "q.yaml").write_text(dump(synthetic))
    assert f"SUCCESS: {len(queries)} rules found" in promtool.check_rules(tmp_path / "q.yaml")
    known = {r.name for r in mon.records} | set(metrics.TRITON_METRICS) | set(metrics.ENVOY_METRICS) | \
        set(metrics.DRIFT_METRICS) | {metrics.DCGM_GPU_UTIL}
    for name, title, expr in queries:
        names = metric_names(expr)
        assert names and names <= known, (name, title, names - known)
    titles = {t for _, t, _ in queries}
    assert {"Traffic", "Queue vs compute time per request", "Batch size (inferences per execution)",
            "GPU utilisation", "Input drift", "Cost per 1k inferences (plan's cost)"} <= titles


def test_dashboards_ship_as_configmaps_for_grafanas_sidecar():
    plan, mon = plans("prod")
    board = dashboards(plan, mon)["fleet"]
    cm = configmap("fleet", board, "monitoring")
    assert cm["metadata"]["labels"][SIDECAR_LABEL[0]] == "1"
    assert list(cm["data"]) == ["fleet.json"]


def test_local_dashboards_have_no_gpu_panel_and_cost_nothing():
    plan, mon = plans("local")
    board = dashboards(plan, mon)["model-fraud-detector"]
    titles = [t for t, _ in panel_queries(board)]
    assert "GPU utilisation" not in titles
    cost = next(e for t, e in panel_queries(board) if t.startswith("Cost"))
    assert cost.startswith("sum(modelfleet:plan_cost_usd:per_hour{")
    assert {r.expr for r in mon.records if r.name == "modelfleet:plan_cost_usd:per_hour"} == {"vector(0)"}


def test_the_cost_record_is_the_plans_hourly_cost_per_model():
    """Independent: the dev stack's fraud-detector runs its untuned minimum of 2 replicas, one L4 each, on
    g6.2xlarge nodes with one GPU: 2 x the catalogue's hourly price."""
    from modelfleet.catalogue import hardware

    plan, mon = plans("dev")
    price = hardware().classes["nvidia-l4"].on("aws").hourly_usd
    cost = {dict(r.labels)["model"]: float(r.expr[len("vector("):-1]) for r in mon.records
            if r.name == "modelfleet:plan_cost_usd:per_hour"}
    assert cost["fraud-detector"] == pytest.approx(2 * price, abs=1e-5)  # from the monthly cost, in cents


# --- in the clusters -------------------------------------------------------------------------------------------

from modelfleet import serving, versions  # noqa: E402
from modelfleet.monitoring import kubernetes as mk8s  # noqa: E402

RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_cluster_gets_the_stack_before_the_scaledobjects_that_query_it(stack, evaluated):
    plan, mon = plans(stack)
    resources = evaluated(stack).resources
    by_urn = {r.urn: r for r in resources}
    stacks = [r for r in resources if r.type == RELEASE and r.inputs["chart"] == "kube-prometheus-stack"]
    assert len(stacks) == len(plan.regions)
    for release in stacks:
        assert release.inputs["version"] == versions.KUBE_PROMETHEUS_STACK.version
        assert release.inputs["namespace"] == serving.PROMETHEUS_NAMESPACE
        spec = release.inputs["values"]["prometheus"]["prometheusSpec"]
        assert spec["ruleSelectorNilUsesHelmValues"] is False and spec["serviceMonitorSelectorNilUsesHelmValues"] is False
        assert release.inputs["values"]["alertmanager"]["alertmanagerSpec"]["secrets"] == ["modelfleet-alertmanager"]
    scaled = [r for r in resources if r.type == "kubernetes:keda.sh/v1alpha1:ScaledObject"]
    assert len(scaled) == sum(len(r.placements) for r in plan.regions)
    for obj in scaled:
        needed = [by_urn[d] for d in obj.dependencies if d in by_urn]
        releases = [d for d in needed if d.type == RELEASE and d.inputs["chart"] == "kube-prometheus-stack"]
        assert len(releases) == 1 and releases[0].provider == obj.provider
        for trigger in obj.inputs["spec"]["triggers"]:
            assert trigger["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
            # KEDA applies fallback only to AverageValue triggers.
            assert trigger["metricType"] == "AverageValue"
        queue = next(t for t in obj.inputs["spec"]["triggers"] if t["name"] == "queue-time")
        always_on = obj.inputs["spec"]["minReplicaCount"] > 0
        assert queue["metadata"]["ignoreNullValues"] == ("false" if always_on else "true")
        fallback = obj.inputs["spec"]["fallback"]
        assert fallback["failureThreshold"] >= 1 and 1 <= fallback["replicas"] <= obj.inputs["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_model_has_its_prometheusrule_with_slo_alerts_declared_after_the_chart(stack, evaluated):
    plan, mon = plans(stack)
    resources = evaluated(stack).resources
    by_urn = {r.urn: r for r in resources}
    rules = [r for r in resources if r.type == "kubernetes:monitoring.coreos.com/v1:PrometheusRule"]
    assert len(rules) == len(plan.regions) * (len(plan.models) + 1)
    for rule in rules:
        serving.validate_manifest(rule.inputs, "1.33")
        assert any(by_urn[d].type == RELEASE for d in rule.dependencies if d in by_urn)
        kube = rule.inputs["metadata"]["labels"].get("modelfleet.io/model")
        alerts = [x for g in rule.inputs["spec"]["groups"] for x in g["rules"] if "alert" in x]
        if kube:
            model = next(m.name for m in plan.models if m.kube_name == kube)
            assert {x["labels"]["slo"] for x in alerts if "slo" in x["labels"]} == {"availability", "latency"}
            assert {x["labels"]["model"] for x in alerts} == {model}
    monitors = [r for r in resources if r.type.endswith(("ServiceMonitor", "PodMonitor"))]
    assert len(monitors) == 4 * len(plan.regions)  # Triton, Envoy proxies, ext_proc, DCGM
    for monitor in monitors:
        serving.validate_manifest(monitor.inputs, "1.33")
    maps = [r for r in resources if r.type == "kubernetes:core/v1:ConfigMap"
            and r.inputs["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(maps) == len(plan.regions) * (1 + len(plan.models))


def test_prometheusrule_schema_rejects_what_the_crd_rejects():
    plan, mon = plans("prod")
    rule = mk8s.prometheus_rules(mon)[1]
    serving.validate_manifest(rule, "1.33")
    bad = yaml.safe_load(yaml.safe_dump(rule))
    bad["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(serving.ManifestError, match="for"):
        serving.validate_manifest(bad, "1.33")
    bad = yaml.safe_load(yaml.safe_dump(rule))
    bad["spec"]["groups"][0]["rules"][0]["severity"] = "page"
    with pytest.raises(serving.ManifestError, match="severity"):
        serving.validate_manifest(bad, "1.33")


def test_monitor_schemas_reject_what_the_crds_reject():
    """ServiceMonitor and PodMonitor against prometheus-operator's CRD schemas (vendored, pruned): a typo'd field,
    a missing required field, a bad duration and a numeric port name are refused, as the API server would."""
    plan, _ = plans("prod")
    region = next(r for r in plan.regions if r.cloud == "aws")
    monitors = [o for o in mk8s.region_monitoring_objects(plan, region) if o["kind"] in ("ServiceMonitor", "PodMonitor")]
    assert {o["kind"] for o in monitors} == {"ServiceMonitor", "PodMonitor"}
    for obj in monitors:
        serving.validate_manifest(obj, "1.33")
    service = next(o for o in monitors if o["kind"] == "ServiceMonitor")
    pod = next(o for o in monitors if o["kind"] == "PodMonitor")
    cases = [
        (service, lambda s: s.pop("endpoints"), "endpoints"),
        (service, lambda s: s["endpoints"][0].update(interval="15 seconds"), "interval"),
        (service, lambda s: s["endpoints"][0].update(port=8002), "port"),
        (pod, lambda s: s.update(podMetricEndpoints=s.pop("podMetricsEndpoints")), "podMetricEndpoints"),
        (pod, lambda s: s.pop("selector"), "selector"),
    ]
    for obj, breaks, field in cases:
        bad = yaml.safe_load(yaml.safe_dump(obj))
        breaks(bad["spec"])
        with pytest.raises(serving.ManifestError, match=field):
            serving.validate_manifest(bad, "1.33")


def test_scaledobject_without_failure_threshold_is_rejected():
    plan, _ = plans("prod")
    region = plan.regions[0]
    obj = serving.scaled_object(plan, serving.workload(plan, region, region.placements[0]))
    serving.validate_manifest(obj, region.kubernetes_version)
    del obj["spec"]["fallback"]["failureThreshold"]
    with pytest.raises(serving.ManifestError, match="failureThreshold"):
        serving.validate_manifest(obj, region.kubernetes_version)


def test_the_keda_query_scales_with_replicas_and_is_empty_without_kube_state_metrics(tmp_path):
    """promtool evaluates the ScaledObject's query: 5 ms of queue per request on 3 replicas reads 15000 (the
    AverageValue target then gives ceil(3 x 5000 / target), the proportional rule); without kube-state-metrics
    the result is empty, not NaN (with ignoreNullValues false, a scaler error: KEDA's fallback)."""
    plan, _ = plans("prod")
    region = plan.regions[0]
    w = serving.workload(plan, region, next(p for p in region.placements if p.model == "fraud-detector"))
    lbl = f'namespace="{w.namespace}",model="fraud-detector",version="1"'
    series = [{"series": f"nv_inference_queue_duration_us{{{lbl}}}", "values": "0+3000000x10"},
              {"series": f"nv_inference_request_success{{{lbl}}}", "values": "0+600x10"}]
    replicas = {"series": f'kube_deployment_status_replicas{{namespace="{w.namespace}",deployment="{w.name}"}}',
                "values": "3x10"}
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": series + [replicas], "promql_expr_test": [
            {"expr": serving.queue_time_query(w), "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 15000}]}]},
        {"interval": "1m", "input_series": series, "promql_expr_test": [
            {"expr": serving.queue_time_query(w), "eval_time": "5m", "exp_samples": []}]},
    ]}
    (tmp_path / "keda.yaml").write_text(dump(tests))
    assert "SUCCESS" in promtool.test_rules(tmp_path / "keda.yaml")


def test_triton_traces_at_the_specs_rate_and_an_otel_collector_runs_in_each_cluster(evaluated):
    plan, _ = plans("prod")
    region = plan.regions[0]
    w = serving.workload(plan, region, region.placements[0])
    args = serving.triton_args(w)
    assert "--trace-config=mode=opentelemetry" in args and "--trace-config=rate=100" in args  # 0.01 -> 1 in 100
    assert f"--trace-config=opentelemetry,url={serving.OTEL_TRACES_URL}" in args
    assert serving.trace_args("m", 0) == [] and "--trace-config=rate=4" in serving.trace_args("m", 0.25)
    releases = [r for r in evaluated("prod").resources
                if r.type == RELEASE and r.inputs["chart"] == "opentelemetry-collector"]
    assert len(releases) == len(plan.regions)
    assert all(r.inputs["values"]["image"]["repository"] and r.inputs["version"] ==
               versions.OPENTELEMETRY_COLLECTOR.version for r in releases)


def test_a_triton_name_that_is_no_dns_label_gets_valid_objects_and_literal_matchers(project_copy):
    """Triton names may hold `_` and `.`: objects use the Kubernetes name, regexes match the name literally."""
    rename_sentiment(project_copy, "sentiment_v2.1")
    plan = build_plan(load_fleet(project_copy, "prod"))
    mon = monitoring_plan(plan)
    region = plan.regions[0]
    rules = [o for o in mk8s.region_monitoring_objects(plan, region) if o["kind"] == "PrometheusRule"]
    for obj in rules:
        serving.validate_manifest(obj, region.kubernetes_version)
    model = plan.model("sentiment_v2.1")
    assert any(o["metadata"]["labels"].get("modelfleet.io/model") == model.kube_name for o in rules)
    exprs = " ".join(r.expr for r in mon.records + mon.alerts)
    # The gateway's clusters: locally named after Triton's name, on Envoy Gateway after the route's (Kubernetes) name.
    assert f"triton-({model.kube_name}|sentiment_v2[.]1)(/.*)?" in exprs and f"triton-{model.kube_name}-[a-z0-9]+" in exprs


def rename_sentiment(project: Path, name: str) -> None:
    """The example's sentiment model under a Triton name Kubernetes cannot use as is (prod stack)."""
    spec = project / "models" / "sentiment.yaml"
    renamed = project / "models" / f"{name}.yaml"
    spec.rename(renamed)
    renamed.write_text(renamed.read_text().replace("name: sentiment", f"name: {name}")
                       .replace("/sentiment\n", f"/{name}\n").replace("/sentiment,", f"/{name},")
                       .replace("/sentiment}", f"/{name}}}"))
    stack = project / "stacks" / "Pulumi.prod.yaml"
    stack.write_text(stack.read_text().replace("sentiment]", f"{name}]"))
