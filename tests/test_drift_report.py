"""`modelfleet drift-report`: Evidently (the drift-report extra) compares real data, one feature shifted, with the
reference — rebuilt from the committed profile or read from the reference file — and names that feature only.
Without the extra the command says which extra to install (exit 2)."""

from __future__ import annotations

import re
import sys

import numpy as np
from typer.testing import CliRunner

from modelfleet.cli import app

runner = CliRunner()
RNG = np.random.default_rng(12)
DRIFTED = 5  # fraud-detector's features[5] moves by 1.5 sigma; the 31 others keep their distribution


def _data(project):
    reference = RNG.normal(0, 1, (3000, 32))
    current = RNG.normal(0, 1, (1500, 32))
    current[:, DRIFTED] += 1.5
    np.save(project / "reference.npy", reference)
    # The current window as CSV with the `<input>_<i>` header `modelfleet profile` reads.
    (project / "current.csv").write_text(",".join(f"features_{i}" for i in range(32)) + "\n" + "\n".join(
        ",".join(f"{v:.6f}" for v in row) for row in current) + "\n")
    undrifted = RNG.normal(0, 1, (1500, 32))
    np.save(project / "undrifted.npy", undrifted)
    result = runner.invoke(app, ["profile", "fraud-detector", "--data", str(project / "reference.npy"),
                                 "--root", str(project)])
    assert result.exit_code == 0, result.output


def _drifted(output: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^(\S+)\s+psi\s+[\d.]+\s+DRIFT$", output, re.M)}


def test_report_names_only_the_drifted_feature(project_copy, tmp_path):
    _data(project_copy)
    for reference in ([], ["--reference", str(project_copy / "reference.npy")]):
        html = tmp_path / f"report{len(reference)}.html"
        result = runner.invoke(app, ["drift-report", "fraud-detector", "--current", str(project_copy / "current.csv"),
                                     *reference, "--out", str(html), "--root", str(project_copy)])
        assert result.exit_code == 0, result.output
        assert _drifted(result.output) == {f"features[{DRIFTED}]"}, result.output
        assert len(re.findall(r"psi\s+[\d.]+\s+(?:ok|DRIFT)$", result.output, re.M)) == 32
        assert "1 of 32 feature(s) drifted (PSI >= 0.2" in result.output
        page = html.read_text()
        assert page.lstrip().lower().startswith("<!doctype html") and f"features[{DRIFTED}]" in page

    from evidently.telemetry import event_logger
    assert not event_logger.is_enabled()  # the command set DO_NOT_TRACK before Evidently was imported

    result = runner.invoke(app, ["drift-report", "fraud-detector", "--current", str(project_copy / "undrifted.npy"),
                                 "--out", str(tmp_path / "same.html"), "--root", str(project_copy)])
    assert result.exit_code == 0, result.output
    assert _drifted(result.output) == set() and "0 of 32 feature(s) drifted" in result.output


def test_text_inputs_are_compared_by_length(project_copy, tmp_path):
    (project_copy / "reviews.txt").write_text("\n".join(f"the product {'was fine ' * (i % 4 + 1)}" for i in range(400)))
    (project_copy / "long.txt").write_text("\n".join(f"the product {'was terrible ' * (i % 4 + 8)}"
                                                     for i in range(200)))
    assert runner.invoke(app, ["profile", "sentiment", "--data", str(project_copy / "reviews.txt"),
                               "--root", str(project_copy)]).exit_code == 0
    result = runner.invoke(app, ["drift-report", "sentiment", "--current", str(project_copy / "long.txt"),
                                 "--out", str(tmp_path / "r.html"), "--root", str(project_copy)])
    assert result.exit_code == 0, result.output
    assert _drifted(result.output) == {"text.length"}


def test_without_the_extra_it_names_the_extra_to_install(project_copy, tmp_path, monkeypatch):
    _data(project_copy)
    monkeypatch.setitem(sys.modules, "evidently", None)  # what `import evidently` meets when it is not installed
    result = runner.invoke(app, ["drift-report", "fraud-detector", "--current", str(project_copy / "current.csv"),
                                 "--out", str(tmp_path / "r.html"), "--root", str(project_copy)])
    assert result.exit_code == 2
    assert "pip install 'modelfleet[drift-report]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()


def test_missing_profile_and_bad_current_exit_2_naming_the_file(project_copy, tmp_path):
    result = runner.invoke(app, ["drift-report", "fraud-detector", "--current", str(tmp_path / "x.csv"),
                                 "--root", str(project_copy)])
    assert result.exit_code == 2 and "models/fraud-detector.profile.json" in result.output
    assert "modelfleet profile fraud-detector" in result.output
    _data(project_copy)
    bad = project_copy / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["drift-report", "fraud-detector", "--current", str(bad), "--root", str(project_copy)])
    assert result.exit_code == 2 and "bad.csv" in result.output and "no column 'features[0]'" in result.output
    assert "Traceback" not in result.output
