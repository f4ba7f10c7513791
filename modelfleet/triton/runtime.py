"""Run the real Triton server and perf_analyzer installed by scripts/install_triton.sh.

No Pulumi here: this is the process shell used by `modelfleet serve`, the integration tests and
the benchmarks. Everything is located inside one virtualenv (default: the running one).
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

INSTALL_HINT = "run: make setup (or: python3 -m venv {prefix} && scripts/install_triton.sh {prefix})"
# Errors every CPU-only start logs; they would bury the one that matters.
_CPU_NOISE = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML", "DCGM")


class TritonNotInstalled(RuntimeError):
    """The venv lacks the server, the python backend stub or perf_analyzer."""


class TritonStartupError(RuntimeError):
    """The server exited or did not become ready; the message carries the log tail."""


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer failed; the message carries its output."""


@dataclass(frozen=True)
class TritonInstall:
    prefix: Path
    tritonserver: Path
    backend_dir: Path
    perf_analyzer: Path
    lib_dir: Path
    cache_dir: Path | None = None  # the response cache implementations (libtritoncache_local.so)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for the server and perf_analyzer.

        The python backend stub finds its packages through the first `python3` on PATH, so the
        venv's bin comes first (its numpy is what model.py imports). lib_dir holds libpython and the
        plain-named libb64/libcudart links the binaries need.
        """
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(self.prefix / "bin"), env.get("PATH", "")]).rstrip(os.pathsep)
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(self.lib_dir), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        env["VIRTUAL_ENV"] = str(self.prefix)
        return env


# The toolchain has its own venv (it needs protobuf 6, Pulumi's policy SDK pins 5): `make setup` builds it here.
DEFAULT_TRITON_VENV = Path(__file__).resolve().parents[2] / ".venv-triton"


def find_install(prefix: str | Path | None = None) -> TritonInstall:
    """Locate the Triton install: `prefix`, else $MODELFLEET_TRITON_VENV, else the project's .venv-triton.
    Raises TritonNotInstalled saying how to fix it."""
    prefix = Path(prefix or os.environ.get("MODELFLEET_TRITON_VENV") or DEFAULT_TRITON_VENV).resolve()
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    server_root = site / "pytriton" / "tritonserver"
    install = TritonInstall(
        prefix=prefix,
        tritonserver=server_root / "bin" / "tritonserver",
        backend_dir=server_root / "backends",
        perf_analyzer=prefix / "bin" / "perf_analyzer",
        lib_dir=prefix / "lib" / "triton-libs",
        cache_dir=server_root / "caches",
    )
    required = [
        install.tritonserver,
        install.backend_dir / "python" / "triton_python_backend_stub",
        install.perf_analyzer,
        install.lib_dir,
    ]
    missing = [str(p) for p in required if not p.exists()]
    if missing:
        raise TritonNotInstalled(
            f"Triton is not installed in {prefix} (missing: {', '.join(missing)}); "
            + INSTALL_HINT.format(prefix=prefix)
        )
    return install


def free_ports(count: int = 3) -> list[int]:
    """`count` distinct TCP ports that were free a moment ago (keeps parallel servers apart).

    All sockets stay open until every port is chosen, so the kernel cannot hand one out twice.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port`. Connections in TIME_WAIT after a server stopped do not count: the
    servers we start set SO_REUSEADDR too, so they can bind over them."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class TritonServer:
    """A tritonserver process serving one model repository, as a context manager.

    All models in the repository are loaded explicitly at start (`--load-model=*`); entering the
    context waits until /v2/health/ready answers 200, which with the default strict readiness
    means every model loaded. Any failure raises TritonStartupError with the server log tail.
    """

    def __init__(
        self,
        model_repository: str | Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        *,
        models: Sequence[str] = ("*",),
        startup_timeout_s: float = 60.0,
        log_path: str | Path | None = None,
        extra_args: Sequence[str] = (),
        install: TritonInstall | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.models = tuple(models)
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        self.install = install or find_install()
        self._own_log = log_path is None
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        """host:port, as tritonclient.http and perf_analyzer -u expect."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return [
            str(self.install.tritonserver),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.install.backend_dir}",
            # The wheel keeps the cache libraries beside the backends, not in /opt/tritonserver/caches.
            *([f"--cache-directory={self.install.cache_dir}"] if self.install.cache_dir else []),
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            # Loopback only: a server on a developer's machine or CI is nobody else's to call.
            "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
            "--exit-timeout-secs=5",
            *self.extra_args,
        ]

    def start(self) -> "TritonServer":
        if not self.model_repository.is_dir():
            raise TritonStartupError(f"model repository {self.model_repository} does not exist")
        with open(self.log_path, "wb") as log:
            # Own session: stop() can signal the server and its python backend stubs as one group.
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT,
                env=self.install.env(), start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self._own_log = False  # the error message points at it
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonStartupError(
                    f"tritonserver exited with code {self.process.returncode} while loading "
                    f"{self.model_repository}\n{self._failure_report()}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        raise TritonStartupError(
            f"tritonserver not ready after {self.startup_timeout_s:.0f}s "
            f"({self.model_repository})\n{self._failure_report()}"
        )

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_errors(self) -> list[str]:
        """Error lines of the server log (model load failures, fatal errors), minus CPU-only noise."""
        return [
            line for line in self.log_lines()
            if (re.match(r"E\d{4} ", line) or "UNAVAILABLE" in line or line.startswith("error:"))
            and not any(noise in line for noise in _CPU_NOISE)
        ]

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_lines()[-lines:]) or "(empty server log)"

    def _failure_report(self) -> str:
        errors = "\n".join(self.log_errors()) or "(no error lines in the log)"
        return f"errors:\n{errors}\nlast log lines ({self.log_path}):\n{self.log_tail()}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the server drains and unloads), then SIGKILL the whole group if it hangs."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            # The server alone: it unloads models and stops its stubs itself; signalling the stubs
            # too makes it wait out --exit-timeout-secs for them.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # stubs can outlive a server that was killed or crashed
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass(frozen=True)
class PerfPoint:
    """One perf_analyzer measurement: client-side throughput and p99 latency at a concurrency."""

    concurrency: int
    throughput_infer_per_s: float
    p99_latency_ms: float
    p50_latency_ms: float = 0.0


def run_perf_analyzer(
    model: str,
    url: str,
    concurrencies: Iterable[int],
    *,
    protocol: str = "grpc",
    batch_size: int = 1,
    measurement_interval_ms: int = 1000,
    stability_percentage: int = 10,
    max_trials: int = 10,
    extra_args: Sequence[str] = (),
    timeout_s: float = 120.0,
    install: TritonInstall | None = None,
) -> list[PerfPoint]:
    """Measure `model` with perf_analyzer at each concurrency; parse its CSV report.

    `url` is host:port of the server's endpoint for `protocol` (grpc or http). Small
    measurement windows and a loose stability threshold keep smoke runs short; benchmarks should
    keep the defaults or tighten them.
    """
    install = install or find_install()
    points: list[PerfPoint] = []
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        for concurrency in concurrencies:
            report = Path(tmp) / f"c{concurrency}.csv"
            cmd = [
                str(install.perf_analyzer), "-m", model, "-u", url, "-i", protocol,
                "-b", str(batch_size), "--concurrency-range", f"{concurrency}:{concurrency}",
                "--measurement-mode", "time_windows",
                "--measurement-interval", str(measurement_interval_ms),
                "--stability-percentage", str(stability_percentage),
                "--max-trials", str(max_trials),
                "-f", str(report), *extra_args,
            ]
            result = subprocess.run(cmd, env=install.env(), capture_output=True, text=True, timeout=timeout_s)
            if result.returncode != 0 or not report.exists():
                raise PerfAnalyzerError(
                    f"perf_analyzer failed (exit {result.returncode}): {' '.join(cmd)}\n"
                    f"{(result.stdout + result.stderr)[-3000:]}"
                )
            points.extend(parse_perf_csv(report))
    return points


def parse_perf_csv(path: str | Path) -> list[PerfPoint]:
    """perf_analyzer's `-f` CSV: one row per concurrency, latencies in microseconds."""
    with open(path, newline="") as f:
        return [
            PerfPoint(
                concurrency=int(row["Concurrency"]),
                throughput_infer_per_s=float(row["Inferences/Second"]),
                p99_latency_ms=float(row["p99 latency"]) / 1000.0,
                p50_latency_ms=float(row["p50 latency"]) / 1000.0,
            )
            for row in csv.DictReader(f)
        ]
