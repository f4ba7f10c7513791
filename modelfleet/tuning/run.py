"""`modelfleet tune`: run the real Model Analyzer for one model and write its tuning record.

The process shell around `modelfleet.tuning.analyzer`: lays out a model repository with the model's base config
(rendered from its spec), starts an explicit-mode Triton on free ports (or uses `--triton-url`), runs
`model-analyzer profile` in remote launch mode with a progress display and a time bound, reads the results and
writes `models/<model>.tuning/<hardware>.yaml` with Model Analyzer's plots beside it.

Search modes:
- brute: every combination of the spec's bounds (max batch sizes x instance counts x queue delays x preferred
  sizes), each at a concurrency sweep.
- quick: Model Analyzer's quick search over max batch size, instance count and concurrency (one queue delay),
  then a short brute pass over the queue delays (and preferred sizes) for the winner around its concurrency:
  the quick search cannot vary the delay, and the wrong delay costs throughput (a long one at low concurrency).

Work files live under `build/tuning/<model>/<hardware>/` (one folder per search phase). Ctrl-C or `--timeout`
stop Model Analyzer with SIGINT: it finishes the measurement in flight and saves its checkpoint, so
`--resume` continues where it stopped (same ports, same checkpoint). A timed-out search still writes a record
from what it measured, marked incomplete; an interrupted one writes nothing.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml

from modelfleet.spec import ModelSpec
from modelfleet.tuning import analyzer
from modelfleet.tuning.analyzer import Measurement, SearchMode, Settings
from modelfleet.tuning.record import (Hardware, Search, TuningRecord, Variant, Versions, record_path,
                                      write_record)

MA_STOP_GRACE_S = 90  # SIGINT lets Model Analyzer finish one measurement and write its checkpoint
# Model Analyzer 1.58's quick search can loop for ever over configs it has measured, logging this line each time
# (model_analyzer/record/metrics_manager.py) and measuring nothing: seen once here, 1.5 million lines and a 100 MB
# log in 15 minutes. A real search revisits a neighbour now and then; this many in a row with no new measurement
# is the loop, and everything it would ever measure is already measured: the search has converged.
SKIP_LINE = "Existing measurement found for run config. Skipping profile"
LIVELOCK_SKIPS = 200
LOG_REPEATS_KEPT = 20  # identical consecutive log lines written before the rest are only counted
LOG_MAX_BYTES = 16 * 2**20  # the log of one Model Analyzer run stops growing here
PLOTS = ("throughput_v_latency.png", "cpu_mem_v_latency.png")


class TuneError(RuntimeError):
    """A tuning run could not produce results; `str()` says why and what to do."""


class TuneInterrupted(TuneError):
    """Ctrl-C: Model Analyzer stopped cleanly; rerun with --resume."""


@dataclass(frozen=True)
class Endpoints:
    http: str  # host:port
    grpc: str  # host:port
    metrics_url: str

    @classmethod
    def local(cls, http_port: int, grpc_port: int, metrics_port: int) -> "Endpoints":
        return cls(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{metrics_port}/metrics")

    @classmethod
    def from_url(cls, url: str, grpc: str | None = None, metrics_url: str | None = None) -> "Endpoints":
        """`--triton-url host[:http_port]`; gRPC and metrics default to Triton's ports 8001 and 8002 on the host."""
        url = url.removeprefix("http://").removeprefix("https://").rstrip("/")
        host, _, port = url.partition(":")
        return cls(f"{host}:{port or 8000}", grpc or f"{host}:8001", metrics_url or f"http://{host}:8002/metrics")


@dataclass
class TuneOptions:
    mode: SearchMode = "quick"
    hardware_class: str = "cpu"
    timeout_s: float = 1800.0
    triton_url: str | None = None
    grpc_url: str | None = None
    metrics_url: str | None = None
    resume: bool = False
    work_root: Path | None = None  # default: <root>/build/tuning
    record_root: Path | None = None  # default: <root> (records under <root>/models/<model>.tuning/)


@dataclass
class TuneResult:
    record: TuningRecord
    path: Path
    measurements: list[Measurement]
    complete: bool


@dataclass
class Progress:
    """What the progress display shows; `on_event(kind, text)` is called for every Model Analyzer event."""

    on_event: Callable[[str, str], None] = lambda kind, text: None
    measurements: int = 0
    configs: set[str] = field(default_factory=set)
    phase: str = ""
    skips_since_measurement: int = 0  # SKIP_LINE seen since the last new measurement
    converged: list[str] = field(default_factory=list)  # phases stopped because no new measurement came

    @property
    def looping(self) -> bool:
        return self.skips_since_measurement >= LIVELOCK_SKIPS


# --- the machine -------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def cores() -> int:
    """CPUs this process may run on (the container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 0


def gpus() -> tuple[str, ...]:
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.split(" (UUID")[0].split(": ", 1)[-1] for line in out.splitlines() if line.startswith("GPU "))


def triton_version(http: str) -> str:
    with urllib.request.urlopen(f"http://{http}/v2", timeout=5) as response:
        return json.load(response).get("version", "unknown")


def perf_analyzer_version(install) -> str:
    try:
        done = subprocess.run([str(install.perf_analyzer), "--version"], env=install.env(), capture_output=True,
                              text=True, timeout=20)
        out = done.stdout + done.stderr
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"Version\s+(\S+)", out)
    return match.group(1) if match else "unknown"


def model_analyzer_version(install) -> str:
    """From the toolchain venv's package metadata (it is not importable from modelfleet's own venv)."""
    import sysconfig

    site = Path(sysconfig.get_path("purelib", vars={"base": str(install.prefix), "platbase": str(install.prefix)}))
    found = sorted(site.glob("triton_model_analyzer-*.dist-info"))
    if found:
        return found[-1].name[len("triton_model_analyzer-"):-len(".dist-info")]
    try:
        return importlib.metadata.version("triton-model-analyzer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- running Model Analyzer ------------------------------------------------------------------------------

_PROFILING = re.compile(r"Profiling (\S+): (?:client batch size=\d+, )?concurrency=(\d+)")
_CREATING = re.compile(r"Creating model config: (\S+)")


def run_model_analyzer(install, config_path: Path, work_dir: Path, deadline: float, progress: Progress) -> bool:
    """Run `model-analyzer profile -f config_path` to completion or until `deadline` (monotonic seconds).

    Returns True when it finished, or converged: when its quick search loops over measured configs with no new
    measurement (`LIVELOCK_SKIPS`), it is stopped like at the deadline and the phase is added to
    `progress.converged`. Returns False when the deadline stopped it. Ctrl-C stops it the same way and raises
    TuneInterrupted. Model Analyzer never outlives this call: SIGINT, then SIGTERM, then SIGKILL to its group.
    Its log is bounded: repeated lines are counted, not written, past LOG_REPEATS_KEPT, and it stops at
    LOG_MAX_BYTES.
    """
    log_path = work_dir / "model-analyzer.log"
    command = [str(install.prefix / "bin" / "model-analyzer"), "profile", "-f", str(config_path)]
    with open(log_path, "a") as log:
        process = subprocess.Popen(command, cwd=work_dir, env=install.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        timed_out = interrupted = converged = False
        progress.skips_since_measurement = 0
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stdout, BoundedLog(log), lines), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    _event(lines.get(timeout=0.25), progress)
                except queue.Empty:
                    pass
                if process.poll() is not None and not reader.is_alive():
                    while not lines.empty():
                        _event(lines.get(), progress)
                    break
                if not (timed_out or converged) and progress.looping:
                    converged = True
                    progress.converged.append(progress.phase)
                    progress.on_event("stop", f"converged: {progress.skips_since_measurement} revisits of measured "
                                              "configs and no new measurement; stopping Model Analyzer")
                    _signal(process, signal.SIGINT)
                    deadline = time.monotonic() + MA_STOP_GRACE_S
                elif not (timed_out or converged) and time.monotonic() > deadline:
                    timed_out = True
                    progress.on_event("stop", "time bound reached: stopping Model Analyzer (checkpoint kept)")
                    _signal(process, signal.SIGINT)
                    deadline = time.monotonic() + MA_STOP_GRACE_S
                elif (timed_out or converged) and time.monotonic() > deadline:
                    _stop_hard(process)
                    break
        except KeyboardInterrupt:
            interrupted = True
            progress.on_event("stop", "Ctrl-C: stopping Model Analyzer (checkpoint kept)")
            _signal(process, signal.SIGINT)
            try:
                process.wait(MA_STOP_GRACE_S)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                pass
        finally:
            _stop_hard(process)
            reader.join(5)
    if interrupted:
        raise TuneInterrupted("interrupted; Model Analyzer saved its checkpoint: rerun the same command with --resume")
    if not (timed_out or converged) and process.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise TuneError(f"model-analyzer exited with code {process.returncode} (log: {log_path}):\n{tail}")
    return not timed_out


class BoundedLog:
    """A log file that keeps its size bounded. A line that repeats one of the last few lines (a loop prints a short
    cycle of lines: "Creating model config ...", "Existing measurement found ...") is written LOG_REPEATS_KEPT
    times, then only counted until a new line breaks the cycle, when the count is written once. Nothing is written
    past `max_bytes`."""

    WINDOW = 8  # the longest cycle of lines recognised as a repeat

    def __init__(self, file, max_bytes: int = LOG_MAX_BYTES, repeats_kept: int = LOG_REPEATS_KEPT):
        self.file, self.max_bytes, self.repeats_kept = file, max_bytes, repeats_kept
        self.written = file.tell() if file.seekable() else 0
        self.recent: list[str] = []
        self.seen: dict[str, int] = {}
        self.suppressed, self.full = 0, False

    def write(self, line: str) -> None:
        key = line.rstrip("\n")  # a process stopped mid-line leaves its last line without one
        if key in self.recent:
            self.seen[key] = self.seen.get(key, 1) + 1
            if self.seen[key] > self.repeats_kept:
                self.suppressed += 1
                return
        else:
            self._summarise()
            self.seen = {}
        self.recent = (self.recent + [key])[-self.WINDOW:]
        self._put(line)

    def close(self) -> None:
        self._summarise()
        self.file.flush()

    def _summarise(self) -> None:
        if self.suppressed:
            self._put(f"[modelfleet] {self.suppressed} more repeats of the lines above, not logged\n")
        self.suppressed = 0

    def _put(self, text: str) -> None:
        if self.full:
            return
        if self.written + len(text) > self.max_bytes:
            self.full = True
            text = f"[modelfleet] log stopped at {self.max_bytes} bytes\n"
        self.file.write(text)
        self.file.flush()
        self.written += len(text)


def _pump(stream, log: BoundedLog, lines: "queue.Queue[str]") -> None:
    for line in stream:
        log.write(line)
        lines.put(line.rstrip("\n"))
    log.close()


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _stop_hard(process: subprocess.Popen) -> None:
    if process.poll() is None:
        _signal(process, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    _signal(process, signal.SIGKILL)  # perf_analyzer children too
    process.wait()


def _event(line: str, progress: Progress) -> None:
    line = line.removeprefix("[Model Analyzer] ").strip()
    if SKIP_LINE in line:
        progress.skips_since_measurement += 1
    elif match := _PROFILING.search(line):
        progress.skips_since_measurement = 0
        progress.measurements += 1
        progress.configs.add(match.group(1))
        progress.on_event("measure", f"{match.group(1)} at concurrency {match.group(2)}")
    elif match := _CREATING.search(line):
        progress.on_event("config", f"created {match.group(1)}")
    elif line.startswith(("ERROR", "WARNING: Perf Analyzer", "Model ")) or "failed" in line.lower():
        progress.on_event("log", line)


# --- one tuning run ----------------------------------------------------------------------------------------

def _ports(work_dir: Path, resume: bool) -> tuple[int, int, int]:
    """The local server's ports: the previous run's when resuming (Model Analyzer's checkpoint keys name the
    metrics URL, so new ports would re-measure everything), else fresh free ones."""
    from modelfleet.triton.runtime import free_ports, port_is_free

    saved = work_dir / "ports.json"
    if resume and saved.exists():
        ports = tuple(json.loads(saved.read_text()))
        if all(port_is_free(p) for p in ports):
            return ports  # type: ignore[return-value]
    ports = tuple(free_ports(3))
    saved.write_text(json.dumps(list(ports)))
    return ports  # type: ignore[return-value]


def cpu_only(hardware_class: str) -> bool:
    """Whether Model Analyzer profiles `hardware_class` without GPUs: only the `cpu` class (as in the spec's
    `hardware.gpu_class`); every other class is a GPU class, profiled with GPU metrics and KIND_GPU instances."""
    return hardware_class == "cpu"


def base_config(spec: ModelSpec, hardware_class: str) -> str:
    """The variant Model Analyzer starts from: the spec's config without preferred batch sizes (they would make
    every smaller max_batch_size illegal; the search sweeps them instead)."""
    from modelfleet.triton.config import TunedSettings, render_config

    return render_config(spec, hardware_class, TunedSettings(preferred_batch_sizes=()))


def tune(spec: ModelSpec, root: Path, options: TuneOptions, progress: Progress | None = None) -> TuneResult:
    """Tune `spec` with the real Model Analyzer and write its record. Raises TuneError / TuneInterrupted."""
    from modelfleet.triton import config as triton_config
    from modelfleet.triton.runtime import TritonServer, find_install

    if spec.backend == "ensemble":
        raise TuneError(f"{spec.name} is an ensemble: Model Analyzer measures it through its steps' models; tune "
                        f"each of them ({', '.join(step.model for step in spec.triton.ensemble)})")
    progress = progress or Progress()
    install = find_install()
    hw = options.hardware_class
    work = (options.work_root or root / "build" / "tuning") / spec.name / hw
    if work.exists() and not options.resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    repository = work / "model_repository"
    source = triton_config.local_source(spec, root)
    triton_config.write_model(repository, spec, base_config(spec, hw), source, link=True)
    started = time.monotonic()
    deadline = started + options.timeout_s

    def search(endpoints: Endpoints) -> tuple[list[Measurement], bool, str]:
        version = triton_version(endpoints.http)
        measured, complete = _search(spec, options.mode, install, repository, work, endpoints, cpu_only(hw),
                                     deadline, progress)
        return measured, complete, version

    if options.triton_url:
        endpoints = Endpoints.from_url(options.triton_url, options.grpc_url, options.metrics_url)
        measured, complete, version = search(endpoints)
        measured_on = endpoints.http
    else:
        http, grpc, metrics = _ports(work, options.resume)
        progress.on_event("server", f"starting Triton (explicit model control) on ports {http}/{grpc}/{metrics}")
        with TritonServer(repository, http, grpc, metrics, models=(), install=install,
                          log_path=work / "tritonserver.log") as server:
            measured, complete, version = search(Endpoints.local(http, grpc, metrics))
            del server
        measured_on = "local"

    if not measured:
        raise TuneError(f"Model Analyzer measured nothing for {spec.name} (log: {work}/*/model-analyzer.log)")
    selection = analyzer.select(measured, spec.slo.p99_ms, spec.tuning.objective)
    searched, swept = analyzer.knobs(spec, options.mode)
    extended = [m.concurrency for m in measured if m.variant.startswith(EXTEND_PHASE)]
    path = record_path(options.record_root or root, spec.name, hw)
    artifacts = _keep_artifacts(work, path, spec.name)
    record = TuningRecord(
        model=spec.name,
        hardware_class=hw,
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        objective=spec.tuning.objective,
        slo_p99_ms=spec.slo.p99_ms,
        slo_met=selection.slo_met,
        chosen=_variant(selection.best, spec.slo.p99_ms),
        lower_bound=analyzer.still_rising(measured, selection.best),
        variants=tuple(_variant(m, spec.slo.p99_ms) for m in _table_order(measured)),
        hardware=Hardware(hardware_class=hw, cpu_model=cpu_model() if measured_on == "local" else "remote",
                          cores=cores() if measured_on == "local" else 0,
                          gpus=gpus() if measured_on == "local" else (), measured_on=measured_on),
        versions=Versions(triton=version, model_analyzer=model_analyzer_version(install),
                          perf_analyzer=perf_analyzer_version(install)),
        search=Search(
            mode=options.mode,
            variants_measured=len({m.variant for m in measured}),
            measurements=len(measured),
            space=analyzer.search_space(spec),
            duration_s=round(time.monotonic() - started, 1),
            complete=complete,
            perf_analyzer_flags=dict(analyzer.PERF_ANALYZER_FLAGS),
            searched_by_model_analyzer=searched,
            swept_by_modelfleet=swept,
            converged_without_new_measurements=tuple(progress.converged),
            concurrency_extended_to=max(extended) if extended else None,
        ),
        artifacts=artifacts,
    )
    write_record(record, path)
    return TuneResult(record, path, measured, complete)


EXTEND_PHASE = "extend"
MAX_EXTENSIONS = 3


def _search(spec, mode, install, repository, work, endpoints, cpu_only, deadline, progress) -> tuple[list, bool]:
    """Run the phases of `mode`, then extend the load while the best point is still rising at the top (see
    `analyzer.still_rising`); returns every measurement (variant names prefixed by phase) and completeness.
    `cpu_only`: the hardware class's `cpu_only(...)`."""
    kind = "KIND_CPU" if cpu_only else "KIND_GPU"

    def phase(name: str, phase_mode: SearchMode, **kwargs) -> tuple[list[Measurement], bool]:
        phase_dir = work / name
        phase_dir.mkdir(exist_ok=True)
        config = analyzer.profile_config(
            spec, mode=phase_mode, model_repository=repository, work_dir=phase_dir,
            perf_analyzer_path=install.perf_analyzer, http=endpoints.http, grpc=endpoints.grpc,
            metrics_url=endpoints.metrics_url, cpu_only=cpu_only, **kwargs)
        config_path = phase_dir / "profile.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        progress.phase = name
        progress.on_event("phase", f"{name}: model-analyzer profile ({phase_mode} search)")
        finished = run_model_analyzer(install, config_path, phase_dir, deadline, progress)
        rows = analyzer.read_results(phase_dir, spec.name)
        return [replace(m, variant=f"{name}/{m.variant}") for m in rows], finished

    rows, complete = _phases(spec, mode, kind, phase)
    for n in range(1, MAX_EXTENSIONS + 1):
        if not (complete and rows):
            break
        selection = analyzer.select(rows, spec.slo.p99_ms, spec.tuning.objective)
        best, top = selection.best, selection.best.concurrency
        if (not selection.slo_met or best.settings is None or not analyzer.still_rising(rows, best)
                or top >= analyzer.CONCURRENCY_CEILING):
            break
        higher = sorted({min(analyzer.CONCURRENCY_CEILING, top * 2), min(analyzer.CONCURRENCY_CEILING, top * 4)})
        progress.on_event("phase", f"throughput still rising at concurrency {top}: measuring {higher}")
        more, finished = phase(f"{EXTEND_PHASE}{n}", "brute", model_config_parameters=_pinned(spec, best.settings, kind),
                               concurrency=higher)
        rows += more
        if not finished:  # the search itself finished; an extension cut short leaves the point a lower bound
            break
    return rows, complete


def _pinned(spec: ModelSpec, settings: Settings, kind: str, delays: list[int] | None = None) -> dict:
    """`model_config_parameters` that fix a variant's settings (and sweep `delays`, when given)."""
    params: dict = {"instance_group": [[{"kind": kind, "count": [settings.instance_count]}]]}
    if spec.max_batch_size > 0:
        params["max_batch_size"] = [settings.max_batch_size]
    if settings.dynamic_batching and analyzer.dynamic_batching_tuned(spec):
        dyn: dict = {"max_queue_delay_microseconds": delays or [settings.max_queue_delay_us or 0]}
        if settings.preferred_batch_sizes:
            dyn["preferred_batch_size"] = [list(settings.preferred_batch_sizes)]
        params["dynamic_batching"] = dyn
    return params


def _phases(spec, mode, kind, phase) -> tuple[list, bool]:
    t = spec.tuning
    searched, swept = analyzer.knobs(spec, mode)
    if mode == "brute":
        return phase("brute", "brute")
    if "max_queue_delay_us" not in swept:  # nothing for modelfleet to sweep after Model Analyzer's search
        return phase("quick", "quick")
    first_delay = min(t.queue_delays_us)
    quick_rows, finished = phase("quick", "quick",
                                 model_config_parameters={"dynamic_batching": {"max_queue_delay_microseconds": first_delay}})
    if not finished or not quick_rows:
        return quick_rows, False
    winner = analyzer.select(quick_rows, spec.slo.p99_ms, t.objective).best
    settings: Settings = winner.settings
    # Every delay again, the quick search's own included: its winner may be the spec's base config.
    delays = sorted(set(t.queue_delays_us))
    if settings is None or (len(delays) < 2 and not t.preferred_batch_sizes):
        return quick_rows, True
    c = winner.concurrency
    around = sorted({max(t.concurrency.min, c // 2), c, min(t.concurrency.max, c * 2)})
    params = _pinned(spec, replace(settings, dynamic_batching=True, preferred_batch_sizes=()), kind, delays)
    if t.preferred_batch_sizes:
        params["dynamic_batching"]["preferred_batch_size"] = [sorted(s) for s in t.preferred_batch_sizes
                                                              if max(s) <= settings.max_batch_size]
    delay_rows, finished = phase("delays", "brute", model_config_parameters=params, concurrency=around)
    return quick_rows + delay_rows, finished


def _variant(m: Measurement, slo_p99_ms: float) -> Variant:
    s = m.settings or Settings(0, 1, False, None)
    return Variant(variant=m.variant, max_batch_size=s.max_batch_size, instance_count=s.instance_count,
                   dynamic_batching=s.dynamic_batching, max_queue_delay_us=s.max_queue_delay_us,
                   preferred_batch_sizes=s.preferred_batch_sizes, concurrency=m.concurrency,
                   throughput_per_s=round(m.throughput_per_s, 1), p99_ms=round(m.p99_ms, 3),
                   meets_slo=m.meets(slo_p99_ms))


def _table_order(measured: list[Measurement]) -> list[Measurement]:
    return sorted(measured, key=lambda m: (m.variant, m.concurrency))


def _keep_artifacts(work: Path, record: Path, model: str) -> tuple[str, ...]:
    """Copy each phase's summary plots and inference CSV to `<record stem>/` beside the record."""
    target = record.parent / record.stem
    if target.exists():
        shutil.rmtree(target)
    kept = []
    for phase_dir in sorted(p for p in work.iterdir() if (p / "export").is_dir()):
        sources = [phase_dir / "export" / "plots" / "simple" / model / name for name in PLOTS]
        sources.append(phase_dir / "export" / "results" / "metrics-model-inference.csv")
        for src in sources:
            if src.exists():
                target.mkdir(parents=True, exist_ok=True)
                dst = target / f"{phase_dir.name}-{src.name}"
                shutil.copyfile(src, dst)
                kept.append(str(dst.relative_to(record.parent)))
    return tuple(sorted(kept))


def settings_of(record: TuningRecord):
    """The record's chosen settings as the config renderer's `TunedSettings`."""
    from modelfleet.triton.config import TunedSettings

    chosen = record.chosen
    return TunedSettings(
        max_batch_size=chosen.max_batch_size,
        preferred_batch_sizes=tuple(chosen.preferred_batch_sizes),
        max_queue_delay_us=chosen.max_queue_delay_us if chosen.dynamic_batching else None,
        instance_count=chosen.instance_count,
    )
