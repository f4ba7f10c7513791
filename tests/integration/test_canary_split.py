"""The canary split end to end: real Envoy (the local gateway, with its auth and inspection services), a real Triton
for the stable version and a second real Triton for the canary (`--model-config-name=canary` over the same
repository, as the canary Deployment runs), N requests through the gateway over HTTP and over gRPC, and the split
read back from Triton's own per-version counters (`nv_inference_request_success{model,version}` on each server's
metrics port), within a binomial tolerance."""

from __future__ import annotations

import http.client
import json
import math
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway.envoy_config import LocalPorts
from modelfleet.gateway.local import LocalGateway
from modelfleet.gateway.plan import MODEL_HEADER
from modelfleet.loader import load_fleet
from modelfleet.local import build_local_repository, canary_triton_args
from modelfleet.plan import build_plan
from modelfleet.triton.runtime import TritonServer, free_ports

pytestmark = pytest.mark.integration

MODEL, STABLE, CANARY, PERCENT = "fraud-detector", 1, 2, 20
HTTP_REQUESTS, GRPC_REQUESTS = 500, 300
SIGMAS = 4.5  # a correct split fails this about once in 150,000 runs; a split of 10% or 30% fails it every time


def _counters(port: int) -> dict[str, float]:
    """nv_inference_request_success of MODEL per version, from a Triton's metrics port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("nv_inference_request_success{") and f'model="{MODEL}"' in line:
            version = line.split('version="', 1)[1].split('"', 1)[0]
            out[version] = float(line.rsplit(" ", 1)[1])
    return out


def _within_binomial(canary_count: float, n: int, percent: int) -> tuple[bool, str]:
    mean, sd = n * percent / 100, math.sqrt(n * percent / 100 * (1 - percent / 100))
    low, high = mean - SIGMAS * sd, mean + SIGMAS * sd
    return low <= canary_count <= high, f"{canary_count:.0f} of {n} to the canary, expected {low:.0f}-{high:.0f}"


@pytest.fixture(scope="module")
def split_stack(tmp_path_factory, triton_install):
    from tests.project import copy_project

    root = copy_project(tmp_path_factory.mktemp("canary-project"))  # artefacts copied: the canary's is added
    source = root / "build" / "model-artifacts" / MODEL
    shutil.copytree(source / str(STABLE), source / str(CANARY))
    spec = root / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(spec.read_text())
    data["rollout"] = {"strategy": "canary", "canary_version": CANARY, "canary_percent": PERCENT}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))

    plan = build_plan(load_fleet(root, "local"))
    repository = build_local_repository(plan, root, root / "build" / "repository")
    th, tg, tm, ch, cg, cm, http_, grpc, admin, extproc = free_ports(10)
    ports = LocalPorts(http=http_, grpc=grpc, admin=admin, triton_http=th, triton_grpc=tg, extproc=extproc,
                       canary_triton_http=ch, canary_triton_grpc=cg)
    key_path = keyfile.key_file(root, "local")
    api_key, _ = keyfile.create(key_path, "canary-test", ["infer:*"])
    with TritonServer(repository, th, tg, tm) as stable, \
            TritonServer(repository, ch, cg, cm, models=[MODEL], extra_args=canary_triton_args(plan)) as canary, \
            LocalGateway(plan.gateway, ports, root, "local", key_path, root / "gateway") as gateway:
        yield {"stable": stable, "canary": canary, "stable_metrics": tm, "canary_metrics": cm, "gateway": gateway,
               "key": api_key, "repository": repository}


def test_each_triton_loads_only_its_version(split_stack):
    """One repository holds both versions; config.pbtxt loads the stable's, configs/canary.pbtxt the canary's."""
    repository = split_stack["repository"] / MODEL
    assert (repository / str(STABLE)).is_dir() and (repository / str(CANARY)).is_dir()
    for server, loaded, absent in (("stable", STABLE, CANARY), ("canary", CANARY, STABLE)):
        port = split_stack[server].http_port
        for version, want in ((loaded, 200), (absent, 400)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", f"/v2/models/{MODEL}/versions/{version}/ready")
            status = conn.getresponse().status
            conn.close()
            assert (status == 200) == (want == 200), (server, version, status)


def test_http_requests_split_by_weight_per_triton_version_counters(split_stack):
    before_stable, before_canary = _counters(split_stack["stable_metrics"]), _counters(split_stack["canary_metrics"])
    body = json.dumps({"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": [0.5] * 32}]})
    conn = http.client.HTTPConnection("127.0.0.1", split_stack["gateway"].ports.http, timeout=10)
    statuses, request_ids = [], []
    try:
        for _ in range(HTTP_REQUESTS):
            conn.request("POST", f"/v2/models/{MODEL}/infer", body=body,
                         headers={"x-api-key": split_stack["key"], "content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            request_ids.append(response.getheader("x-request-id"))
    finally:
        conn.close()
    assert statuses.count(200) == HTTP_REQUESTS, sorted(set(statuses))
    stable, canary = _counters(split_stack["stable_metrics"]), _counters(split_stack["canary_metrics"])
    to_stable = stable.get(str(STABLE), 0) - before_stable.get(str(STABLE), 0)
    to_canary = canary.get(str(CANARY), 0) - before_canary.get(str(CANARY), 0)
    assert str(CANARY) not in stable and str(STABLE) not in canary, (stable, canary)
    assert to_stable + to_canary == HTTP_REQUESTS, (to_stable, to_canary)
    ok, why = _within_binomial(to_canary, HTTP_REQUESTS, PERCENT)
    print(why)
    assert ok, why
    # The audit line names the version that answered: its counts are the two Tritons' own.
    audited = _audit_versions(split_stack["gateway"].audit_path, set(request_ids))
    assert audited == {str(STABLE): to_stable, str(CANARY): to_canary}, (audited, to_stable, to_canary)


def _audit_versions(path, request_ids: set[str], timeout_s: float = 15.0) -> Counter:
    """{version: lines} over the audit lines of `request_ids`, once all are written (Envoy flushes every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        mine = [line for line in lines if line["request_id"] in request_ids]
        if len(mine) >= len(request_ids) or time.monotonic() > deadline:
            return Counter(line["version"] for line in mine)
        time.sleep(0.25)


def test_grpc_requests_split_by_the_same_weights(split_stack):
    """gRPC carries the version inside the body, where no route reads it: the split is by upstream, as in the cloud."""
    import tritonclient.grpc as grpcclient

    before = _counters(split_stack["canary_metrics"]).get(str(CANARY), 0)
    before_stable = _counters(split_stack["stable_metrics"]).get(str(STABLE), 0)
    client = grpcclient.InferenceServerClient(split_stack["gateway"].grpc_url)
    features = grpcclient.InferInput("features", [1, 32], "FP32")
    features.set_data_from_numpy(np.full((1, 32), 0.5, dtype=np.float32))
    headers = {"x-api-key": split_stack["key"], MODEL_HEADER: MODEL}
    for _ in range(GRPC_REQUESTS):
        result = client.infer(MODEL, [features], headers=headers)
        assert result.as_numpy("probabilities").shape == (1, 2)
    client.close()
    # Triton counts a success after the backend returns, which can be just after the client has its answer: give
    # the last requests' counters a moment instead of reading them once.
    deadline = time.monotonic() + 5
    while True:
        to_canary = _counters(split_stack["canary_metrics"]).get(str(CANARY), 0) - before
        to_stable = _counters(split_stack["stable_metrics"]).get(str(STABLE), 0) - before_stable
        if to_canary + to_stable >= GRPC_REQUESTS or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert to_canary + to_stable == GRPC_REQUESTS, (to_stable, to_canary)
    ok, why = _within_binomial(to_canary, GRPC_REQUESTS, PERCENT)
    print(why)
    assert ok, why
