"""`modelfleet serve --stack local`: the plan's own configs on a real tritonserver, until stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from modelfleet.loader import load_fleet
from modelfleet.triton.runtime import free_ports

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def start_serve(root: Path = ROOT):
    """`modelfleet serve --stack local` on free ports, as a process; returns it once Triton is ready."""
    http, grpc, metrics, gw_http, gw_grpc, gw_extproc, gw_admin, prom, am, drift = free_ports(10)
    process = subprocess.Popen(
        [sys.executable, "-m", "modelfleet.cli", "serve", "--stack", "local", "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--root", str(root),
         "--gateway-ports", f"{gw_http},{gw_grpc},{gw_extproc},{gw_admin}",
         "--monitoring-ports", f"{prom},{am},{drift}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:  # the gateway starts after Triton: its health route answering means both are up
            urllib.request.urlopen(f"http://127.0.0.1:{gw_http}/v2/health/ready", timeout=1)
            break
        except OSError:
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("modelfleet serve did not become ready in 90 s")
    return {"http": http, "metrics": metrics, "process": process, "gateway_http": gw_http, "prometheus": prom}


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    return process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(triton_install):
    server = start_serve()
    yield server
    stop(server["process"])


def test_metadata_matches_every_model_spec(served):
    fleet = load_fleet(ROOT, "local")
    for spec in fleet.models:
        meta = _get(f"http://127.0.0.1:{served['http']}/v2/models/{spec.name}")
        batch = [-1] if spec.max_batch_size else []
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == \
            [(t.name, t.dtype, batch + t.dims) for t in spec.inputs]
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == \
            [(t.name, t.dtype, batch + t.dims) for t in spec.outputs]


def test_served_config_is_the_rendered_one(served):
    from modelfleet.plan import build_plan
    from modelfleet.render import model_configs
    from modelfleet.triton.config import parse_config

    configs = model_configs(build_plan(load_fleet(ROOT, "local")))
    live = _get(f"http://127.0.0.1:{served['http']}/v2/models/fraud-detector/config")
    rendered = parse_config(configs[("fraud-detector", "cpu")], "rendered")
    assert live["max_batch_size"] == rendered.max_batch_size
    assert int(live["dynamic_batching"]["max_queue_delay_microseconds"]) == \
        rendered.dynamic_batching.max_queue_delay_microseconds
    assert live["instance_group"][0]["count"] == rendered.instance_group[0].count


def _infer(port: int, model: str, name: str, datatype: str, rows: list, shape: list) -> np.ndarray:
    body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": rows}]}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        out = json.loads(response.read())["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def test_every_model_answers_like_running_it_directly(served, examples):
    rows = np.random.default_rng(3).normal(size=(4, 32)).astype(np.float32)
    fraud = _infer(served["http"], "fraud-detector", "features", "FP32", rows.ravel().tolist(), list(rows.shape))
    np.testing.assert_allclose(fraud, examples.fraud_reference(rows), rtol=1e-5, atol=1e-6)
    texts = ["I love it, great and fast", "terrible, broken, I want a refund", "it arrived on tuesday"]
    scores = _infer(served["http"], "sentiment", "text", "BYTES", texts, [len(texts), 1])
    np.testing.assert_allclose(scores, examples.sentiment_reference(texts), rtol=1e-5, atol=1e-6)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{served['metrics']}/metrics", timeout=5).read().decode()
    for model in ("fraud-detector", "sentiment"):
        assert f'nv_inference_request_success{{model="{model}",version="1"}}' in metrics


def test_serve_runs_prometheus_over_triton_and_the_gateway(served):
    """`serve`'s monitoring scrapes Triton, Envoy and the inspection service's drift gauges, with the rendered rules."""
    deadline = time.monotonic() + 60
    health: dict = {}
    while time.monotonic() < deadline:
        try:
            targets = _get(f"http://127.0.0.1:{served['prometheus']}/api/v1/targets")["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            if health == {"triton": "up", "gateway": "up", "gateway-inspection": "up"}:
                break
        except OSError:
            pass
        time.sleep(1)
    assert health == {"triton": "up", "gateway": "up", "gateway-inspection": "up"}
    groups = _get(f"http://127.0.0.1:{served['prometheus']}/api/v1/rules")["data"]["groups"]
    assert any(r["name"] == "ModelAvailabilityBudgetBurn" for g in groups for r in g["rules"])


def test_ctrl_c_stops_cleanly(triton_install):
    server = start_serve()
    assert stop(server["process"]) == 0
    output = server["process"].stdout.read()
    assert "Triton ready" in output and f"HTTP    127.0.0.1:{server['http']}" in output and "stopped" in output
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server['http']}/v2/health/live", timeout=2)


def _infer_via(port: int, headers: dict) -> int:
    body = json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["great"]}]})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/sentiment/infer", data=body.encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_serve_puts_the_gateway_in_front_with_a_dev_key_printed_once(project_copy):
    import stat

    artefacts = project_copy / "build" / "model-artifacts"
    if not artefacts.exists():
        artefacts.parent.mkdir(exist_ok=True)
        artefacts.symlink_to((ROOT / "build" / "model-artifacts").resolve())
    server = start_serve(project_copy)
    try:
        dev = project_copy / ".modelfleet" / "local" / "dev-api-key"
        assert stat.S_IMODE(dev.stat().st_mode) == 0o600
        key = dev.read_text().strip()
        assert _infer_via(server["gateway_http"], {"x-api-key": key}) == 200
        assert _infer_via(server["gateway_http"], {}) == 401
    finally:
        assert stop(server["process"]) == 0
    first = server["process"].stdout.read()
    assert first.count(key) == 1 and "gateway ready" in first
    again = start_serve(project_copy)
    assert stop(again["process"]) == 0
    second = again["process"].stdout.read()
    assert key not in second and "dev API key in" in second


def test_a_broken_spec_is_stopped_before_triton_starts(project_copy):
    spec = project_copy / "models" / "sentiment.yaml"
    spec.write_text(spec.read_text().replace("max_batch_size: 64", "max_batch_size: 64\nbatching: {preferred_batch_sizes: [128]}"))
    result = subprocess.run([sys.executable, "-m", "modelfleet.cli", "serve", "--stack", "local", "--root",
                             str(project_copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models/sentiment.yaml:15 batching.preferred_batch_sizes: [128] exceed max_batch_size 64" in result.stderr
    assert "Triton ready" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_serve_refuses_a_cloud_stack():
    result = subprocess.run([sys.executable, "-m", "modelfleet.cli", "serve", "--stack", "prod", "--root", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "serve runs the local environment on this machine, not prod" in result.stderr
    assert "Traceback" not in result.stderr
