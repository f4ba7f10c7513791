"""`modelfleet up / status / down`, checked from the outside with pytest-testinfra, as an operator would:
which processes run, which ports listen where, what `down` leaves behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

from modelfleet.triton.runtime import free_ports

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

from modelfleet.local import DEFAULT_PORTS

PORT_NAMES = tuple(DEFAULT_PORTS)
PROCESSES = {"triton": "tritonserver", "gateway-extproc": "python", "envoy": "envoy",
             "alertmanager": "prometheus-aler", "prometheus": "prometheus"}  # name -> comm (15 characters)
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def modelfleet(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelfleet.cli", *args, "--root", str(ROOT)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def port_args(ports: dict[str, int]) -> list[str]:
    return [arg for name, port in ports.items() for arg in ("--port", f"{name}={port}")]


def listening(host, port: int) -> list[str]:
    """The addresses something listens on at TCP `port`, as testinfra reads them from `ss`."""
    found = []
    for entry in host.socket.get_listening_sockets():
        scheme, _, rest = entry.partition("://")
        address, _, entry_port = rest.rpartition(":")
        if scheme in ("tcp", "tcp6") and entry_port == str(port):
            found.append(address.strip("[]"))
    return found


@pytest.fixture(scope="module")
def host():
    return testinfra.get_host("local://")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The local stack started once by `modelfleet up` on free ports, stopped by `modelfleet down`."""
    run_dir = tmp_path_factory.mktemp("local-stack")
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
    args = ["--run-dir", str(run_dir), *port_args(ports)]
    started = modelfleet("up", *args)
    yield {"run_dir": run_dir, "ports": ports, "args": args, "up": started}
    modelfleet("down", "--run-dir", str(run_dir))


def state(stack) -> dict:
    return json.loads((stack["run_dir"] / "state.json").read_text())


def test_up_starts_serves_and_says_where(stack):
    result = stack["up"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "first inference: fraud-detector → probabilities (through the gateway)" in result.stdout
    for name in ("gateway-http", "triton-http", "prometheus", "alertmanager"):
        assert f"http://127.0.0.1:{stack['ports'][name]}" in result.stdout, name
    assert "dev-api-key (mode 0600)" in result.stdout
    assert str(stack["run_dir"] / "logs") in result.stdout
    assert "modelfleet down" in result.stdout


def test_each_process_runs_as_expected(host, stack):
    recorded = state(stack)
    supervisor = host.process.get(pid=recorded["supervisord_pid"])
    assert "supervisor.supervisord" in supervisor.args
    assert {p["name"] for p in recorded["processes"]} == set(PROCESSES)
    for entry in recorded["processes"]:
        process = host.process.get(pid=entry["pid"])
        assert process.comm == PROCESSES[entry["name"]], entry["name"]
        # supervised: each is supervisord's child, so a crash is restarted, not lost
        assert process.ppid == recorded["supervisord_pid"], entry["name"]
        assert process.user == host.user().name
    (triton,) = [p for p in recorded["processes"] if p["name"] == "triton"]
    assert f"--http-port={stack['ports']['triton-http']}" in host.process.get(pid=triton["pid"]).args


def test_every_port_listens_on_loopback_only(host, stack):
    for name, port in stack["ports"].items():
        addresses = listening(host, port)
        assert addresses, f"{name} ({port}) does not listen"
        assert set(addresses) <= LOOPBACK, f"{name} ({port}) listens on {addresses}"
    # supervisord itself is controlled through a unix socket only
    sock = stack["run_dir"] / "supervisor.sock"
    assert host.file(str(sock)).is_socket
    assert host.file(str(sock)).mode == 0o700


def test_status_shows_each_process_port_and_health(stack):
    result = modelfleet("status", "--run-dir", str(stack["run_dir"]))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in PROCESSES:
        (line,) = [row for row in result.stdout.splitlines() if row.split() and row.split()[0] == name]
        assert "RUNNING" in line and " ok " in f"{line} ", line
    for name, port in stack["ports"].items():
        assert f"{name}:{port}" in result.stdout


def test_key_file_is_private_and_no_secret_is_logged(host, stack):
    key_file = ROOT / ".modelfleet" / "local" / "dev-api-key"
    assert host.file(str(key_file)).mode == 0o600
    api_key = key_file.read_text().strip()
    # mf_<id>_<secret>: the secret is everything after the second underscore (token_urlsafe has underscores too; the
    # part after the last one can be a single letter, which any log contains).
    secret = api_key.split("_", 2)[2]
    assert len(secret) >= 40
    logs = [p for p in (stack["run_dir"] / "logs").iterdir()] + [stack["run_dir"] / "gateway" / "audit.log"]
    assert len(logs) >= len(PROCESSES) + 1
    for log in logs:
        assert secret not in log.read_text(errors="replace"), log


def test_audit_lines_follow_requests(stack):
    audit = stack["run_dir"] / "gateway" / "audit.log"
    deadline = time.monotonic() + 5  # Envoy flushes the access log every second
    while time.monotonic() < deadline and not audit.read_text().strip():
        time.sleep(0.2)
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    smoke = [line for line in lines if line["model"] == "fraud-detector" and line["status"] == 200]
    assert smoke, lines
    assert smoke[0]["tenant"] and smoke[0]["key_id"]


def test_second_up_says_it_is_running(stack):
    result = modelfleet("up", *stack["args"])
    assert result.returncode == 0
    assert "already running" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_crashed_triton_is_restarted(host, stack):
    before = state(stack)["processes"][0]["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = modelfleet("status", "--run-dir", str(stack["run_dir"]))
        if result.returncode == 0:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stdout
    (line,) = [row for row in result.stdout.splitlines() if row.split() and row.split()[0] == "triton"]
    assert str(before) not in line.split()  # a new process serves
    assert listening(host, stack["ports"]["triton-http"])


def test_a_port_in_use_is_named(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))), **{"triton-grpc": taken})
    try:
        result = modelfleet("up", "--run-dir", str(tmp_path), *port_args(ports))
    finally:
        holder.close()
    assert result.returncode == 2
    assert f"port {taken} (triton-grpc) is in use" in result.stderr
    assert "--port triton-grpc=PORT" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "state.json").exists()


def test_down_leaves_no_process_and_no_port(host, tmp_path):
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
    assert modelfleet("up", "--run-dir", str(tmp_path), *port_args(ports)).returncode == 0
    recorded = json.loads((tmp_path / "state.json").read_text())
    pids = [recorded["supervisord_pid"], *(p["pid"] for p in recorded["processes"])]
    assert len(pids) == 1 + len(PROCESSES)
    result = modelfleet("down", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ports free" in result.stdout
    for pid in pids:
        # a zombie waiting for init to reap it runs nothing and holds no port
        alive = [p for p in host.process.filter(pid=pid) if not p.stat.startswith("Z")]
        assert not alive, f"pid {pid} outlived down"
    stubs = [p for p in host.process.filter(comm="triton_python_b") if str(tmp_path) in p.args]
    assert not stubs
    for name, port in ports.items():
        assert not listening(host, port), f"{name} ({port}) still listens"
    assert modelfleet("status", "--run-dir", str(tmp_path)).returncode == 3
    assert "not running" in modelfleet("down", "--run-dir", str(tmp_path)).stdout
