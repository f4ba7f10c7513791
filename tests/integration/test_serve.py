"""`modelfleet serve --stack local`: the plan's own configs on a real tritonserver, until stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
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


@pytest.fixture(scope="module")
def served(triton_install):
    http, grpc, metrics = free_ports(3)
    process = subprocess.Popen(
        [sys.executable, "-m", "modelfleet.cli", "serve", "--stack", "local", "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--root", str(ROOT)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1)
            break
        except OSError:
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("modelfleet serve did not become ready in 90 s")
    yield {"http": http, "metrics": metrics, "process": process}
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


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


def test_inference_over_http_and_metrics(served, examples):
    rows = np.random.default_rng(3).normal(size=(4, 32)).astype(np.float32)
    body = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.ravel().tolist()}]}
    request = urllib.request.Request(f"http://127.0.0.1:{served['http']}/v2/models/fraud-detector/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        out = json.loads(response.read())["outputs"][0]
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), examples.fraud_reference(rows),
                               rtol=1e-5, atol=1e-6)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{served['metrics']}/metrics", timeout=5).read().decode()
    assert 'nv_inference_request_success{model="fraud-detector",version="1"}' in metrics


def test_ctrl_c_stops_cleanly(served):
    process = served["process"]
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert "stopped" in process.stdout.read()


def test_serve_refuses_a_cloud_stack():
    result = subprocess.run([sys.executable, "-m", "modelfleet.cli", "serve", "--stack", "prod", "--root", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "serve runs the local environment on this machine, not prod" in result.stderr
    assert "Traceback" not in result.stderr
