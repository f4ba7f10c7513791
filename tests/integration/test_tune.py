"""A real `modelfleet tune` on CPU: Triton, Model Analyzer and perf_analyzer, end to end (about two minutes).

The fraud detector's search is narrowed in a copy of the project (one max batch size, one instance count, two
queue delays, concurrency up to 8) so each run stays short; everything else is the product path: the CLI, the
explicit-mode server it starts, Model Analyzer's brute search, the record, the plots, the plan and the renderer.
Besides a finished search: the time bound stopping Model Analyzer mid-run, Ctrl-C on the CLI then `--resume`, and
a search where no variant can meet the SLO. The documented exit codes are in `modelfleet tune --help`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from modelfleet.tuning import analyzer
from modelfleet.tuning.record import read_record, record_path

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
BOUND_S = 240  # a hung run fails the test instead of hanging the suite; not a speed assertion


@pytest.fixture
def small_project(project_copy: Path, build_examples) -> Path:
    build_examples(project_copy / "build" / "model-artifacts")
    _set_tuning(project_copy, {"max_batch_sizes": [16], "instance_counts": [1], "queue_delays_us": [0, 500],
                               "concurrency": {"min": 1, "max": 8}})
    return project_copy


def _set_tuning(root: Path, tuning: dict, **fields) -> None:
    path = root / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["tuning"] = tuning
    data.update(fields)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "modelfleet.cli_tune", MODEL, "--search", "brute", "--root", str(root), *args]


def _work(root: Path) -> Path:
    return root / "build" / "tuning" / MODEL / "cpu"


def _ports(root: Path) -> list[int]:
    return [int(p) for p in (_work(root) / "ports.json").read_text().strip("[]\n").split(",")]


def _listening(ports: list[int]) -> list[int]:
    """Ports something still accepts connections on (TIME_WAIT leftovers of closed clients do not count)."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def _processes_in(root: Path) -> list[str]:
    """Live processes working in the project copy: tritonserver and its Python stubs (their command lines name
    the model repository), Model Analyzer and perf_analyzer (their working directory is the search's)."""
    inside = str(root) + os.sep
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(proc / "cwd") + os.sep
        except OSError:  # gone, or a zombie
            continue
        if cmdline and (inside in cmdline or cwd.startswith(inside)):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_nothing_left(root: Path) -> None:
    assert _listening(_ports(root)) == []
    assert _processes_in(root) == []


def test_tune_measures_records_and_feeds_the_plan(small_project, triton_install):
    from modelfleet.loader import load_fleet
    from modelfleet.plan import build_plan
    from modelfleet.tuning import capacity

    result = subprocess.run(_command(small_project, "--timeout", "170"), capture_output=True, text=True,
                            timeout=BOUND_S)
    assert result.returncode == 0, result.stdout + result.stderr

    path = record_path(small_project, MODEL, "cpu")
    record = read_record(path)
    assert record.slo_met and record.search.complete and record.search.mode == "brute"
    # Two queue delays plus Model Analyzer's default config, each at a concurrency sweep (then, while throughput
    # still rises at the top of the range, the winner at higher concurrency).
    assert len({v.variant for v in record.variants if v.variant.startswith("brute/")}) == 3
    assert record.search.space == 2
    extended = {v.concurrency for v in record.variants if v.variant.startswith("extend")}
    assert record.search.concurrency_extended_to == (max(extended) if extended else None)
    assert record.search.swept_by_modelfleet == ("max_batch_size", "instance_count", "max_queue_delay_us")
    assert record.chosen.meets_slo
    names = record.chosen.variant.split("+")  # repeats of one config are merged
    rows = [v for v in record.variants if v.variant in names and v.concurrency == record.chosen.concurrency]
    assert rows and record.chosen.throughput_per_s == pytest.approx(sum(v.throughput_per_s for v in rows) / len(rows),
                                                                    abs=0.1)
    assert {v.max_queue_delay_us for v in record.variants} >= {0, 500}
    assert record.versions.triton == "2.51.0" and record.versions.model_analyzer == "1.58.0"
    assert record.hardware.cores >= 1 and record.hardware.cpu_model
    assert any(a.endswith("throughput_v_latency.png") for a in record.artifacts)
    assert all((path.parent / a).is_file() for a in record.artifacts)
    assert "chosen" in result.stdout and str(path.relative_to(small_project)) in result.stdout

    _assert_nothing_left(small_project)  # no server, Model Analyzer or perf_analyzer is left behind

    plan = build_plan(load_fleet(small_project, "local"))
    local = capacity.capacity_json(plan)["models"][MODEL]["regions"]["local"]
    assert local["tuned"] and local["throughput_per_replica"] == record.chosen.throughput_per_s
    settings = capacity.tuned_settings(plan)[(MODEL, "cpu")]
    assert settings.max_queue_delay_us == record.chosen.max_queue_delay_us


def test_the_time_bound_stops_model_analyzer_mid_run_and_records_what_it_measured(small_project, triton_install):
    # A search far longer than the bound (four configs, concurrency up to 64: more than 25 s of measurement
    # windows alone on any machine), stopped after its first measurements.
    _set_tuning(small_project, {"max_batch_sizes": [16], "instance_counts": [1], "queue_delays_us": [0, 500, 1000],
                                "concurrency": {"min": 1, "max": 64}})
    result = subprocess.run(_command(small_project, "--timeout", "25"), capture_output=True, text=True,
                            timeout=BOUND_S)
    assert result.returncode == 0, result.stdout + result.stderr  # documented: a timed-out search still records
    assert "Traceback" not in result.stderr
    assert "time bound reached" in result.stderr and "incomplete" in result.stdout

    record = read_record(record_path(small_project, MODEL, "cpu"))
    assert record.search.complete is False and record.slo_met
    assert record.search.measurements == len(record.variants) >= 1

    phase = _work(small_project) / "brute"
    log = (phase / "model-analyzer.log").read_text()
    assert "Received SIGINT" in log  # stopped by SIGINT, so it saved its checkpoint (not killed)
    assert "Profile complete" not in log  # stopped before the end, so before the export of the table and plots
    assert not (phase / "export" / "results" / "metrics-model-inference.csv").exists()
    checkpoint = analyzer.latest_checkpoint(phase / "checkpoints")
    assert checkpoint is not None
    saved = {(f"brute/{m.variant}", m.concurrency): m for m in analyzer.parse_checkpoint(checkpoint, MODEL)}
    assert {(v.variant, v.concurrency) for v in record.variants} == set(saved)  # the record is the checkpoint
    for v in record.variants:
        assert v.throughput_per_s == pytest.approx(saved[(v.variant, v.concurrency)].throughput_per_s, abs=0.06)
    assert record.artifacts == ()  # Model Analyzer exports its plots only at the end

    _assert_nothing_left(small_project)


def test_ctrl_c_stops_cleanly_and_resume_finishes_a_search_that_misses_the_slo(small_project, triton_install, tmp_path):
    """Ctrl-C on the CLI mid-run, then `--resume`; the SLO (p99 0.01 ms) is one no variant can meet, so the resumed
    search ends in a record that says so, and the CLI says it plainly."""
    from modelfleet.loader import load_fleet
    from modelfleet.plan import build_plan
    from modelfleet.tuning import capacity

    spec = small_project / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(spec.read_text())
    data["slo"]["p99_ms"] = 0.01
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    phase = _work(small_project) / "brute"
    log_path = phase / "model-analyzer.log"
    records = small_project / "models" / f"{MODEL}.tuning"  # the committed record and plots, copied
    committed = _files(records)
    assert committed

    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        cli = subprocess.Popen(_command(small_project, "--timeout", "170"), stdout=stdout, stderr=stderr, text=True)
        try:
            bound = time.monotonic() + BOUND_S
            # Interrupt once Model Analyzer has saved a measurement in its checkpoint: mid-run, with work to resume.
            while not (log_path.exists() and "Saved checkpoint" in log_path.read_text()):
                assert cli.poll() is None, err.read_text()
                assert time.monotonic() < bound, "Model Analyzer never saved a checkpoint"
                time.sleep(0.2)
            cli.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal delivers to the CLI
            code = cli.wait(BOUND_S)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
    assert code == 130, err.read_text()
    assert "Traceback" not in err.read_text() and "--resume" in err.read_text()
    assert _files(records) == committed  # an interrupted search writes nothing: the previous record stands
    assert "Received SIGINT" in log_path.read_text()
    _assert_nothing_left(small_project)
    checkpoint = analyzer.latest_checkpoint(phase / "checkpoints")
    assert checkpoint is not None
    before = {(m.variant, m.concurrency): m for m in analyzer.parse_checkpoint(checkpoint, MODEL)}
    assert before
    ports = _ports(small_project)
    resumed_from = len(log_path.read_text())

    result = subprocess.run(_command(small_project, "--timeout", "170", "--resume"), capture_output=True, text=True,
                            timeout=BOUND_S)
    assert result.returncode == 3, result.stdout + result.stderr  # documented: recorded, but the SLO is missed
    assert "Traceback" not in result.stderr
    assert _ports(small_project) == ports  # the same server ports: the checkpoint's keys name them
    resumed_log = log_path.read_text()[resumed_from:]
    assert "Loaded checkpoint" in resumed_log and "No checkpoint file found" not in resumed_log
    for variant, concurrency in before:  # what the interrupted run measured is not measured again
        assert f"Profiling {variant}: concurrency={concurrency}\n" not in resumed_log

    record = read_record(record_path(small_project, MODEL, "cpu"))
    assert record.search.complete and record.search.variants_measured == 3
    rows = {(v.variant, v.concurrency): v for v in record.variants}
    for (variant, concurrency), m in before.items():  # ...and its figures are in the record as measured then
        assert rows[(f"brute/{variant}", concurrency)].throughput_per_s == pytest.approx(m.throughput_per_s, abs=0.06)
    assert len(rows) > len(before)  # and the resumed run measured the rest

    # No variant meets p99 0.01 ms: the record says so and keeps the closest (lowest p99) as its chosen point.
    assert record.slo_p99_ms == 0.01 and record.slo_met is False and record.chosen.meets_slo is False
    assert not any(v.meets_slo for v in record.variants)
    assert record.chosen.p99_ms == min(v.p99_ms for v in record.variants)
    assert "slo_met: false" in record_path(small_project, MODEL, "cpu").read_text()
    said = " ".join(result.stdout.split())
    assert "no variant meets the p99 SLO of 0.01 ms" in said and f"the closest is {record.chosen.variant}" in said
    assert "accept_unmet_slo" in said and "chosen:" not in said

    # The plan does not size replicas from it.
    local = capacity.capacity_json(build_plan(load_fleet(small_project, "local")))["models"][MODEL]["regions"]["local"]
    assert local["tuned"] is False
    _assert_nothing_left(small_project)


def test_a_failing_model_analyzer_is_reported_with_its_log(tmp_path, triton_install):
    """Model Analyzer refusing its config (a model repository that is not there) is a TuneError quoting its log."""
    from modelfleet.loader import load_model
    from modelfleet.triton.runtime import free_ports
    from modelfleet.tuning import run

    spec = load_model(Path(__file__).resolve().parents[2] / "models" / f"{MODEL}.yaml")
    endpoints = run.Endpoints.local(*free_ports(3))
    config = analyzer.profile_config(spec, mode="brute", model_repository=tmp_path / "missing", work_dir=tmp_path,
                                     perf_analyzer_path=triton_install.perf_analyzer, http=endpoints.http,
                                     grpc=endpoints.grpc, metrics_url=endpoints.metrics_url,
                                     cpu_only=run.cpu_only("cpu"))
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    events = []
    progress = run.Progress(on_event=lambda kind, text: events.append((kind, text)))
    with pytest.raises(run.TuneError, match=r"(?s)model-analyzer exited with code 1 .*nonexistent path") as error:
        run.run_model_analyzer(triton_install, tmp_path / "profile.yaml", tmp_path, time.monotonic() + BOUND_S, progress)
    assert not isinstance(error.value, run.TuneInterrupted)
    assert str(tmp_path / "missing") in (tmp_path / "model-analyzer.log").read_text()
    assert any(kind == "log" and "missing" in text for kind, text in events)  # shown as it happened
    assert progress.measurements == 0
    assert _processes_in(tmp_path) == []


def test_tune_against_a_running_triton_by_url(small_project, triton_install):
    """--triton-url: profile a Triton someone else runs (a GPU node in a cluster, here one on localhost that this
    test starts), which holds the model; the record names the hardware class it was told."""
    from modelfleet.loader import load_fleet
    from modelfleet.local import build_local_repository
    from modelfleet.plan import build_plan
    from modelfleet.triton.runtime import TritonServer, free_ports

    repository = build_local_repository(build_plan(load_fleet(small_project, "local")), small_project,
                                        small_project / "build" / "remote-repository")
    http, grpc, metrics = free_ports(3)
    with TritonServer(repository, http, grpc, metrics, install=triton_install) as server:
        result = subprocess.run(
            _command(small_project, "--timeout", "170", "--hardware", "cpu", "--triton-url", server.http_url,
                     "--grpc-url", server.grpc_url, "--metrics-url", server.metrics_url),
            capture_output=True, text=True, timeout=BOUND_S)
        assert result.returncode == 0, result.stdout + result.stderr
        assert server.process.poll() is None, "tune must not stop a server it did not start"
        # Model Analyzer and perf_analyzer are gone; the only process left in the project is the test's server.
        assert [p for p in _processes_in(small_project) if "tritonserver" not in p and "triton_python" not in p] == []
    record = read_record(record_path(small_project, MODEL, "cpu"))
    assert record.search.complete and record.slo_met and record.chosen.throughput_per_s > 0
    assert {v.max_queue_delay_us for v in record.variants} >= {0, 500}
