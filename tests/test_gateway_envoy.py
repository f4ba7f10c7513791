"""The local Envoy config from the plan: accepted by the real Envoy 1.40 (`--mode validate`), and carrying the
spec's rules (numbers checked against the model files, not against the plan)."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import multiprocessing
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway import native_auth
from modelfleet.gateway.envoy_config import default_ports, envoy_bootstrap
from modelfleet.gateway.local import envoy_binary, running_envoy
from modelfleet.gateway.plan import key_hash
from modelfleet.loader import load_fleet
from modelfleet.plan import build_plan
from modelfleet.triton.runtime import free_ports

PROJECT = Path(__file__).resolve().parent.parent


def _validate(folder: Path, *flags: str) -> subprocess.CompletedProcess:
    """Envoy's `--mode validate` (it builds every filter's config) on folder/envoy.yaml, from that folder (a rendered
    config names its audit log and key files relative to it)."""
    return subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", "envoy.yaml", "--disable-hot-restart",
                           *flags], capture_output=True, text=True, timeout=120, cwd=folder)


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
    # Authentication first and inside Envoy (no ext_authz: no call out of the proxy): the key check, one filter for
    # every scope (the route's metadata names the scope); no token check, the local stack takes no JWTs.
    assert names == ["modelfleet.keys", "modelfleet.ratelimit.rps", "modelfleet.ratelimit.daily",
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
    mutations = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    for header in ("x-modelfleet-inspected", "x-modelfleet-tenant", "x-modelfleet-key-id"):
        assert {"remove": header} in mutations
    source = filters["modelfleet.keys"]["config_discovery"]["config_source"]["path_config_source"]
    assert source == {"path": "/run/auth/modelfleet.keys.yaml", "watched_directory": {"path": "/run/auth"}}
    assert filters["modelfleet.keys"]["config_discovery"]["type_urls"] == [
        "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"]
    assert "disabled" not in filters["modelfleet.keys"]
    routes = {r["name"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if "name" in r}
    assert sorted(routes) == ["fraud-detector", "sentiment"]
    for model, route in routes.items():
        # Only its own scope's keys open a model (and infer:*): the key check reads the scope from here.
        assert route["metadata"]["filter_metadata"]["modelfleet.authn"] == {"scope": f"infer:{model}",
                                                                            "methods": "api-key"}
        assert "x-modelfleet-inspected" in route["request_headers_to_remove"]
        # sentiment's requests feed the drift monitor in the service: no fast path for them.
        fast = route["metadata"]["filter_metadata"].get("modelfleet.inspect")
        assert fast == ({"model": "fraud-detector"} if model == "fraud-detector" else None), (model, fast)
    for listener in ("http", "grpc"):  # every route, open ones too: Triton never gets a key
        every = _hcm(config, listener)["route_config"]["virtual_hosts"][0]["routes"]
        assert len(every) >= 3 and all("x-api-key" in r["request_headers_to_remove"] for r in every)
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        if "name" not in route:  # health and server metadata: open, no scope for the key check
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
    fraud = routes["fraud-detector"]
    # models/fraud-detector.yaml: 2000 requests per second, 50,000,000 per day, per tenant.
    rps = fraud["modelfleet.ratelimit.rps"]["descriptors"]
    daily = fraud["modelfleet.ratelimit.daily"]["descriptors"]
    assert rps == [{"entries": [{"key": "tenant"}], "token_bucket": {
        "max_tokens": 2000, "tokens_per_fill": 2000, "fill_interval": "1s"}}]
    assert daily[0]["token_bucket"] == {"max_tokens": 50_000_000, "tokens_per_fill": 50_000_000,
                                        "fill_interval": "86400s"}
    # sentiment declares no quota and keeps the default 50/s.
    assert "modelfleet.ratelimit.daily" not in routes["sentiment"]
    assert routes["sentiment"]["modelfleet.ratelimit.rps"]["descriptors"][0]["token_bucket"]["max_tokens"] == 50


def test_a_burst_sizes_the_bucket_and_the_rate_refills_it(project_copy):
    spec = project_copy / "models" / "fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("requests_per_second: 2000,", "requests_per_second: 2000, burst: 5000,"))
    plan = build_plan(load_fleet(project_copy, "local")).gateway
    hcm = _hcm(envoy_bootstrap(plan, default_ports(plan), "audit.log"), "http")
    [route] = [r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r.get("name") == "fraud-detector"]
    bucket = route["typed_per_filter_config"]["modelfleet.ratelimit.rps"]["descriptors"][0]["token_bucket"]
    assert bucket == {"max_tokens": 5000, "tokens_per_fill": 2000, "fill_interval": "1s"}


def table(docs: dict) -> list[list[str]]:
    """The key check's table (its module's config), one row of fields per key."""
    config = docs["modelfleet.keys.yaml"]["resources"][0]["typed_config"]
    lines = config["filter_config"]["value"].splitlines()
    assert lines[0] == "modelfleet-authn-keys v1"
    return [line.split(" ") for line in lines[1:] if not line.startswith("#")]


def test_the_key_table_holds_hashes_and_state_and_never_a_key(tmp_path):
    path = tmp_path / "api-keys.json"
    sentiment, _ = keyfile.create(path, "acme", ["infer:sentiment"])
    everything, _ = keyfile.create(path, "ops", ["infer:*"])
    revoked, _ = keyfile.create(path, "acme", ["infer:sentiment", "infer:fraud-detector"])
    keyfile.revoke(path, revoked.split("_")[1])
    expired, _ = keyfile.create(path, "acme", ["infer:sentiment"], expires="2020-01-01T00:00:00Z")
    ancient, _ = keyfile.create(path, "acme", ["infer:sentiment"], expires="1969-12-31T00:00:00Z")
    docs = native_auth.documents(keyfile.load(path))
    # Independent of the code under test: SHA-1 of the whole key, hex; 2020-01-01T00:00:00Z is 1577836800.
    expected = sorted([
        [sentiment.split("_")[1], hashlib.sha1(sentiment.encode()).hexdigest(), "acme", "0", "0", "infer:sentiment"],
        [everything.split("_")[1], hashlib.sha1(everything.encode()).hexdigest(), "ops", "0", "0", "infer:*"],
        [revoked.split("_")[1], hashlib.sha1(revoked.encode()).hexdigest(), "acme", "0", "1",
         "infer:sentiment,infer:fraud-detector"],
        [expired.split("_")[1], hashlib.sha1(expired.encode()).hexdigest(), "acme", "1577836800", "0",
         "infer:sentiment"],
        # Before 1970: long expired, not "never" (0) and not a negative the module would refuse.
        [ancient.split("_")[1], hashlib.sha1(ancient.encode()).hexdigest(), "acme", "1", "0", "infer:sentiment"]])
    assert table(docs) == expected
    text = yaml.safe_dump(docs)
    for key in (sentiment, everything, revoked, expired, ancient):
        assert key not in text and key.split("_", 2)[2] not in text
    config = docs["modelfleet.keys.yaml"]["resources"][0]["typed_config"]
    assert Path(config["dynamic_module_config"]["module"]["local"]["filename"]).is_file()
    assert config["filter_name"] == "modelfleet_authn"


def _module_envoy(value: str, listen: int = 1, upstream: int = 1, admin: int | None = None) -> dict:
    """Envoy with only the key check, its table `value`, in front of one route (scope infer:m, API keys)."""
    config = {"static_resources": {"listeners": [{
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager",
            "stat_prefix": "t",
            "route_config": {"virtual_hosts": [{"name": "m", "domains": ["*"], "routes": [
                {"match": {"prefix": "/v2/models/m"}, "route": {"cluster": "echo"},
                 "metadata": {"filter_metadata": {"modelfleet.authn": {"scope": "infer:m", "methods": "api-key"}}}},
                {"match": {"prefix": "/v2/models/t"}, "route": {"cluster": "echo"},  # tokens only
                 "metadata": {"filter_metadata": {"modelfleet.authn": {"scope": "infer:t", "methods": "jwt"}}}},
                {"match": {"prefix": "/v2/models/x"}, "route": {"cluster": "echo"},  # a broken route: no scope
                 "metadata": {"filter_metadata": {"modelfleet.authn": {"methods": "api-key"}}}}]}]},
            "http_filters": [
                {"name": "modelfleet.keys", "typed_config": {
                    "@type": native_auth.MODULE_TYPE,
                    "dynamic_module_config": {"module": {"local": {"filename": str(native_auth.module_path())}}},
                    "filter_name": "modelfleet_authn",
                    "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": value}}},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
        "clusters": [{"name": "echo", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "echo", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": upstream}}}}]}]}}]}}
    if admin:
        config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}}
    return config


def _envoy_with_table(tmp_path: Path, value: str) -> subprocess.CompletedProcess:
    """Envoy 1.40 loading the module with `value` as its table."""
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(_module_envoy(value)))
    return _validate(tmp_path, "--log-level", "info")


def test_the_key_check_forwards_the_identity_and_never_the_key(tmp_path):
    """The module in a real Envoy, in front of a server that answers with the headers it received."""
    seen: list[dict] = []

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    path = tmp_path / "api-keys.json"
    good, _ = keyfile.create(path, "acme", ["infer:m"])
    other, _ = keyfile.create(path, "acme", ["infer:other"])
    everything, _ = keyfile.create(path, "ops", ["infer:*"])
    listen, upstream, admin = free_ports(3)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", upstream), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = _module_envoy(native_auth.key_table(keyfile.load(path)), listen, upstream, admin)
    with running_envoy(config, tmp_path, admin):
        def post(headers: dict, model: str = "m") -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
            conn.request("POST", f"/v2/models/{model}/infer", body=b"{}", headers=headers)
            response = conn.getresponse()
            return response.status, response.read()

        assert post({"x-api-key": good, "x-modelfleet-tenant": "forged", "x-modelfleet-key-id": "forged"})[0] == 200
        [forwarded] = seen
        assert "x-api-key" not in forwarded and good not in str(forwarded)
        assert (forwarded["x-modelfleet-tenant"], forwarded["x-modelfleet-key-id"]) == ("acme", good.split("_")[1])
        for headers, status, code in (({}, 401, "missing_credentials"),
                                      ({"x-api-key": other}, 403, "scope_denied"),
                                      ({"x-api-key": good[:-1] + ("A" if good[-1] != "A" else "B")}, 401,
                                       "unknown_key")):
            got, body = post(headers)
            assert (got, json.loads(body)["code"]) == (status, code), body
        # A token-only route admits nothing the token check (not in this Envoy) did not vouch for, not even a key
        # that grants every model: the module is the one gate on every scoped route.
        got, body = post({"x-api-key": everything}, "t")
        assert (got, json.loads(body)["code"]) == (401, "missing_credentials")
        # A model route whose scope is missing is our config's fault: refused, never let through unchecked.
        assert post({"x-api-key": everything}, "x")[0] == 500
        assert len(seen) == 1  # no refused request reached the upstream
    server.shutdown()


def test_envoy_loads_the_module_at_its_abi_version_and_refuses_a_bad_table(tmp_path):
    path = tmp_path / "api-keys.json"
    keyfile.create(path, "acme", ["infer:sentiment"])
    good = native_auth.key_table(keyfile.load(path))
    loaded = _envoy_with_table(tmp_path, good)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    # The ABI this module is written against (native/envoy_abi.h) is the binary's own: Envoy says so, or warns.
    assert "Dynamic module ABI version v0.2.0 matched" in loaded.stdout + loaded.stderr
    line = good.splitlines()[-1]
    many_scopes = good.replace(line, line + "," + ",".join(f"infer:m{i}" for i in range(70)))  # keys.create: no limit
    assert _envoy_with_table(tmp_path, many_scopes).returncode == 0
    for bad in (good.replace("modelfleet-authn-keys v1", "modelfleet-authn-keys v2"),  # another format
                good + line + "\n",  # the same key id twice
                good.replace(line, line.replace(" acme ", " ac me ")),  # a field too many
                good.replace(line, line[:12] + "Z" + line[13:]),  # not a hex id
                good.replace(line, line.rsplit(" ", 1)[0] + " infer:sentiment,"),  # an empty scope
                good.replace(line, line.replace(" 0 0 ", " 0 2 ")),  # revoked is 0 or 1
                good.replace(line, line.replace(" 0 0 ", " -5 0 ")),  # no negative expiry
                good.replace(line, line.replace(" 0 0 ", " +5 0 ")),  # digits only
                good.replace(line, line.replace(" 0 0 ", " 99999999999999999999 0 ")),  # no clamping to never
                good.replace(line, line[:20] + line[21:]),  # a hash one digit short
                good.rstrip("\n"),  # every line ends with a newline
                good.replace(line, "\n" + line)):  # no empty line
        refused = _envoy_with_table(tmp_path, bad)
        assert refused.returncode != 0, bad


def _create_keys(path: str, count: int) -> None:
    for _ in range(count):
        keyfile.create(Path(path), "acme", ["infer:sentiment"])


def test_keys_created_at_once_from_many_processes_are_all_kept(tmp_path):
    """`keys create` in two shells at once: every printed key must stay valid (read, modify, write under a lock)."""
    path = tmp_path / "api-keys.json"
    native_auth.sync(path, start=True)  # as a running gateway leaves it: its files follow every change
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
    watched = yaml.safe_load((native_auth.auth_dir(path) / "modelfleet.keys.yaml").read_text())
    assert {row[0] for row in table({"modelfleet.keys.yaml": watched})} == key_ids


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
    [row] = table(native_auth.documents(keyfile.load(path)))
    assert row[0] == key_id and row[2] == "acme" and row[4] == "1"  # revoked
    bad = cli("create", "--stack", "local", "--tenant", "Bad Tenant!")
    assert bad.returncode == 2 and "tenant" in bad.stderr and "Traceback" not in bad.stderr
    cloud = cli("create", "--stack", "prod", "--tenant", "acme")
    assert cloud.returncode == 2 and "secret manager" in cloud.stderr
