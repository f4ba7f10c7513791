"""The local Envoy config from the plan: accepted by the real Envoy 1.40 (`--mode validate`), and carrying the
spec's rules (numbers checked against the model files, not against the plan)."""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway import native_auth
from modelfleet.gateway.envoy_config import default_ports, envoy_bootstrap
from modelfleet.gateway.local import envoy_binary
from modelfleet.gateway.plan import key_hash
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan

PROJECT = Path(__file__).resolve().parent.parent


def _validate(folder: Path) -> subprocess.CompletedProcess:
    """The rendered envoy.yaml, from its folder (relative audit.log and key files)."""
    return subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", "envoy.yaml", "--disable-hot-restart"],
                          capture_output=True, text=True, timeout=120, cwd=folder)


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
    checked = _validate(out / "gateway")
    assert checked.returncode == 0 and "OK" in checked.stdout + checked.stderr, checked.stderr[-2000:]
    for kind, port in (("http", 8080), ("grpc", 8081)):
        [listener] = [l for l in config["static_resources"]["listeners"] if l["name"] == f"gateway_{kind}"]
        assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": port}


def test_filter_order_and_fail_modes():
    plan = build_plan(load_fleet(PROJECT, "local")).gateway
    config = envoy_bootstrap(plan, default_ports(plan), "audit.log", auth_folder="/run/auth")
    hcm = _hcm(config, "http")
    names = [f["name"] for f in hcm["http_filters"]]
    # Authentication first and inside Envoy (no ext_authz: no call out of the proxy), one key filter per model
    # scope (both example models keep their default scope infer:<model>).
    assert names == ["modelfleet.authn", "modelfleet.keys.infer-fraud-detector", "modelfleet.keys.infer-sentiment",
                     "modelfleet.ratelimit.rps", "modelfleet.ratelimit.daily",
                     "envoy.filters.http.buffer", "modelfleet.inspect", "envoy.filters.http.ext_proc",
                     "envoy.filters.http.router"]
    # gRPC bodies are protobuf: the service inspects all of them, with no fast path in front.
    grpc_names = [f["name"] for f in _hcm(config, "grpc")["http_filters"]]
    assert grpc_names == [n for n in names if n != "modelfleet.inspect"]
    filters = {f["name"]: f for f in hcm["http_filters"]}
    # ext_proc is skipped exactly when the fast path marked the request, a mark clients cannot send.
    matcher = filters["envoy.filters.http.ext_proc"]["typed_config"]["xds_matcher"]["matcher_list"]["matchers"]
    assert [m["predicate"]["single_predicate"]["input"]["typed_config"]["header_name"] for m in matcher] == [
        "x-modelfleet-inspected"]
    assert {"remove": "x-modelfleet-inspected"} in hcm["early_header_mutation_extensions"][0]["typed_config"][
        "mutations"]
    for name, type_url in (("modelfleet.authn", "lua.v3.Lua"),
                           ("modelfleet.keys.infer-sentiment", "basic_auth.v3.BasicAuth")):
        source = filters[name]["config_discovery"]["config_source"]["path_config_source"]
        assert source == {"path": f"/run/auth/{name}.yaml", "watched_directory": {"path": "/run/auth"}}
        assert filters[name]["config_discovery"]["type_urls"] == [
            f"type.googleapis.com/envoy.extensions.filters.http.{type_url}"]
    assert filters["modelfleet.keys.infer-sentiment"]["disabled"] is True
    assert "disabled" not in filters["modelfleet.authn"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if "name" in r}
    assert sorted(routes) == ["fraud-detector/http", "sentiment/http"]
    for model, route in routes.items():
        model = model.split("/")[0]
        enabled = [n for n in route["typed_per_filter_config"] if n.startswith("modelfleet.keys.")]
        assert enabled == [f"modelfleet.keys.infer-{model}"]  # only its own scope's keys open a model
        assert route["metadata"]["filter_metadata"]["modelfleet.authn"] == {"scope": f"infer:{model}",
                                                                            "methods": "api-key"}
        assert "x-modelfleet-basic" in route["request_headers_to_remove"]  # the re-encoded key never reaches Triton
        assert "x-modelfleet-inspected" in route["request_headers_to_remove"]
        # sentiment's requests feed the drift monitor in the service: no fast path for them.
        fast = route["metadata"]["filter_metadata"].get("modelfleet.inspect")
        assert fast == ({"model": "fraud-detector"} if model == "fraud-detector" else None), (model, fast)
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        if "name" not in route:  # health and server metadata: open, no scope for the Lua filter to check
            assert "filter_metadata" not in route.get("metadata", {})
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


def test_a_burst_sizes_the_bucket_and_the_rate_refills_it(project_copy):
    spec = project_copy / "models" / "fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("requests_per_second: 2000,", "requests_per_second: 2000, burst: 5000,"))
    plan = build_plan(load_fleet(project_copy, "local")).gateway
    hcm = _hcm(envoy_bootstrap(plan, default_ports(plan), "audit.log"), "http")
    [route] = [r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r.get("name") == "fraud-detector/http"]
    bucket = route["typed_per_filter_config"]["modelfleet.ratelimit.rps"]["descriptors"][0]["token_bucket"]
    assert bucket == {"max_tokens": 5000, "tokens_per_fill": 2000, "fill_interval": "1s"}


def lua(docs: dict) -> str:
    return docs["modelfleet.authn.yaml"]["resources"][0]["typed_config"]["default_source_code"]["inline_string"]


def _sha(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()


def test_key_files_hold_live_keys_per_scope_and_never_a_key(tmp_path):
    path = tmp_path / "api-keys.json"
    sentiment, _ = keyfile.create(path, "acme", ["infer:sentiment"])
    everything, _ = keyfile.create(path, "ops", ["infer:*"])
    revoked, _ = keyfile.create(path, "acme", ["infer:sentiment"])
    keyfile.revoke(path, revoked.split("_")[1])
    expired, _ = keyfile.create(path, "acme", ["infer:sentiment"], expires="2020-01-01T00:00:00Z")
    docs = native_auth.documents(keyfile.load(path), {"infer:sentiment": False, "infer:fraud-detector": True})

    def users(scope):
        config = docs[f"modelfleet.keys.infer-{scope}.yaml"]["resources"][0]["typed_config"]
        return config, set(config["users"]["inline_string"].split())

    config, lines = users("sentiment")
    assert lines == {f"{k.split('_')[1]}:{{SHA}}{_sha(k)}" for k in (sentiment, everything)}
    assert config["authentication_header"] == "x-modelfleet-basic" and config["allow_missing"] is False
    config, lines = users("fraud-detector")
    assert lines == {f"{everything.split('_')[1]}:{{SHA}}{_sha(everything)}"} and config["allow_missing"] is True
    text = yaml.safe_dump(docs)
    for key in (sentiment, everything, revoked, expired):
        assert key not in text and key.split("_", 2)[2] not in text
    assert f'["{expired.split("_")[1]}"]' in lua(docs) and "expires = 1577836800" in lua(docs)
    # A scope without keys: a user no key id can name (ids are hex), so basic_auth admits nobody.
    empty = native_auth.documents({}, {"infer:sentiment": False})
    assert empty["modelfleet.keys.infer-sentiment.yaml"]["resources"][0]["typed_config"]["users"] == {
        "inline_string": native_auth.NOBODY + "\n"}


def _create_keys(path: str, count: int) -> None:
    for _ in range(count):
        keyfile.create(Path(path), "acme", ["infer:sentiment"])


def test_keys_created_at_once_from_many_processes_are_all_kept(tmp_path):
    """`keys create` in two shells at once: every printed key must stay valid (read, modify, write under a lock)."""
    path = tmp_path / "api-keys.json"
    native_auth.sync(path, {"infer:sentiment": False})  # as a running gateway leaves it: its files follow every change
    writers, each = 6, 5
    processes = [multiprocessing.get_context("fork").Process(target=_create_keys, args=(str(path), each))
                 for _ in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * writers
    key_ids = set(keyfile.load(path))
    assert len(key_ids) == writers * each
    folder = native_auth.auth_dir(path)
    users = yaml.safe_load((folder / "modelfleet.keys.infer-sentiment.yaml").read_text())[
        "resources"][0]["typed_config"]["users"]["inline_string"]
    assert {line.split(":")[0] for line in users.split()} == key_ids
    table = yaml.safe_load((folder / "modelfleet.authn.yaml").read_text())["resources"][0]["typed_config"][
        "default_source_code"]["inline_string"]
    assert all(f'["{key_id}"]' in table for key_id in key_ids)


def _dev_key(root: str, results, start) -> None:
    import time

    from modelfleet.cli_gateway import dev_key

    create = keyfile.create

    def slow_create(*args, **kwargs):  # a slow disk: every `up` has checked before the first key is written
        time.sleep(0.3)
        return create(*args, **kwargs)

    keyfile.create = slow_create
    start.wait(30)
    path, new_key = dev_key(Path(root), "local")
    results.put((path.read_text().strip(), new_key))


def test_modelfleet_up_started_twice_at_once_makes_one_dev_key(tmp_path):
    """Each `up` checks for the dev key, then creates one: the check and the create hold the key file's lock
    together (keys.locked is re-entrant in a process), so only the first creates and prints a key."""
    context = multiprocessing.get_context("fork")
    results, start = context.Queue(), context.Barrier(6)
    processes = [context.Process(target=_dev_key, args=(str(tmp_path), results, start)) for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * 6
    answers = [results.get(timeout=5) for _ in processes]
    printed = [new for _, new in answers if new]
    assert len(printed) == 1 and {key for key, _ in answers} == set(printed)
    assert len(keyfile.load(keyfile.key_file(tmp_path, "local"))) == 1


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
    assert api_key not in text and api_key.split("_", 2)[2] not in text and key_hash(api_key) in text
    key_id = api_key.split("_")[1]
    listed = cli("list", "--stack", "local")
    assert f"{key_id}  acme  infer:sentiment" in listed.stdout and "active" in listed.stdout
    assert api_key not in listed.stdout + listed.stderr
    assert cli("revoke", key_id, "--stack", "local", "--tenant", "other").returncode == 2
    assert cli("revoke", key_id, "--stack", "local").returncode == 0
    assert "revoked" in cli("list", "--stack", "local").stdout
    docs = native_auth.documents(keyfile.load(path), {"infer:sentiment": False})
    users = docs["modelfleet.keys.infer-sentiment.yaml"]["resources"][0]["typed_config"]["users"]["inline_string"]
    assert key_id not in users  # revoked: out of the htpasswd
    assert f'["{key_id}"] = {{tenant = "acme"' in lua(docs) and "revoked = true" in lua(docs)
    bad = cli("create", "--stack", "local", "--tenant", "Bad Tenant!")
    assert bad.returncode == 2 and "tenant" in bad.stderr and "Traceback" not in bad.stderr
    cloud = cli("create", "--stack", "prod", "--tenant", "acme")
    assert cloud.returncode == 2 and "secret manager" in cloud.stderr
