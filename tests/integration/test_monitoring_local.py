"""The local stack's monitoring, end to end: real Prometheus 2.42 and Alertmanager 0.25 scraping a real Triton
and the gateway's real Envoy, with exactly the rules `modelfleet render` writes (evaluated every second here;
windows and `for:` are the rendered ones)."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path

import pytest

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway.envoy_config import LocalPorts
from modelfleet.gateway.local import LocalGateway
from modelfleet.loader import load_fleet
from modelfleet.local import build_local_repository
from modelfleet.monitoring import metrics
from modelfleet.monitoring.dashboards import dashboards, panel_queries
from modelfleet.monitoring.local import LocalMonitoring, Targets
from modelfleet.monitoring.rules import monitoring_plan
from modelfleet.plan import build_plan
from modelfleet.serving import namespace_name, queue_time_average_query
from modelfleet.triton.runtime import TritonServer, free_ports
from tests.test_monitoring import metric_names

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FRAUD = {"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.5] * 32}]}
SENTIMENT = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["a fine product"]}]}


def _project(root: Path) -> Path:
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, root / name)
    for folder in ("models", "stacks"):
        shutil.copytree(ROOT / folder, root / folder)
    (root / "build").mkdir()
    (root / "build" / "model-artifacts").symlink_to((ROOT / "build" / "model-artifacts").resolve())
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
    th, tg, tm, http_, grpc, admin, authz, extproc, prom, am = free_ports(10)
    ports = LocalPorts(http=http_, grpc=grpc, admin=admin, triton_http=th, triton_grpc=tg, authz=authz,
                       extproc=extproc)
    key_path = keyfile.key_file(root, "local")
    with TritonServer(repository, th, tg, tm) as triton, \
            LocalGateway(plan.gateway, ports, root, "local", key_path, root / "gateway") as gateway, \
            LocalMonitoring(plan, Targets(tm, admin), prom, am, root / "monitoring", interval_s=1) as monitoring:
        key, _ = keyfile.create(key_path, "monitoring-test", ["infer:*"])
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
                 metrics.ENVOY_RATELIMIT_OVER,  # the global rate limit filter (Envoy Gateway); local is local
                 *metrics.DRIFT_METRICS}  # drift gauges: not exported by the inspection service yet
    must = wanted - elsewhere
    assert {metrics.ENVOY_RQ_XX, metrics.ENVOY_RQ_TIME_BUCKET, metrics.TRITON_QUEUE_US} <= must
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
