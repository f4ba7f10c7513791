"""Two local "regions" (a real Triton and a real Envoy gateway each, on free ports) joined by the failover
configuration of modelfleet.routing.envoy_failover: killing region A's Triton keeps A's clients served through
region B over mutual TLS; restarting it brings A's traffic home. Errors and time to recover are measured and
printed; the bound on errors is asserted (no timing asserts)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway.envoy_config import LocalPorts
from modelfleet.loader import load_fleet
from modelfleet.local import build_local_repository
from modelfleet.plan import build_plan
from modelfleet.routing.envoy_failover import SETTINGS, peer_name
from modelfleet.routing.local import RegionalGateway, peer_certificates
from modelfleet.triton.runtime import TritonServer, free_ports
from tests.integration.gateway_project import make_project

pytestmark = pytest.mark.integration

REGIONS = ("local:a", "local:b")
BODY = json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["fine"]}]}).encode()
# Requests in flight or sent between the kill and the moment Envoy knows: only those refused before reaching
# Triton are retried on the peer, so a bounded few may fail (each at most one per the outlier/health thresholds).
MAX_ERRORS = 5


def _infer(port: int, api_key: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v2/models/sentiment/infer", body=BODY, headers={"x-api-key": api_key})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def _triton_count(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nv_inference_request_success") and 'model="sentiment"' in line)


def _hosts(admin: int, cluster: str) -> dict[str, str]:
    """priority -> health flags of the cluster's hosts, from Envoy's admin /clusters."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters?format=json", timeout=5) as r:
        doc = json.loads(r.read())
    out = {}
    for c in doc["cluster_statuses"]:
        if c["name"] == cluster:
            for h in c.get("host_statuses", []):
                flags = h.get("health_status", {})
                healthy = not any(v for k, v in flags.items() if k != "eds_health_status") and \
                    flags.get("eds_health_status", "HEALTHY") == "HEALTHY"
                out[str(h.get("priority", 0))] = "healthy" if healthy else "unhealthy"
    return out


def _raw(admin: int, cluster: str) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters?format=json", timeout=5) as r:
        doc = json.loads(r.read())
    return [{k: v for k, v in h.items() if k != "stats"} for c in doc["cluster_statuses"] if c["name"] == cluster
            for h in c.get("host_statuses", [])]


def _wait(predicate, timeout_s: float = 30.0, what=lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not reached: {what()}")


@pytest.fixture(scope="module")
def regions(tmp_path_factory, triton_install):
    root = make_project(tmp_path_factory.mktemp("failover-project"))["root"]
    plan = build_plan(load_fleet(root, "local"))
    repository = build_local_repository(plan, root, root / "build" / "repository")
    tls = peer_certificates(root / "peer-certs", list(REGIONS))
    ports = {r: dict(zip(("th", "tg", "tm", "http", "grpc", "admin", "extproc", "peer"), free_ports(8)))
             for r in REGIONS}
    key_path = keyfile.key_file(root, "local")
    api_key, _ = keyfile.create(key_path, "failover", ["infer:sentiment"])
    tritons, gateways = {}, {}
    try:
        for r in REGIONS:
            p = ports[r]
            tritons[r] = TritonServer(repository, p["th"], p["tg"], p["tm"]).__enter__()
        for r, other in zip(REGIONS, reversed(REGIONS)):
            p = ports[r]
            gateways[r] = RegionalGateway(
                plan.gateway, LocalPorts(http=p["http"], grpc=p["grpc"], admin=p["admin"], triton_http=p["th"],
                                         triton_grpc=p["tg"], extproc=p["extproc"]),
                root, "local", key_path, root / f"gateway-{r.split(':')[1]}", jwks_file=str(root / "jwks.json"),
                peer_listen_port=p["peer"], peer_port=ports[other]["peer"], peer_region=other, tls=tls[r]).start()
        yield {"ports": ports, "tritons": tritons, "gateways": gateways, "key": api_key, "tls": tls}
    finally:
        for g in gateways.values():
            g.stop()
        for t in tritons.values():
            t.__exit__(None, None, None)


def test_peer_listener_admits_only_the_fleets_certificates(regions):
    a = regions["ports"]["local:a"]
    tls = regions["tls"]["local:b"]
    anonymous = ssl.create_default_context(cafile=tls.ca)
    anonymous.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", a["peer"], context=anonymous, timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
        conn.request("GET", "/v2/health/ready")
        conn.getresponse().read()
    peer = ssl.create_default_context(cafile=tls.ca)
    peer.load_cert_chain(tls.cert, tls.key)
    peer.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", a["peer"], context=peer, timeout=5)
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().status == 200
    assert peer_name("local:a").endswith(".peer.modelfleet")


def test_killing_a_regions_triton_fails_over_to_the_peer_and_back(regions):
    a, b = regions["ports"]["local:a"], regions["ports"]["local:b"]
    triton_a = regions["tritons"]["local:a"]
    key = regions["key"]
    for cluster in ("triton_http", "triton_grpc"):
        _wait(lambda: _hosts(a["admin"], cluster) == {"0": "healthy", "1": "healthy"},
              what=lambda: f"{cluster}: {_raw(a['admin'], cluster)}")
    assert _infer(a["http"], key) == 200
    before_b = _triton_count(b["tm"])

    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def drive():
        while not stop.is_set():
            results.append((time.monotonic(), _infer(a["http"], key)))
            time.sleep(0.02)

    driver = threading.Thread(target=drive)
    driver.start()
    time.sleep(1.5)
    killed = time.monotonic()
    os.killpg(triton_a.process.pid, signal.SIGKILL)
    triton_a.process.wait()
    time.sleep(max(4.0, SETTINGS.health_interval_s * (SETTINGS.unhealthy_threshold + 2)))
    stop.set()
    driver.join()

    after = [(t, s) for t, s in results if t >= killed]
    errors = [(t, s) for t, s in after if s != 200]
    recovered_s = (max(t for t, _ in errors) - killed) if errors else 0.0
    served_by_b = _triton_count(b["tm"]) - before_b
    print(f"\nfailover: {len(after)} requests after the kill, {len(errors)} errors "
          f"({sorted({s for _, s in errors})}), last error {recovered_s:.2f} s after the kill; "
          f"region B's Triton served {served_by_b:.0f}")
    assert len(after) > 20, "the driver kept sending"
    assert len(errors) <= MAX_ERRORS, errors
    assert all(s == 200 for _, s in after[-10:]), "steady state after the kill is all successes"
    assert served_by_b >= len(after) - len(errors), "the successes after the kill were served by region B"
    assert _hosts(a["admin"], "triton_http")["0"] == "unhealthy"
    # The gateway's own readiness reports its region, not the peer's: Route53 must see A as down.
    conn = http.client.HTTPConnection("127.0.0.1", a["http"], timeout=5)
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().status != 200

    # Restart: the health check brings priority 0 back, and A's traffic returns home.
    triton_a.process = None
    restarted = time.monotonic()
    triton_a.start()
    _wait(lambda: _hosts(a["admin"], "triton_http").get("0") == "healthy")
    back_s = time.monotonic() - restarted
    before_a, before_b = _triton_count(a["tm"]), _triton_count(b["tm"])
    statuses = [_infer(a["http"], key) for _ in range(20)]
    print(f"restart: A's Triton healthy again in Envoy {back_s:.1f} s after its restart began; "
          f"A served {_triton_count(a['tm']) - before_a:.0f} of 20, B {_triton_count(b['tm']) - before_b:.0f}")
    assert statuses == [200] * 20
    assert _triton_count(a["tm"]) - before_a == 20 and _triton_count(b["tm"]) == before_b
