"""Tuning: Model Analyzer's outputs read back (golden files from a real run), the operating point chosen under
the SLO, the profile config built from the spec, records loaded, and replicas sized from measured throughput.

The golden fixtures under tests/fixtures/model_analyzer/ were recorded from a real `modelfleet tune
fraud-detector --search quick` (quick phase) on this project's CPU machine. Records built in this file with
`make_record` are test inputs for the capacity arithmetic, not measurements.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2  # a test dependency: Triton's model-config schema

from modelfleet.loader import SpecError, load_fleet, load_model
from modelfleet.plan import build_plan
from modelfleet.triton.config import render_config
from modelfleet.catalogue import hardware
from modelfleet.tuning import analyzer, capacity, run
from modelfleet.tuning.analyzer import Measurement, Settings
from modelfleet.tuning.record import (Hardware, Search, TuningRecord, Variant, Versions, read_record,
                                      record_path, write_record)

PROJECT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "model_analyzer" / "fraud-detector-quick"
MODEL = "fraud-detector"


# --- golden Model Analyzer outputs ---------------------------------------------------------------------

def test_inference_csv_is_read_row_by_row():
    rows = analyzer.parse_inference_csv(GOLDEN / "export" / "results" / "metrics-model-inference.csv")
    assert len(rows) == 15
    assert {r.variant for r in rows} == {"fraud-detector_config_default", "fraud-detector_config_0",
                                         "fraud-detector_config_1"}
    first = rows[0]
    assert (first.variant, first.concurrency, first.throughput_per_s, first.p99_ms, first.satisfies_constraints) == (
        "fraud-detector_config_default", 128, 9071.8, 38.2, True)


def test_a_table_that_is_not_model_analyzers_is_refused(tmp_path):
    bad = tmp_path / "other.csv"
    bad.write_text("Model,Concurrency\nx,1\n")
    with pytest.raises(ValueError, match="not a Model Analyzer inference table"):
        analyzer.parse_inference_csv(bad)


@pytest.mark.parametrize("variant, expected", [
    ("fraud-detector_config_default", Settings(64, 1, True, 500, ())),
    ("fraud-detector_config_0", Settings(16, 1, True, 0, ())),
    ("fraud-detector_config_1", Settings(16, 2, True, 0, ())),
])
def test_variant_configs_give_batching_and_instances(variant, expected):
    text = (GOLDEN / "output_model_repository" / variant / "config.pbtxt").read_text()
    assert analyzer.parse_variant_config(text) == expected


def test_variant_config_parser_reads_preferred_sizes_several_groups_and_no_batching():
    text = """
name: "m"
max_batch_size: 32
instance_group { count: 2 kind: KIND_CPU }
instance_group { kind: KIND_CPU }
dynamic_batching { preferred_batch_size: 8 preferred_batch_size: 16 max_queue_delay_microseconds: 200 }
"""
    assert analyzer.parse_variant_config(text) == Settings(32, 3, True, 200, (8, 16))
    assert analyzer.parse_variant_config('name: "m"\nmax_batch_size: 0\n') == Settings(0, 1, False, None, ())


def test_checkpoint_measurements_match_the_csv():
    from_checkpoint = analyzer.parse_checkpoint(GOLDEN / "checkpoints" / "0.ckpt", MODEL)
    assert len(from_checkpoint) == 10  # the excerpt keeps two of the three variants
    table = {(r.variant, r.concurrency): r for r in
             analyzer.parse_inference_csv(GOLDEN / "export" / "results" / "metrics-model-inference.csv")}
    for m in from_checkpoint:
        row = table[(m.variant, m.concurrency)]
        assert m.throughput_per_s == pytest.approx(row.throughput_per_s, abs=0.06)
        assert m.p99_ms == pytest.approx(row.p99_ms, abs=0.06)
    settings = {m.variant: m.settings for m in from_checkpoint}
    assert settings["fraud-detector_config_0"] == Settings(16, 1, True, 0, ())
    assert settings["fraud-detector_config_default"] == Settings(64, 1, True, 500, ())


def test_results_of_a_finished_run_come_from_the_csv_with_each_variants_settings():
    rows = analyzer.read_results(GOLDEN, MODEL)
    assert len(rows) == 15
    assert all(r.settings is not None for r in rows)
    assert {r.settings.instance_count for r in rows if r.variant.endswith("config_1")} == {2}


def test_an_interrupted_run_is_read_from_its_checkpoint(tmp_path):
    shutil.copytree(GOLDEN / "checkpoints", tmp_path / "checkpoints")  # no export/: Model Analyzer was stopped
    rows = analyzer.read_results(tmp_path, MODEL)
    assert len(rows) == 10 and all(r.settings for r in rows)


# --- choosing the operating point -------------------------------------------------------------------------

def _golden_rows():
    return analyzer.read_results(GOLDEN, MODEL)


def test_the_best_variant_is_the_most_throughput_within_the_slo():
    chosen = analyzer.select(_golden_rows(), slo_p99_ms=50)
    assert chosen.slo_met and chosen.candidates == 15
    assert (chosen.best.variant, chosen.best.concurrency, chosen.best.throughput_per_s) == (
        "fraud-detector_config_default", 128, 9071.8)


def test_a_tighter_slo_moves_the_operating_point():
    chosen = analyzer.select(_golden_rows(), slo_p99_ms=20)
    assert (chosen.best.variant, chosen.best.concurrency, chosen.best.throughput_per_s) == (
        "fraud-detector_config_0", 32, 7362.4)
    faster = [m for m in _golden_rows() if m.throughput_per_s > chosen.best.throughput_per_s]
    assert faster and all(m.p99_ms > 20 for m in faster)


def test_when_no_variant_meets_the_slo_the_closest_is_returned_and_flagged():
    chosen = analyzer.select(_golden_rows(), slo_p99_ms=0.5)
    assert not chosen.slo_met and chosen.candidates == 0
    assert (chosen.best.variant, chosen.best.concurrency, chosen.best.p99_ms) == ("fraud-detector_config_0", 2, 0.9)


def test_the_latency_objective_trades_at_most_a_tenth_of_the_throughput_for_p99():
    chosen = analyzer.select(_golden_rows(), slo_p99_ms=50, objective="latency")
    best = 9071.8
    assert chosen.best.throughput_per_s >= 0.9 * best
    within = [m for m in _golden_rows() if m.throughput_per_s >= 0.9 * best and m.p99_ms <= 50]
    assert chosen.best.p99_ms == min(m.p99_ms for m in within)


def test_repeated_measurements_of_one_config_count_once_with_mean_throughput_and_worse_p99():
    lucky = Measurement("quick/m_config_1", 64, 11000.0, 16.0, settings=Settings(16, 2, True, 0))
    again = Measurement("delays/m_config_0", 64, 7000.0, 28.0, settings=Settings(16, 2, True, 0))
    other = Measurement("delays/m_config_1", 64, 8500.0, 20.0, settings=Settings(16, 2, True, 100))
    chosen = analyzer.select([lucky, again, other], slo_p99_ms=50).best
    assert (chosen.variant, chosen.throughput_per_s, chosen.p99_ms) == ("delays/m_config_0+quick/m_config_1", 9000.0, 28.0)


def test_selection_breaks_ties_deterministically_and_refuses_empty_results():
    a = Measurement("b", 4, 100.0, 5.0, settings=Settings(8, 2, True, 0))
    b = Measurement("a", 4, 100.0, 5.0, settings=Settings(8, 1, True, 0))
    assert analyzer.select([a, b], 10).best is b  # fewer instances first
    with pytest.raises(ValueError, match="measured nothing"):
        analyzer.select([Measurement("x", 1, 0.0, 1.0)], 10)


# --- the profile config -----------------------------------------------------------------------------------

def _spec(root: Path = PROJECT, name: str = MODEL):
    return load_model(root / "models" / f"{name}.yaml")


def _profile(spec, mode, hardware_class: str = "cpu", **kwargs):
    """The profile config as `modelfleet tune` builds it for `hardware_class` (cpu_only decided by run.cpu_only)."""
    endpoints = run.Endpoints.local(1, 2, 3)
    return analyzer.profile_config(
        spec, mode=mode, model_repository=Path("/repo"), work_dir=Path("/work"),
        perf_analyzer_path=Path("/venv/bin/perf_analyzer"), http=endpoints.http, grpc=endpoints.grpc,
        metrics_url=endpoints.metrics_url, cpu_only=run.cpu_only(hardware_class), **kwargs)


def test_the_slo_becomes_the_p99_constraint_and_the_search_settings():
    config = _profile(_spec(), "brute")
    model = config["profile_models"][MODEL]
    assert model["constraints"] == {"perf_latency_p99": {"max": 50}}
    assert model["objectives"] == {"perf_throughput": 10}
    assert config["triton_launch_mode"] == "remote" and config["run_config_search_mode"] == "brute"
    assert (config["triton_http_endpoint"], config["triton_grpc_endpoint"], config["triton_metrics_url"]) == (
        "127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3/metrics")
    assert config["perf_analyzer_flags"]["measurement-mode"] == "time_windows"


@pytest.mark.parametrize("p99_ms, constraint", [(50, 50), (12.5, 13), (0.01, 1)])
def test_model_analyzer_gets_whole_milliseconds_rounded_up_never_zero(project_copy, p99_ms, constraint):
    # Model Analyzer reads the constraint as an int: 0.01 would become 0 and crash it (ZeroDivisionError).
    path = project_copy / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["slo"]["p99_ms"] = p99_ms
    path.write_text(yaml.safe_dump(data))
    model = _profile(_spec(project_copy), "brute")["profile_models"][MODEL]
    assert model["constraints"] == {"perf_latency_p99": {"max": constraint}}


@pytest.mark.parametrize("hardware_class, cpu_only, kind", [
    ("cpu", True, "KIND_CPU"),
    ("nvidia-l4", False, "KIND_GPU"),
    ("nvidia-h100", False, "KIND_GPU"),
])
def test_the_hardware_class_decides_cpu_only_and_the_instance_kind(hardware_class, cpu_only, kind):
    assert run.cpu_only(hardware_class) is cpu_only
    model = _profile(_spec(), "brute", hardware_class)["profile_models"][MODEL]
    assert model["cpu_only"] is cpu_only
    assert model["model_config_parameters"]["instance_group"] == [[{"kind": kind, "count": [1, 2]}]]


def test_brute_search_sweeps_every_bound_of_the_spec():
    params = _profile(_spec(), "brute")["profile_models"][MODEL]["model_config_parameters"]
    assert params == {
        "instance_group": [[{"kind": "KIND_CPU", "count": [1, 2]}]],
        "max_batch_size": [16, 64],
        "dynamic_batching": {"max_queue_delay_microseconds": [0, 100, 1000]},
    }
    assert analyzer.search_space(_spec()) == 12


def test_quick_search_gets_bounds_not_lists(project_copy):
    config = _profile(_spec(), "quick")
    assert (config["run_config_search_min_model_batch_size"], config["run_config_search_max_model_batch_size"]) == (16, 64)
    assert (config["run_config_search_min_instance_count"], config["run_config_search_max_instance_count"]) == (1, 2)
    assert "model_config_parameters" not in config["profile_models"][MODEL]


def test_spec_bounds_and_a_latency_objective_flow_into_the_config(project_copy):
    path = project_copy / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["tuning"] = {"objective": "latency", "max_batch_sizes": [8, 32], "instance_counts": [1],
                      "queue_delays_us": [0, 250], "preferred_batch_sizes": [[4, 8]],
                      "concurrency": {"min": 2, "max": 16}}
    path.write_text(yaml.safe_dump(data))
    spec = _spec(project_copy)
    config = _profile(spec, "brute", concurrency=[2, 4])
    model = config["profile_models"][MODEL]
    assert model["objectives"] == {"perf_throughput": 5, "perf_latency_p99": 5}
    assert model["model_config_parameters"]["dynamic_batching"] == {
        "max_queue_delay_microseconds": [0, 250], "preferred_batch_size": [[4, 8]]}
    assert model["parameters"] == {"concurrency": [2, 4]}
    assert (config["run_config_search_min_concurrency"], config["run_config_search_max_concurrency"]) == (2, 16)
    assert analyzer.search_space(spec) == 2 * 1 * 2 * 1


@pytest.mark.parametrize("tuning, message", [
    ({"max_batch_sizes": [128]}, "tuning.max_batch_sizes: [128] exceed max_batch_size 64"),
    ({"preferred_batch_sizes": [[32]]}, "tuning.preferred_batch_sizes: [32] exceed the smallest searched max_batch_size 16"),
    ({"concurrency": {"min": 8, "max": 4}}, "min (8) must be <= max (4)"),
    ({"objective": "cost"}, "tuning.objective: must be one of 'throughput' or 'latency', got 'cost'"),
])
def test_bad_tuning_bounds_are_refused_with_the_field(project_copy, tuning, message):
    path = project_copy / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["tuning"] = tuning
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as error:
        load_model(path, f"models/{MODEL}.yaml")
    assert message in str(error.value)


# --- records ----------------------------------------------------------------------------------------------

def make_record(model: str, hardware_class: str, throughput: float, p99: float, slo: float = 50.0,
                slo_met: bool = True) -> TuningRecord:
    """A record with given figures: input for the capacity arithmetic, not a measurement."""
    chosen = Variant(variant="quick/x_config_0", max_batch_size=16, instance_count=1, dynamic_batching=True,
                     max_queue_delay_us=100, concurrency=8, throughput_per_s=throughput, p99_ms=p99,
                     meets_slo=slo_met)
    return TuningRecord(
        model=model, hardware_class=hardware_class, created="2026-01-01T00:00:00+00:00", objective="throughput",
        slo_p99_ms=slo, slo_met=slo_met, chosen=chosen, variants=(chosen,),
        hardware=Hardware(hardware_class=hardware_class, cpu_model="test", cores=2),
        versions=Versions(triton="2.51.0", model_analyzer="1.58.0", perf_analyzer="2.51.0"),
        search=Search(mode="quick", variants_measured=1, measurements=1, space=12, duration_s=1.0, complete=True),
    )


def _write(root: Path, record: TuningRecord) -> Path:
    return write_record(record, record_path(root, record.model, record.hardware_class))


def test_a_record_round_trips_and_lists_one_variant_per_line(tmp_path):
    record = make_record(MODEL, "nvidia-l4", 1000.0, 12.5)
    path = _write(tmp_path, record)
    assert read_record(path) == record
    assert "- {variant: quick/x_config_0, max_batch_size: 16" in path.read_text()


def test_the_loader_reads_records_beside_the_models_and_they_are_not_model_specs(project_copy):
    _write(project_copy, make_record(MODEL, "nvidia-l4", 1000.0, 12.5))
    fleet = load_fleet(project_copy, "prod")
    assert set(fleet.tuning) >= {(MODEL, "nvidia-l4")}


def test_a_record_in_the_wrong_file_or_broken_is_a_spec_problem(project_copy):
    record = make_record(MODEL, "nvidia-l4", 1000.0, 12.5)
    write_record(record, record_path(project_copy, MODEL, "nvidia-t4"))
    with pytest.raises(SpecError, match=r"fraud-detector.tuning/nvidia-t4.yaml:3 model: this file holds the record "
                                        r"of fraud-detector on nvidia-l4"):
        load_fleet(project_copy, "prod")
    path = record_path(project_copy, MODEL, "nvidia-t4")
    path.write_text(path.read_text().replace("slo_met: true", "slo_met: maybe"))
    with pytest.raises(SpecError, match=r"nvidia-t4.yaml:\d+ slo_met: expected true or false"):
        load_fleet(project_copy, "prod")


COMMITTED = {"fraud-detector/cpu", "sentiment/cpu"}


def _committed_records() -> list[Path]:
    return sorted(PROJECT.glob("models/*.tuning/*.yaml"))


def test_the_committed_records_are_the_two_cpu_records():
    assert {f"{p.parent.name.removesuffix('.tuning')}/{p.stem}" for p in _committed_records()} == COMMITTED


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_a_committed_record_is_consistent_and_matches_model_analyzers_tables(name):
    model, hardware_class = name.split("/")
    path = record_path(PROJECT, model, hardware_class)
    record = read_record(path)
    assert (record.model, record.hardware_class) == (model, hardware_class)
    assert record.versions.triton and record.versions.model_analyzer and record.hardware.cpu_model
    assert record.slo_p99_ms == _spec(name=model).slo.p99_ms
    assert record.search.complete and record.search.measurements == len(record.variants)
    assert record.search.variants_measured == len({v.variant for v in record.variants})

    # The chosen point: every variant row it merges, at its concurrency, and their mean throughput.
    chosen = record.chosen
    rows = [v for v in record.variants if v.variant in chosen.variant.split("+") and v.concurrency == chosen.concurrency]
    assert len(rows) == len(chosen.variant.split("+")) >= 1
    assert chosen.throughput_per_s == pytest.approx(sum(v.throughput_per_s for v in rows) / len(rows), abs=0.1)
    assert chosen.p99_ms == max(v.p99_ms for v in rows)
    assert record.slo_met and chosen.meets_slo and chosen.p99_ms <= record.slo_p99_ms
    assert all(v.meets_slo == (v.p99_ms <= record.slo_p99_ms) for v in record.variants)

    # Every row is a row of the inference table Model Analyzer exported for its phase, and nothing else is.
    tables = sorted(a for a in record.artifacts if a.endswith("-metrics-model-inference.csv"))
    assert {Path(a).name.split("-")[0] for a in tables} == {v.variant.split("/")[0] for v in record.variants}
    exported = {}
    for artefact in tables:
        phase = Path(artefact).name.split("-")[0]
        for m in analyzer.parse_inference_csv(path.parent / artefact):
            exported[(f"{phase}/{m.variant}", m.concurrency)] = m
    assert set(exported) == {(v.variant, v.concurrency) for v in record.variants}
    for v in record.variants:
        m = exported[(v.variant, v.concurrency)]
        assert (v.throughput_per_s, v.p99_ms) == (pytest.approx(m.throughput_per_s, abs=0.05),
                                                  pytest.approx(m.p99_ms, abs=0.05))
    for artefact in record.artifacts:
        assert (path.parent / artefact).is_file(), artefact

    # Choosing again from the record's own rows lands on the same point.
    measured = [Measurement(v.variant, v.concurrency, v.throughput_per_s, v.p99_ms, settings=Settings(
        v.max_batch_size, v.instance_count, v.dynamic_batching, v.max_queue_delay_us, tuple(v.preferred_batch_sizes)))
        for v in record.variants]
    again = analyzer.select(measured, record.slo_p99_ms, record.objective).best
    assert (again.variant, again.concurrency, again.throughput_per_s, again.p99_ms) == (
        chosen.variant, chosen.concurrency, chosen.throughput_per_s, chosen.p99_ms)


# --- capacity ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rps, headroom, throughput, bounds, expected", [
    (0, 1.3, 1000, (2, 12), (2, 0)),          # zero traffic: the declared minimum
    (0, 1.3, 1000, (0, 6), (0, 0)),           # scale to zero
    (1, 1.3, 1000, (0, 6), (1, 1)),           # any traffic: at least one replica
    (1200, 1.3, 520, (1, 12), (3, 3)),        # 1560 / 520 is exactly 3, not 4 from float error
    (1200, 1.3, 500, (1, 12), (4, 4)),
    (10000, 1.3, 500, (2, 12), (12, 26)),     # a max bound that binds
    (100, 1.3, 10000, (3, 12), (3, 1)),       # a min bound that binds
])
def test_replicas_from_measured_throughput(rps, headroom, throughput, bounds, expected):
    assert capacity.replicas_for(rps, headroom, throughput, *bounds) == expected


def _prod(root: Path):
    return build_plan(load_fleet(root, "prod"))


def _placement(plan, region: str, model: str):
    return next(p for r in plan.regions if r.ref == region for p in r.placements if p.model == model)


def test_the_plan_sizes_tuned_regions_and_falls_back_where_there_is_no_record(project_copy):
    _write(project_copy, make_record(MODEL, "nvidia-l4", 400.0, 20.0))  # fraud on L4; sentiment has no T4 record
    plan = _prod(project_copy)
    east = _placement(plan, "aws:us-east-1", MODEL)  # 1200 rps x 1.3 / 400 = 3.9
    assert (east.tuned, east.desired_replicas, east.needed_replicas, east.record) == (
        True, 4, 4, "models/fraud-detector.tuning/nvidia-l4.yaml")
    west = _placement(plan, "aws:eu-west-1", MODEL)  # 400 x 1.3 / 400 = 1.3 -> 2, also the min
    assert (west.desired_replicas, west.needed_replicas) == (2, 2)
    sentiment = _placement(plan, "aws:us-east-1", "sentiment")
    assert (sentiment.tuned, sentiment.desired_replicas, sentiment.record) == (False, 1, "")
    assert any("untuned" in w and "sentiment" in w and "fraud-detector" not in w for w in plan.warnings)
    pool = next(p for r in plan.regions if r.ref == "aws:us-east-1" for p in r.pools if p.name == "gpu-l4")
    assert pool.desired_nodes == 4  # one L4 per node, one GPU per replica


def test_gpu_nodes_come_from_gpus_not_replicas_on_a_multi_gpu_node(project_copy):
    # Fraud on H100 nodes (8 GPUs each) with 2 GPUs per replica, in dev (aws:us-east-1 only, 1200 rps).
    path = project_copy / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["hardware"] = {"gpu_class": "nvidia-h100", "gpus_per_replica": 2}
    path.write_text(yaml.safe_dump(data))
    _write(project_copy, make_record(MODEL, "nvidia-h100", 320.0, 20.0))  # 1200 x 1.3 / 320 = 4.875 -> 5 replicas
    plan = build_plan(load_fleet(project_copy, "dev"))
    east = _placement(plan, "aws:us-east-1", MODEL)
    assert (east.tuned, east.desired_replicas, east.gpus_per_replica) == (True, 5, 2)
    offering = hardware().classes["nvidia-h100"].aws
    assert offering.gpus_per_node == 8
    pool = next(p for r in plan.regions for p in r.pools if p.hardware_class == "nvidia-h100")
    assert pool.desired_nodes == math.ceil(5 * 2 / 8) == 2  # 10 GPUs on 8-GPU nodes: not 5 nodes, not 10
    bounds = data["scaling"]  # 2..12 replicas: 4..24 GPUs
    assert (pool.min_nodes, pool.max_nodes) == (math.ceil(bounds["min_replicas"] * 2 / 8),
                                                math.ceil(bounds["max_replicas"] * 2 / 8)) == (1, 3)
    entry = capacity.capacity_json(plan)["models"][MODEL]["regions"]["aws:us-east-1"]
    assert (entry["replicas"], entry["gpus"], entry["max_gpus"]) == (5, 10, 24)
    # Each replica pays for its share of a node: 2 of its 8 GPUs.
    share = offering.hourly_usd * 2 / offering.gpus_per_node
    assert entry["monthly_usd"] == pytest.approx(round(5 * share * hardware().hours_per_month, 2), abs=0.005)


def test_capacity_json_per_model_and_region(project_copy):
    _write(project_copy, make_record(MODEL, "nvidia-l4", 400.0, 20.0))
    doc = capacity.capacity_json(_prod(project_copy))
    assert doc["headroom"] == 1.3
    east = doc["models"][MODEL]["regions"]["aws:us-east-1"]
    assert {k: east[k] for k in ("replicas", "gpus", "tuned", "throughput_per_replica", "p99_ms", "record")} == {
        "replicas": 4, "gpus": 4, "tuned": True, "throughput_per_replica": 400.0, "p99_ms": 20.0,
        "record": "models/fraud-detector.tuning/nvidia-l4.yaml"}
    l4 = hardware().classes["nvidia-l4"].aws  # one GPU per node, one GPU per replica: a replica is a node
    assert l4.gpus_per_node == 1
    assert east["monthly_usd"] == pytest.approx(round(4 * l4.hourly_usd * hardware().hours_per_month, 2), abs=0.005)
    assert doc["models"]["sentiment"]["regions"]["aws:us-east-1"]["tuned"] is False
    assert doc["models"]["sentiment"]["failover"]["checked"] is False
    json.dumps(doc)  # plain data


def test_a_max_bound_that_binds_is_a_warning_and_failover_is_checked(project_copy):
    _write(project_copy, make_record(MODEL, "nvidia-l4", 100.0, 20.0))  # 1200 x 1.3 / 100 = 16 > 12
    plan = _prod(project_copy)
    east = _placement(plan, "aws:us-east-1", MODEL)
    assert (east.desired_replicas, east.needed_replicas) == (12, 16)
    assert any("needs 16 replicas" in w and "max_replicas is 12" in w for w in plan.warnings)
    verdict = capacity.failover(plan, MODEL)  # others: 3 regions x 12 x 100 = 3600 < 2400 demand? no: ok
    assert verdict == {"checked": True, "largest_region": "aws:us-east-1", "lost_rps": 1200.0, "demand_rps": 2400.0,
                       "others_max_rps": 3600.0, "ok": True,
                       "basis": "other regions at max replicas x measured throughput per replica, no headroom"}


def test_failover_shortfall_warns(project_copy):
    _write(project_copy, make_record(MODEL, "nvidia-l4", 60.0, 20.0))  # others: 3 x 12 x 60 = 2160 < 2400
    plan = _prod(project_copy)
    assert capacity.failover(plan, MODEL)["ok"] is False
    assert any("losing aws:us-east-1 leaves 2,160 rps" in w for w in plan.warnings)


def test_a_record_that_missed_the_slo_is_refused_unless_the_spec_accepts_it(project_copy):
    _write(project_copy, make_record(MODEL, "nvidia-l4", 400.0, 80.0, slo_met=False))
    plan = _prod(project_copy)
    east = _placement(plan, "aws:us-east-1", MODEL)
    assert (east.tuned, east.desired_replicas) == (False, 2)
    assert any("not sized from models/fraud-detector.tuning/nvidia-l4.yaml" in w and "accept_unmet_slo" in w
               for w in plan.warnings)
    path = project_copy / "models" / f"{MODEL}.yaml"
    data = yaml.safe_load(path.read_text())
    data["tuning"] = {"accept_unmet_slo": True}
    path.write_text(yaml.safe_dump(data))
    east = _placement(_prod(project_copy), "aws:us-east-1", MODEL)
    assert (east.tuned, east.desired_replicas) == (True, 4)


def test_the_local_stack_reports_its_cpu_record(project_copy):
    _write(project_copy, make_record(MODEL, "cpu", 5000.0, 10.0))
    for stale in project_copy.glob("models/sentiment.tuning"):
        shutil.rmtree(stale)
    doc = capacity.capacity_json(build_plan(load_fleet(project_copy, "local")))
    local = doc["models"][MODEL]["regions"]["local"]
    assert (local["replicas"], local["tuned"], local["throughput_per_replica"], local["record"]) == (
        1, True, 5000.0, "models/fraud-detector.tuning/cpu.yaml")
    assert doc["models"]["sentiment"]["regions"]["local"]["tuned"] is False


def test_the_renderer_gets_settings_from_usable_records_only(project_copy):
    _write(project_copy, make_record(MODEL, "cpu", 5000.0, 10.0))
    _write(project_copy, make_record("sentiment", "cpu", 50.0, 500.0, slo=120.0, slo_met=False))
    settings = capacity.tuned_settings(build_plan(load_fleet(project_copy, "local")))
    assert set(settings) == {(MODEL, "cpu")}
    s = settings[(MODEL, "cpu")]
    assert (s.max_batch_size, s.instance_count, s.max_queue_delay_us) == (16, 1, 100)
    # ...and the config Triton loads carries them (read back through Triton's own schema).
    config = text_format.Parse(render_config(_spec(project_copy), "cpu", s), model_config_pb2.ModelConfig())
    assert (config.max_batch_size, sum(g.count for g in config.instance_group),
            config.dynamic_batching.max_queue_delay_microseconds) == (16, 1, 100)


# --- resuming -----------------------------------------------------------------------------------------------

def test_resume_keeps_the_ports_while_only_closed_connections_linger_on_them(tmp_path):
    # Model Analyzer's checkpoint names the server's ports: new ports on --resume would re-measure everything.
    ports = run._ports(tmp_path, resume=False)
    with socket.socket() as listener:  # the previous run's server, and a client it served and hung up on
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", ports[0]))
        listener.listen()
        with socket.create_connection(("127.0.0.1", ports[0])) as client:
            served, _ = listener.accept()
            served.close()  # the server closes first: its side of the connection waits in TIME_WAIT
            assert client.recv(1) == b""
    assert run._ports(tmp_path, resume=True) == ports
    with socket.socket() as squatter:  # something else listening there now: fresh ports
        squatter.bind(("127.0.0.1", ports[1]))
        squatter.listen()
        fresh = run._ports(tmp_path, resume=True)
    assert fresh != ports and ports[1] not in fresh
    assert run._ports(tmp_path, resume=True) == fresh  # and those are kept from then on
