"""`modelfleet profile MODEL --data FILE`: the reference profile drift is measured against (registered by
`modelfleet.cli`). Reads CSV (a header row; numeric columns named `<input>` for a one-element input or
`<input>[i]` / `<input>_<i>` per element, a text column named after a BYTES input), NPY (a 2-D array: one row per
request, the columns the model's numeric input elements in order), Parquet when pyarrow is installed (same
columns as CSV), and plain text (one request per line) for a model whose only input is BYTES."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from modelfleet.loader import Problem, SpecError, load_model
from modelfleet.monitoring.drift import NumericProfile, Profile, ProfileError, TextProfile, profile_path
from modelfleet.spec import ModelSpec


def _features(spec: ModelSpec) -> tuple[list[str], list[str]]:
    """(numeric feature names, BYTES input names) of a model, in order."""
    numeric, text = [], []
    for tensor in spec.inputs:
        if tensor.dtype == "BYTES":
            text.append(tensor.name)
            continue
        size = math.prod(tensor.dims)
        if size < 1:
            raise ProfileError(f"input {tensor.name} has a variable dimension; drift needs a fixed size per element")
        numeric += [tensor.name] if size == 1 else [f"{tensor.name}[{i}]" for i in range(size)]
    return numeric, text


def _column(header: list[str], feature: str) -> int:
    alternatives = {feature, feature.replace("[", "_").rstrip("]")}
    for index, name in enumerate(header):
        if name.strip() in alternatives:
            return index
    raise ProfileError(f"no column {feature!r} (or {feature.replace('[', '_').rstrip(']')!r}); columns: "
                       f"{', '.join(header[:8])}{'...' if len(header) > 8 else ''}")


def _table(path: Path) -> tuple[list[str], list[list]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # absent, or installed but built for another numpy
            raise ProfileError(f"reading Parquet needs a working pyarrow ({exc}); or give CSV/NPY") from None
        import pyarrow as pa

        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise ProfileError(f"not a readable Parquet file ({exc})") from None
        return table.column_names, [list(r.values()) for r in table.to_pylist()]
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise ProfileError("a CSV needs a header row and data rows")
    return rows[0], rows[1:]


def read_features(spec: ModelSpec, data: Path) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """A data file as the model's features: {numeric feature: values}, {BYTES input: texts}, one entry per row."""
    numeric, text = _features(spec)
    suffix = data.suffix.lower()
    if suffix == ".npy":
        if text:
            raise ProfileError(f"NPY holds numbers; {spec.name} has BYTES input(s) {', '.join(text)}: give CSV")
        array = np.load(data, allow_pickle=False)
        array = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
        if array.shape[1] != len(numeric):
            raise ProfileError(f"NPY rows have {array.shape[1]} values; {spec.name}'s inputs have {len(numeric)}")
        return {f: array[:, i].astype(float) for i, f in enumerate(numeric)}, {}
    if suffix in (".txt", ".text"):
        if numeric or len(text) != 1:
            raise ProfileError(f"a text file (one request per line) fits a model with one BYTES input; "
                               f"{spec.name} has numeric or several inputs: give CSV")
        return {}, {text[0]: [line.rstrip("\n") for line in data.read_text().splitlines() if line.strip()]}
    if suffix not in (".csv", ".parquet"):
        raise ProfileError(f"unsupported data file {data.name}: use .csv, .npy, .txt (BYTES) or .parquet")
    header, rows = _table(data)
    try:
        columns = {f: np.array([float(r[_column(header, f)]) for r in rows]) for f in numeric}
    except ValueError as exc:
        raise ProfileError(f"a numeric column holds something else: {exc}") from None
    return columns, {t: [str(r[_column(header, t)]) for r in rows] for t in text}


def build_profile(spec: ModelSpec, data: Path) -> Profile:
    numeric, texts = read_features(spec, data)
    rows = len(next(iter((*numeric.values(), *texts.values()))))
    return Profile(spec.name, {f: NumericProfile.of(v) for f, v in numeric.items()},
                   {t: TextProfile.of(v) for t, v in texts.items()}, rows)


def load_spec(model: str, root: Path) -> ModelSpec:
    """models/MODEL.yaml under `root`, or exit 2 naming it."""
    from modelfleet.cli import _fail

    spec_file = root / "models" / f"{model}.yaml"
    if not spec_file.exists():
        _fail([Problem(f"models/{model}.yaml", None, "", f"no such model spec; models: "
                       f"{', '.join(sorted(p.stem for p in (root / 'models').glob('*.yaml')))}")])
    try:
        return load_model(spec_file, f"models/{model}.yaml")
    except SpecError as exc:
        _fail(exc)


def profile(
    model: Annotated[str, typer.Argument(help="A model name (models/<MODEL>.yaml).")],
    data: Annotated[Path, typer.Option("--data", help="Reference inputs: .csv, .npy, .txt (BYTES, one per line), "
                                       ".parquet (with pyarrow).", exists=False)],
    root: Annotated[Path | None, typer.Option("--root", help="The project directory (the one holding Pulumi.yaml).",
                                              show_default=False)] = None,
) -> None:
    """Write models/MODEL.profile.json: the reference distribution of MODEL's inputs that drift is measured
    against (per-feature bins and percentiles; text length and vocabulary for BYTES). Commit it beside the spec."""
    from modelfleet.cli import _fail, _root

    root = _root(root)
    spec = load_spec(model, root)
    if not data.is_file():
        _fail([Problem(str(data), None, "--data", "no such file")])
    try:
        result = build_profile(spec, data)
    except (ProfileError, OSError) as exc:
        _fail([Problem(str(data), None, "--data", str(exc))])
    out = profile_path(root / "models", model)
    out.write_text(result.to_json())
    Console(highlight=False).print(f"wrote {out.relative_to(root)}: {result.rows} rows, "
                                   f"{len(result.numeric)} numeric feature(s), {len(result.text)} text input(s)",
                                   markup=False)
