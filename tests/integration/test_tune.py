"""A real end-to-end `modelfleet tune` on CPU: Triton, Model Analyzer and perf_analyzer, in under 3 minutes.

The fraud detector's search is narrowed in a copy of the project (one max batch size, one instance count, two
queue delays, concurrency up to 8) so the run stays short; everything else is the product path: the CLI, the
explicit-mode server it starts, Model Analyzer's brute search, the record, the plots, the plan and the renderer.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
LIMIT_S = 180


@pytest.fixture
def small_project(project_copy: Path, build_examples) -> Path:
    build_examples(project_copy / "build" / "model-artifacts")
    path = project_copy / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["tuning"] = {"max_batch_sizes": [16], "instance_counts": [1], "queue_delays_us": [0, 500],
                      "concurrency": {"min": 1, "max": 8}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return project_copy


def _listening(ports: list[int]) -> list[int]:
    """Ports something still accepts connections on (TIME_WAIT leftovers of closed clients do not count)."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy


def test_tune_measures_records_and_feeds_the_plan(small_project, triton_install):
    from modelfleet.loader import load_fleet
    from modelfleet.plan import build_plan
    from modelfleet.tuning import capacity
    from modelfleet.tuning.record import read_record, record_path

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet.cli_tune", MODEL, "--search", "brute", "--timeout", "170",
         "--root", str(small_project)],
        capture_output=True, text=True, timeout=LIMIT_S + 60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < LIMIT_S, f"the tune took {elapsed:.0f} s"

    path = record_path(small_project, MODEL, "cpu")
    record = read_record(path)
    assert record.slo_met and record.search.complete and record.search.mode == "brute"
    # Two queue delays plus Model Analyzer's default config, each at a concurrency sweep.
    assert record.search.variants_measured == 3 and record.search.space == 2
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

    # No server or Model Analyzer is left behind: the ports of the run are free again.
    ports = [int(p) for p in (small_project / "build" / "tuning" / MODEL / "cpu" / "ports.json").read_text()
             .strip("[]\n").split(",")]
    assert _listening(ports) == []

    plan = build_plan(load_fleet(small_project, "local"))
    local = capacity.capacity_json(plan)["models"][MODEL]["regions"]["local"]
    assert local["tuned"] and local["throughput_per_replica"] == record.chosen.throughput_per_s
    settings = capacity.tuned_settings(plan)[(MODEL, "cpu")]
    assert settings.max_queue_delay_us == record.chosen.max_queue_delay_us
