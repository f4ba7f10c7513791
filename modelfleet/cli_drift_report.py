"""`modelfleet drift-report MODEL --current FILE`: an HTML data drift report made by Evidently, for a person to
read beside the alerts (registered by `modelfleet.cli`).

Evidently is an optional extra (`pip install 'modelfleet[drift-report]'`, pinned with `pandas<3`: its import
fails on pandas 3); the alerts and the inspector's gauges never need it (numpy only, modelfleet.monitoring.drift).
Its usage telemetry is off: `evidently/telemetry.py` (0.7.23) sends events unless the `DO_NOT_TRACK` variable is
set, so it is set before Evidently is imported.

Reference: the data the profile was built from (`--reference FILE`), or else the committed profile
(models/MODEL.profile.json) rebuilt as an evenly spaced sample of each feature's quantile function. Current: a data
file in the formats `modelfleet profile` reads; the inspector keeps its sampled window in memory only, so a window
is exported by writing the sampled requests to such a file. BYTES inputs are compared by text length, as the
inspector does. Each feature is tested with PSI at the model's own `monitoring.drift_psi_threshold`, the threshold
its drift alert uses, so the report and the alert agree on what drifted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from modelfleet.cli_drift import load_spec, read_features
from modelfleet.loader import Problem
from modelfleet.monitoring.drift import Profile, ProfileError, profile_path

EXTRA = "drift-report"
REFERENCE_ROWS = 5000  # rows rebuilt from a profile (at most the profiled rows): the 101 percentiles interpolated


def _as_columns(numeric: dict[str, np.ndarray], texts: dict[str, list[str]]) -> dict[str, np.ndarray]:
    return {**numeric, **{f"{name}.length": np.array([len(t) for t in values], dtype=float)
                          for name, values in texts.items()}}


def profile_columns(profile: Profile) -> dict[str, np.ndarray]:
    rows = max(1, min(profile.rows, REFERENCE_ROWS))
    return {**{f: p.quantile_sample(rows) for f, p in profile.numeric.items()},
            **{f"{name}.length": p.length.quantile_sample(rows) for name, p in profile.text.items()}}


def evidently_drift(reference: dict[str, np.ndarray], current: dict[str, np.ndarray], threshold: float):
    """(Evidently's snapshot, {feature: PSI}) for the columns both sides have. Raises ImportError without the
    extra."""
    os.environ["DO_NOT_TRACK"] = "1"
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [c for c in reference if c in current]
    definition = DataDefinition(numerical_columns=columns)
    datasets = {side: Dataset.from_pandas(pd.DataFrame({c: data[c] for c in columns}), data_definition=definition)
                for side, data in (("reference", reference), ("current", current))}
    snapshot = Report([DataDriftPreset(columns=columns, method="psi", threshold=threshold)]).run(
        current_data=datasets["current"], reference_data=datasets["reference"])
    scores = {m["config"]["column"]: float(m["value"]) for m in snapshot.dict()["metrics"]
              if m["config"].get("type") == "evidently:metric_v2:ValueDrift"}
    return snapshot, scores


def drift_report(
    model: Annotated[str, typer.Argument(help="A model name (models/<MODEL>.yaml).")],
    current: Annotated[Path, typer.Option("--current", help="Recent inputs: .csv, .npy, .txt (BYTES), .parquet.")],
    reference: Annotated[Path | None, typer.Option(
        "--reference", help="The reference inputs themselves; default: rebuilt from models/MODEL.profile.json.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="The HTML report to write (default "
                                             "drift-report-MODEL.html).", show_default=False)] = None,
    root: Annotated[Path | None, typer.Option("--root", help="The project directory (the one holding Pulumi.yaml).",
                                              show_default=False)] = None,
) -> None:
    """Write an HTML data drift report (Evidently) of MODEL's recent inputs against its reference, and print which
    features drifted (PSI at the spec's monitoring.drift_psi_threshold). Needs the drift-report extra."""
    from modelfleet.cli import _fail, _root

    root = _root(root)
    spec = load_spec(model, root)
    threshold = spec.monitoring.drift_psi_threshold
    source = reference or profile_path(root / "models", model)
    if not source.is_file():
        _fail([Problem(str(source), None, "--reference", "no such file") if reference else
               Problem(f"models/{source.name}", None, "", f"no reference profile; write it with "
                       f"`modelfleet profile {model} --data FILE`, or give --reference FILE")])
    try:
        ref_columns = (_as_columns(*read_features(spec, reference)) if reference else
                       profile_columns(Profile.from_json(source.read_text())))
    except (ProfileError, OSError, ValueError, KeyError) as exc:
        _fail([Problem(str(source), None, "--reference" if reference else "", f"cannot be read: {exc}")])
    if not current.is_file():
        _fail([Problem(str(current), None, "--current", "no such file")])
    try:
        cur_columns = _as_columns(*read_features(spec, current))
    except (ProfileError, OSError) as exc:
        _fail([Problem(str(current), None, "--current", str(exc))])
    try:
        snapshot, scores = evidently_drift(ref_columns, cur_columns, threshold)
    except ImportError as exc:
        _fail([Problem("drift-report", None, "", f"needs the optional Evidently extra ({exc.name or exc} is not "
                       f"importable): pip install 'modelfleet[{EXTRA}]'")])
    out = out or Path(f"drift-report-{model}.html")
    if out.is_dir():
        _fail([Problem(str(out), None, "--out", "is a directory; give a file name ending in .html")])
    snapshot.save_html(str(out))
    console = Console(highlight=False)
    drifted = [f for f, score in scores.items() if score >= threshold]  # Evidently's PSI test: drift at >= threshold
    for feature, score in scores.items():
        console.print(f"{feature:<24} psi {score:8.4f}  {'DRIFT' if feature in drifted else 'ok'}", markup=False)
    console.print(f"{len(drifted)} of {len(scores)} feature(s) drifted (PSI >= {threshold}, monitoring."
                  f"drift_psi_threshold of models/{model}.yaml); report: {out}", markup=False)
