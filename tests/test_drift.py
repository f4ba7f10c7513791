"""Drift, pure: reference profiles and the PSI/KS of a sliding window against them, checked against the
statistics' closed forms; `modelfleet profile` on every supported format, and clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from modelfleet.cli import app
from modelfleet.monitoring.drift import DriftWindow, NumericProfile, Profile, TextProfile, psi

RNG = np.random.default_rng(7)


def test_ks_matches_the_closed_form_for_a_shifted_normal():
    """KS between N(0,1) and N(1,1) is 2*Phi(0.5) - 1 = 0.3829."""
    ref = NumericProfile.of(RNG.normal(0, 1, 50_000))
    assert ref.ks(RNG.normal(1, 1, 20_000)) == pytest.approx(0.3829, abs=0.02)
    assert ref.ks(RNG.normal(0, 1, 20_000)) < 0.03


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    ref = NumericProfile.of(RNG.normal(0, 1, 50_000))
    assert ref.psi(RNG.normal(0, 1, 20_000)) < 0.01
    shifted = ref.psi(RNG.normal(1, 1, 20_000))
    assert shifted > 0.5  # far past the 0.2 "major shift" convention
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0
    # By hand: (0.7-0.5) ln(0.7/0.5) + (0.3-0.5) ln(0.3/0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.7, 0.3])) == pytest.approx(0.2 * np.log(1.4) - 0.2 * np.log(0.6))


def test_values_beyond_the_reference_range_count_in_the_outer_bins():
    ref = NumericProfile.of(np.arange(1000.0))
    assert ref.psi(np.full(100, 1e9)) > 1  # all in the last bin, which held a tenth


def test_text_profile_sees_length_and_vocabulary_drift():
    reference = [f"great product {i % 7} works well" for i in range(500)]
    profile = TextProfile.of(reference)
    assert profile.vocabulary_psi(reference[:200]) < 0.01
    assert profile.vocabulary_psi(["terrible refund never again"] * 200) > 1
    assert profile.length.psi(np.array([len(t) * 5 for t in reference[:200]])) > 1


def test_window_keeps_the_last_n_and_reports_per_feature():
    profile = Profile("m", {"x[0]": NumericProfile.of(RNG.normal(0, 1, 5000))},
                      {"text": TextProfile.of([f"hello world {i}" for i in range(100)])}, 5000)
    window = DriftWindow(profile, size=100)
    window.add_numeric("x[0]", RNG.normal(0, 1, 500))
    window.add_text("text", ["hello world"] * 50)
    assert window.samples == 50 and len(window.numeric["x[0]"]) == 100
    stats = window.statistics()
    assert set(stats) == {"x[0]", "text.length", "text.vocabulary"}
    window.add_numeric("x[0]", RNG.normal(3, 1, 100))  # the window now holds only drifted values
    assert window.statistics()["x[0]"][1] > 0.8


def test_profile_round_trips_through_json():
    profile = Profile("m", {"a": NumericProfile.of(np.arange(100.0))}, {"t": TextProfile.of(["a b"] * 20)}, 100)
    assert Profile.from_json(profile.to_json()) == profile


runner = CliRunner()


def test_profile_cli_reads_csv_npy_and_text(project_copy):
    rows = RNG.normal(0, 1, (300, 32))
    npy = project_copy / "ref.npy"
    np.save(npy, rows.astype(np.float32))
    result = runner.invoke(app, ["profile", "fraud-detector", "--data", str(npy), "--root", str(project_copy)])
    assert result.exit_code == 0, result.output
    doc = json.loads((project_copy / "models" / "fraud-detector.profile.json").read_text())
    assert len(doc["numeric"]) == 32 and doc["rows"] == 300 and "features[31]" in doc["numeric"]

    csv = project_copy / "ref.csv"
    csv.write_text(",".join(f"features_{i}" for i in range(32)) + "\n" +
                   "\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    result = runner.invoke(app, ["profile", "fraud-detector", "--data", str(csv), "--root", str(project_copy)])
    assert result.exit_code == 0, result.output

    text = project_copy / "reviews.txt"
    text.write_text("\n".join(f"review number {i} was fine" for i in range(50)))
    result = runner.invoke(app, ["profile", "sentiment", "--data", str(text), "--root", str(project_copy)])
    assert result.exit_code == 0, result.output
    doc = json.loads((project_copy / "models" / "sentiment.profile.json").read_text())
    assert set(doc["text"]) == {"text"} and doc["text"]["text"]["vocabulary"][-1][0] == "<other>"


def test_profile_from_parquet_equals_the_profile_from_the_same_rows_as_csv(project_copy):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = RNG.normal(3, 2, (400, 32))
    profiles = {}
    for name in ("ref.csv", "ref.parquet"):
        path = project_copy / name
        if name.endswith(".csv"):
            path.write_text(",".join(f"features[{i}]" for i in range(32)) + "\n" +
                            "\n".join(",".join(repr(float(v)) for v in row) for row in rows) + "\n")
        else:
            pq.write_table(pa.table({f"features_{i}": rows[:, i] for i in range(32)}), path)
        result = runner.invoke(app, ["profile", "fraud-detector", "--data", str(path), "--root", str(project_copy)])
        assert result.exit_code == 0, result.output
        profiles[name] = json.loads((project_copy / "models" / "fraud-detector.profile.json").read_text())
    assert profiles["ref.parquet"]["rows"] == 400
    assert profiles["ref.parquet"] == profiles["ref.csv"]


@pytest.mark.parametrize("name,content,message", [
    ("ref.csv", "a,b\n1,2\n", "no column 'features[0]'"),
    ("ref.json", "{}", "unsupported data file"),
    ("ref.parquet", "PAR1", "not a readable Parquet file"),
    ("ref.txt", "x\n" * 20, "one BYTES input"),
])
def test_profile_cli_bad_input_exits_2_naming_the_file(project_copy, name, content, message):
    path = project_copy / name
    path.write_text(content)
    result = runner.invoke(app, ["profile", "fraud-detector", "--data", str(path), "--root", str(project_copy)])
    assert result.exit_code == 2
    assert name in result.output and message in result.output
    assert "Traceback" not in result.output


def test_sampler_takes_every_nth_request_and_exports_per_feature_gauges(project_copy):
    from prometheus_client import CollectorRegistry, generate_latest

    from modelfleet.loader import load_fleet
    from modelfleet.monitoring.drift_exporter import DriftSampler
    from modelfleet.monitoring.drift import profile_path

    spec = project_copy / "models" / "fraud-detector.yaml"
    spec.write_text(spec.read_text() + "monitoring:\n  drift_detection: true\n  drift_sample_rate: 0.25\n"
                                       "  drift_window: 100\n")
    fleet = load_fleet(project_copy, "local")
    model = next(m for m in fleet.models if m.name == "fraud-detector")
    profile = Profile("fraud-detector", {f"features[{i}]": NumericProfile.of(RNG.normal(0, 1, 2000))
                                         for i in range(32)}, {}, 2000)
    profile_path(project_copy / "models", "fraud-detector").write_text(profile.to_json())
    sampler = DriftSampler.for_models(fleet.models, project_copy / "models")
    assert set(sampler.windows) == {"fraud-detector"}  # sentiment watches drift but has no profile here
    body = json.dumps({"inputs": [{"name": "features", "shape": [2, 32], "datatype": "FP32",
                                   "data": RNG.normal(4, 1, (2, 32)).tolist()}]}).encode()
    for _ in range(200):
        sampler.observe_http("fraud-detector", body)
    window = sampler.windows["fraud-detector"][0]
    assert window.samples == 100  # 50 sampled requests (1 in 4) x 2 rows, the window's size
    registry = CollectorRegistry()
    registry.register(sampler)
    text = generate_latest(registry).decode()
    assert 'modelfleet_drift_window_samples{model="fraud-detector"} 100.0' in text
    ks = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("modelfleet_drift_ks{")]
    assert len(ks) == 32 and min(ks) > 0.9  # every feature moved by 4 sigma
    assert model.monitoring.drift_window == 100
