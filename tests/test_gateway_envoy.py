"""The local Envoy config from the plan: accepted by the real Envoy 1.40 (`--mode validate`), and carrying the
spec's rules (numbers checked against the model files, not against the plan)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway.envoy_config import default_ports, envoy_bootstrap
from modelfleet.gateway.local import envoy_binary
from modelfleet.gateway.plan import key_hash
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan

PROJECT = Path(__file__).resolve().parent.parent


def _validate(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # relative audit.log


def _hcm(config: dict, listener: str) -> dict:
    [l] = [l for l in config["static_resources"]["listeners"] if l["name"] == f"gateway_{listener}"]
    return l["filter_chains"][0]["filters"][0]["typed_config"]


def test_rendered_local_config_is_valid_envoy(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "modelfleet.cli", "render", "--stack", "local", "--out", str(out),
                             "--root", str(PROJECT)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((out / "gateway" / "envoy.yaml").read_text())
    checked = _validate(config, tmp_path)
    assert checked.returncode == 0 and "OK" in checked.stdout + checked.stderr, checked.stderr[-2000:]
    for kind, port in (("http", 8080), ("grpc", 8081)):
        [listener] = [l for l in config["static_resources"]["listeners"] if l["name"] == f"gateway_{kind}"]
        assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": port}


def test_filter_order_and_fail_modes():
    plan = build_plan(load_fleet(PROJECT, "local")).gateway
    config = envoy_bootstrap(plan, default_ports(plan), "audit.log")
    hcm = _hcm(config, "http")
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "modelfleet.ratelimit.rps", "modelfleet.ratelimit.daily",
                     "envoy.filters.http.buffer", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    authz = hcm["http_filters"][0]["typed_config"]
    assert authz["failure_mode_allow"] is False and authz["allowed_headers"] == {"patterns": [{"exact": "x-api-key"}]}
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if "name" in r}
    assert sorted(routes) == ["fraud-detector/http", "sentiment/http"]
    for route in routes.values():
        ext_proc = route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["overrides"]
        # Both example models keep the default: closed. Only the request body is sent (FP32 outputs: no PII).
        assert ext_proc["failure_mode_allow"] is False
        assert ext_proc["processing_mode"]["request_header_mode"] == "SKIP"
        assert ext_proc["processing_mode"]["response_body_mode"] == "NONE"


def test_rate_limit_buckets_come_from_the_model_files():
    plan = build_plan(load_fleet(PROJECT, "local")).gateway
    hcm = _hcm(envoy_bootstrap(plan, default_ports(plan), "audit.log"), "grpc")
    routes = {r["name"]: r["typed_per_filter_config"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
              if "name" in r}
    fraud = routes["fraud-detector/grpc"]
    # models/fraud-detector.yaml: 2000 requests per second, 50,000,000 per day, per tenant.
    rps = fraud["modelfleet.ratelimit.rps"]["descriptors"]
    daily = fraud["modelfleet.ratelimit.daily"]["descriptors"]
    assert rps == [{"entries": [{"key": "tenant"}], "token_bucket": {
        "max_tokens": 2000, "tokens_per_fill": 2000, "fill_interval": "1s"}}]
    assert daily[0]["token_bucket"] == {"max_tokens": 50_000_000, "tokens_per_fill": 50_000_000,
                                        "fill_interval": "86400s"}
    # sentiment declares no quota and keeps the default 50/s.
    assert "modelfleet.ratelimit.daily" not in routes["sentiment/grpc"]
    assert routes["sentiment/grpc"]["modelfleet.ratelimit.rps"]["descriptors"][0]["token_bucket"]["max_tokens"] == 50


def test_keys_cli_stores_hashes_only_in_a_private_file(tmp_path):
    root = tmp_path / "project"
    for name in ("Pulumi.yaml",):
        (root).mkdir(exist_ok=True)
        (root / name).write_text((PROJECT / name).read_text())
    for folder in ("models", "stacks"):
        subprocess.run(["cp", "-r", str(PROJECT / folder), str(root / folder)], check=True)
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "modelfleet.cli", "keys", *args, "--root", str(root)],
                              capture_output=True, text=True, env=env)

    created = cli("create", "--stack", "local", "--tenant", "acme", "--scope", "infer:sentiment")
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.strip()
    path = keyfile.key_file(root, "local")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert api_key not in text and api_key.split("_")[2] not in text and key_hash(api_key) in text
    key_id = api_key.split("_")[1]
    listed = cli("list", "--stack", "local")
    assert f"{key_id}  acme  infer:sentiment" in listed.stdout and "active" in listed.stdout
    assert api_key not in listed.stdout + listed.stderr
    assert cli("revoke", key_id, "--stack", "local", "--tenant", "other").returncode == 2
    assert cli("revoke", key_id, "--stack", "local").returncode == 0
    assert "revoked" in cli("list", "--stack", "local").stdout
    record, reason = keyfile.KeyStore(path).check(api_key, "infer:sentiment")
    assert reason == "revoked_key"
    bad = cli("create", "--stack", "local", "--tenant", "Bad Tenant!")
    assert bad.returncode == 2 and "tenant" in bad.stderr and "Traceback" not in bad.stderr
    cloud = cli("create", "--stack", "prod", "--tenant", "acme")
    assert cloud.returncode == 2 and "secret manager" in cloud.stderr
