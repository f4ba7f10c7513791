"""The local stack's monitoring, end to end: real Prometheus 2.42 and Alertmanager 0.25 scraping a real Triton
and the gateway's real Envoy, with exactly the rules `modelfleet render` writes (evaluated every second here;
windows and `for:` are the rendered ones)."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway.envoy_config import LocalPorts
from modelfleet.gateway.local import LocalGateway
from modelfleet.cli_drift import build_profile
from modelfleet.loader import load_fleet, load_model
from modelfleet.local import build_local_repository
from modelfleet.monitoring import metrics
from modelfleet.monitoring.dashboards import dashboards, panel_queries
from modelfleet.monitoring.drift import profile_path
from modelfleet.monitoring.local import LocalMonitoring, Targets
from modelfleet.monitoring.rules import monitoring_plan
from modelfleet.plan import build_plan
from modelfleet.serving import namespace_name, queue_time_average_query
from modelfleet.triton.runtime import TritonServer, free_ports
from tests.test_monitoring import metric_names
from tests.project import copy_project

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FRAUD = {"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.5] * 32}]}
SENTIMENT = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a fine product"]}]}


REFERENCE = [f"great product, works well {i % 13}" for i in range(400)]
DRIFTED = "refund demanded: the parcel arrived broken twice and support never answered my emails"


def _project(root: Path) -> Path:
    """The example project; sentiment samples every request into windows of 100 (so a test fills one), with a
    reference profile of short positive reviews; rate limits above what the tests send."""
    copy_project(root, link_artefacts=True)
    spec = root / "models" / "sentiment.yaml"  # fraud-detector allows 2000/s already
    text = spec.read_text()
    assert "\ngateway:\n" in text and "rate_limit" not in text
    spec.write_text(text.replace("\ngateway:\n", "\ngateway:\n  rate_limit: {requests_per_second: 1000}\n"))
    spec.write_text(spec.read_text().replace("  drift_detection: true", "  drift_detection: true\n"
                                             "  drift_sample_rate: 1\n  drift_window: 100"))
    reference = root / "reference.txt"
    reference.write_text("\n".join(REFERENCE))
    profile = build_profile(load_model(spec), reference)
    profile_path(root / "models", "sentiment").write_text(profile.to_json())
    return root


class Stack:
    def __init__(self, plan, triton, gateway, monitoring, key):
        self.plan, self.triton, self.gateway, self.monitoring, self.key = plan, triton, gateway, monitoring, key

    def infer(self, model: str, body: dict) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway.ports.http, timeout=10)
        try:
            conn.request("POST", f"/v2/models/{model}/infer", json.dumps(body), {"x-api-key": self.key})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def wait_for(self, check, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(1)
        pytest.fail(f"{what} within {timeout_s:.0f} s", pytrace=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, triton_install):
    root = _project(tmp_path_factory.mktemp("monitoring-project"))
    plan = build_plan(load_fleet(root, "local"))
    repository = build_local_repository(plan, root, root / "build" / "repository")
    th, tg, tm, http_, grpc, admin, extproc, drift, prom, am = free_ports(10)
    ports = LocalPorts(http=http_, grpc=grpc, admin=admin, triton_http=th, triton_grpc=tg, extproc=extproc,
                       extproc_metrics=drift)
    key_path = keyfile.key_file(root, "local")
    # Before the gateway starts, so its first key files hold it (a key made later reaches Envoy by a file watch,
    # milliseconds after `create` returns: a request in between is refused).
    key, _ = keyfile.create(key_path, "monitoring-test", ["infer:*"])
    with TritonServer(repository, th, tg, tm) as triton, \
            LocalGateway(plan.gateway, ports, root, "local", key_path, root / "gateway") as gateway, \
            LocalMonitoring(plan, Targets(tm, admin, drift), prom, am, root / "monitoring",
                            interval_s=1) as monitoring:
        yield Stack(plan, triton, gateway, monitoring, key)


def test_every_series_the_dashboards_and_alerts_read_is_scraped(stack):
    """Against the real scrape: what the local stack exports (Triton, Envoy) covers every raw metric the rules
    and dashboards name, apart from the sources that exist only in the clusters or come with drift sampling."""
    for _ in range(20):
        assert stack.infer("fraud-detector", FRAUD) == 200
        assert stack.infer("sentiment", SENTIMENT) == 200
    mon = monitoring_plan(stack.plan)
    records = {r.name for r in mon.records}
    exprs = [r.expr for r in mon.records + mon.alerts] + [
        e for board in dashboards(stack.plan, mon).values() for _, e in panel_queries(board)]
    wanted = set().union(*(metric_names(e) for e in exprs)) - records
    elsewhere = {metrics.KSM_POD_PHASE, metrics.KSM_RESTARTS, metrics.DCGM_GPU_UTIL,  # cluster-only exporters
                 metrics.ENVOY_RATELIMIT_OVER}  # the global rate limit filter (Envoy Gateway); local is local
    must = wanted - elsewhere
    assert {metrics.ENVOY_RQ_XX, metrics.ENVOY_RQ_TIME_BUCKET, metrics.TRITON_QUEUE_US, metrics.DRIFT_PSI} <= must
    names = stack.wait_for(lambda: (lambda got: got if must <= got else None)(stack.monitoring.metric_names()),
                           30, f"Prometheus scraping {sorted(must - stack.monitoring.metric_names())}")
    assert must <= names
    # The gateway's series carry the model the recording rules select on.
    def rate():
        assert stack.infer("sentiment", SENTIMENT) == 200
        got = stack.monitoring.query('modelfleet:gateway_requests:rate5m{model="sentiment"}')
        return got if got and float(got[0]["value"][1]) > 0 else None
    assert float(stack.wait_for(rate, 30, "a gateway request rate for sentiment")[0]["value"][1]) > 0


def test_the_keda_queue_query_returns_a_number(stack):
    query = queue_time_average_query(namespace_name(stack.plan), "fraud-detector")

    def answer():
        assert stack.infer("fraud-detector", FRAUD) == 200
        return stack.monitoring.query(query)
    result = stack.wait_for(answer, 30, "the KEDA queue-time query answering")
    value = float(result[0]["value"][1])
    assert value >= 0 and value == value  # a number, not NaN


def test_drifted_traffic_through_the_gateway_fires_the_drift_alert(stack):
    """Reviews unlike the reference profile, sent through the gateway: the inspection service samples them, its
    PSI on the text's length and vocabulary passes the spec's threshold, and the rendered alert fires."""
    def psi_alerts():
        return [a for a in stack.monitoring.alerts() if a["labels"].get("alertname") == "ModelInputDriftPSI"
                and a["state"] == "firing"]
    assert not psi_alerts()
    for _ in range(110):
        assert stack.infer("sentiment", {**SENTIMENT, "inputs": [{**SENTIMENT["inputs"][0], "data": [DRIFTED]}]}) == 200
    alerts = stack.wait_for(psi_alerts, 30, "ModelInputDriftPSI firing for sentiment")
    assert {a["labels"]["model"] for a in alerts} == {"sentiment"}
    assert {a["labels"]["feature"] for a in alerts} <= {"text.length", "text.vocabulary"}
    value = stack.monitoring.query('modelfleet_drift_psi{model="sentiment",feature="text.vocabulary"}')
    assert float(value[0]["value"][1]) > stack.plan.model("sentiment").monitoring.drift_psi_threshold


def test_a_killed_triton_fires_the_fast_availability_burn_alert(stack):
    """Triton killed behind the gateway: every answer is a 5xx, both windows of the 1h/5m pair pass 14.4x the
    budget at once, and after the rule's `for: 1m` the page fires in Prometheus and reaches Alertmanager."""
    for _ in range(10):
        assert stack.infer("fraud-detector", FRAUD) == 200
    stack.triton.stop()

    def firing():
        for _ in range(5):
            assert stack.infer("fraud-detector", FRAUD) >= 500
        return [a for a in stack.monitoring.alerts()
                if a["labels"].get("alertname") == "ModelAvailabilityBudgetBurn" and a["state"] == "firing"
                and a["labels"].get("model") == "fraud-detector" and a["labels"].get("long_window") == "1h"]
    alerts = stack.wait_for(firing, 150, "ModelAvailabilityBudgetBurn (1h/5m) firing for fraud-detector")
    assert alerts[0]["labels"]["severity"] == "page"
    assert alerts[0]["labels"]["owner"] == "payments-ml@example.com"
    received = stack.wait_for(lambda: [a for a in stack.monitoring.alertmanager_alerts()
                                       if a["labels"].get("alertname") == "ModelAvailabilityBudgetBurn"],
                              30, "Alertmanager receiving the alert")
    assert received[0]["receivers"][0]["name"] == "owner-payments-ml-example-com"


def test_triton_accepts_the_rendered_trace_config(tmp_path, triton_install):
    """The Deployment's tracing flags, on the real server: OpenTelemetry mode at the spec's rate (1 in 100)."""
    from modelfleet.serving import OTEL_TRACES_URL, trace_args

    plan = build_plan(load_fleet(ROOT, "local"))
    repository = build_local_repository(plan, ROOT, tmp_path / "repository")
    rate = plan.model("fraud-detector").monitoring.trace_sample_rate
    # The collector's in-cluster address does not resolve here; a closed local port takes its place.
    args = [a.replace(OTEL_TRACES_URL, "http://127.0.0.1:9/v1/traces") for a in trace_args("fraud-detector", rate)]
    http_, grpc_, metrics_ = free_ports(3)
    with TritonServer(repository, http_, grpc_, metrics_, extra_args=args) as triton:
        conn = http.client.HTTPConnection("127.0.0.1", http_, timeout=5)
        conn.request("GET", "/v2/trace/setting")
        setting = json.loads(conn.getresponse().read())
        conn.close()
    assert setting["trace_mode"] == "opentelemetry"
    assert setting["trace_rate"] == str(round(1 / rate)) == "100"
    assert setting["trace_level"] == ["TIMESTAMPS"]
