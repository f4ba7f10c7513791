"""The tuning search's own decisions: which knobs Model Analyzer searches per backend and which modelfleet sweeps,
lower bounds when throughput still rises at the top, and Model Analyzer's quick-search loop stopped as converged
with its log bounded."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest

from modelfleet.loader import load_model
from modelfleet.spec import ModelSpec
from modelfleet.triton.runtime import TritonInstall
from modelfleet.tuning import analyzer, run
from modelfleet.tuning.analyzer import Measurement, Settings
from modelfleet.tuning.record import read_record, write_record

ROOT = Path(__file__).resolve().parents[1]
SKIP = "[Model Analyzer] Existing measurement found for run config. Skipping profile"


def fraud(**changes) -> ModelSpec:
    spec = load_model(ROOT / "models" / "fraud-detector.yaml")
    return ModelSpec.model_validate({**spec.model_dump(by_alias=True, exclude_unset=True), **changes})


# --- knobs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,mode,searched,swept", [
    ({}, "quick", ("max_batch_size", "instance_count", "concurrency"), ("max_queue_delay_us",)),
    ({"tuning": {"preferred_batch_sizes": [[4]]}}, "quick", ("max_batch_size", "instance_count", "concurrency"),
     ("max_queue_delay_us", "preferred_batch_sizes")),
    ({"max_batch_size": 0, "batching": {}}, "quick", ("instance_count", "concurrency"), ()),
    ({"backend": "vllm", "inputs": [], "outputs": [], "max_batch_size": 0, "batching": {}}, "quick",
     ("concurrency",), ()),
    ({"triton": {"sequence_batching": {"strategy": "direct"}}}, "quick",
     ("max_batch_size", "instance_count", "concurrency"), ()),
    ({}, "brute", ("concurrency",), ("max_batch_size", "instance_count", "max_queue_delay_us")),
])
def test_what_model_analyzer_searches_and_what_modelfleet_sweeps(changes, mode, searched, swept):
    assert analyzer.knobs(fraud(**changes), mode) == (searched, swept)


def test_an_llm_engine_is_searched_over_load_only(tmp_path):
    spec = fraud(backend="vllm", inputs=[], outputs=[], max_batch_size=0, batching={},
                 triton={"instance_groups": [{"kind": "MODEL"}]})
    config = analyzer.profile_config(spec, mode="quick", model_repository=tmp_path, work_dir=tmp_path,
                                     perf_analyzer_path=tmp_path, http="h:1", grpc="h:2", metrics_url="m",
                                     cpu_only=False)
    assert (config["run_config_search_min_instance_count"], config["run_config_search_max_instance_count"]) == (1, 1)
    assert (config["run_config_search_min_model_batch_size"], config["run_config_search_max_model_batch_size"]) == (1, 1)
    assert (config["run_config_search_min_concurrency"], config["run_config_search_max_concurrency"]) == (1, 64)


def test_an_ensemble_is_tuned_through_its_steps():
    data = load_model(ROOT / "models" / "sentiment.yaml").model_dump(by_alias=True, exclude_unset=True)
    data.update(name="pipeline", backend="ensemble", max_batch_size=8, batching={}, source={"local": "x/pipeline"},
                triton={"ensemble": [{"model": "sentiment", "input_map": {"text": "text"},
                                      "output_map": {"scores": "scores"}}]})
    with pytest.raises(run.TuneError, match=r"pipeline is an ensemble: .* tune each of them \(sentiment\)"):
        run.tune(ModelSpec.model_validate(data), ROOT, run.TuneOptions())


def test_a_sequence_model_is_never_given_dynamic_batching_to_search():
    spec = fraud(triton={"sequence_batching": {"strategy": "direct"}})
    assert "dynamic_batching" not in analyzer.brute_parameters(spec, "KIND_CPU")
    assert analyzer.search_space(spec) == len(spec.tuning.batch_sizes_for(64)) * len(spec.tuning.instance_counts)


# --- lower bounds ----------------------------------------------------------------------------------------------

S = Settings(16, 2, True, 1000)


def rows(*points, settings=S):
    return [Measurement(f"quick/m_config_{c}", c, t, 5.0, settings=settings) for c, t in points]


@pytest.mark.parametrize("points,best_at,rising", [
    (((16, 1000), (32, 1500)), 32, True),        # +50% at the top: more load would give more
    (((16, 1000), (32, 1500), (64, 1520)), 64, False),  # +1.3%: saturated
    (((16, 1000), (32, 1500), (64, 1400)), 32, False),  # the best is not the top
    (((32, 1500),), 32, False),                 # one point says nothing about a trend
])
def test_a_best_point_still_rising_at_the_top_is_a_lower_bound(points, best_at, rising):
    measured = rows(*points)
    best = analyzer.select(measured, 50).best
    assert best.concurrency == best_at
    assert analyzer.still_rising(measured, best) is rising


def test_other_settings_do_not_make_a_point_a_lower_bound():
    other = Settings(64, 1, True, 0)
    measured = rows((16, 1000), (32, 1500)) + rows((64, 900), settings=other)
    assert analyzer.still_rising(measured, analyzer.select(measured, 50).best)


def test_records_carry_knobs_convergence_and_lower_bound(tmp_path):
    record = read_record(ROOT / "models" / "fraud-detector.tuning" / "cpu.yaml")
    assert record.lower_bound is False and record.search.converged_without_new_measurements == ()
    updated = record.model_copy(update={
        "lower_bound": True,
        "search": record.search.model_copy(update={
            "searched_by_model_analyzer": ("max_batch_size", "instance_count", "concurrency"),
            "swept_by_modelfleet": ("max_queue_delay_us",), "converged_without_new_measurements": ("quick",),
            "concurrency_extended_to": 256})})
    again = read_record(write_record(updated, tmp_path / "cpu.yaml"))
    assert again == updated


# --- Model Analyzer's loop ---------------------------------------------------------------------------------------

def test_a_bounded_log_counts_a_repeating_cycle_instead_of_writing_it():
    out = io.StringIO()
    log = run.BoundedLog(out, max_bytes=1_000_000, repeats_kept=3)
    log.write("[Model Analyzer] Profiling m_config_0: concurrency=1\n")
    for _ in range(10_000):
        log.write("[Model Analyzer] Creating model config: m_config_1\n")
        log.write(SKIP + "\n")
    log.write("[Model Analyzer] Profile complete\n")
    log.close()
    lines = out.getvalue().splitlines()
    assert lines.count(SKIP) == 3 and len(lines) == 1 + 6 + 1 + 1
    assert lines[-2] == "[modelfleet] 19994 more repeats of the lines above, not logged"


def test_a_bounded_log_stops_at_its_size():
    out = io.StringIO()
    log = run.BoundedLog(out, max_bytes=2_000, repeats_kept=3)
    for i in range(1_000):
        log.write(f"distinct line {i}\n")
    assert len(out.getvalue()) <= 2_000 + 100 and out.getvalue().endswith("[modelfleet] log stopped at 2000 bytes\n")


def test_progress_sees_the_loop_and_a_new_measurement_ends_it():
    progress = run.Progress()
    run._event("[Model Analyzer] Profiling m_config_0: concurrency=1", progress)
    for _ in range(run.LIVELOCK_SKIPS - 1):
        run._event(SKIP, progress)
    assert not progress.looping
    run._event("[Model Analyzer] Profiling m_config_3: concurrency=8", progress)
    assert progress.skips_since_measurement == 0 and progress.measurements == 2
    for _ in range(run.LIVELOCK_SKIPS):
        run._event(SKIP, progress)
    assert progress.looping


# A replay of the loop as Model Analyzer 1.58 prints it (model_analyzer/record/metrics_manager.py), endless until
# SIGINT, which it answers like Model Analyzer: by exiting. The real loop cannot be provoked on demand.
REPLAY = '''
import signal, sys
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
print("[Model Analyzer] Profiling m_config_0: concurrency=1", flush=True)
while True:
    print("[Model Analyzer] Creating model config: m_config_1", flush=True)
    print("[Model Analyzer] Existing measurement found for run config. Skipping profile", flush=True)
'''


def test_model_analyzer_looping_without_new_measurements_is_stopped_as_converged(tmp_path):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "model-analyzer"
    script.write_text(f"#!{sys.executable}\n{REPLAY}")
    script.chmod(0o755)
    install = TritonInstall(prefix=tmp_path / "venv", tritonserver=script, backend_dir=tmp_path,
                            perf_analyzer=script, lib_dir=tmp_path)
    events = []
    progress = run.Progress(on_event=lambda kind, text: events.append((kind, text)), phase="quick")
    work = tmp_path / "work"
    work.mkdir()
    finished = run.run_model_analyzer(install, tmp_path / "profile.yaml", work, time.monotonic() + 120, progress)
    assert finished and progress.converged == ["quick"]
    assert any(kind == "stop" and text.startswith("converged:") for kind, text in events)
    log = (work / "model-analyzer.log").read_text()
    assert log.count("Skipping profile") == run.LOG_REPEATS_KEPT
    assert len(log) < 10_000


def test_the_plan_warns_where_a_committed_record_is_a_lower_bound():
    from modelfleet.loader import load_fleet
    from modelfleet.plan import build_plan

    plan = build_plan(load_fleet(ROOT, "local"))
    warned = [w for w in plan.warnings if "lower bound" in w]
    # sentiment's record: 12,532.5 infer/s at concurrency 32, then 13,439.1 at 64 (+7%), the top of its range;
    # fraud-detector's: 12,137.0 then 12,521.9 (+3%): saturated.
    assert warned == ["sentiment on cpu: 13,439 infer/s per replica is a lower bound (throughput still rising at "
                      "concurrency 64, the highest measured): replicas may be more than the traffic needs"]
