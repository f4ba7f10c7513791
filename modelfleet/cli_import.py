"""`modelfleet import` and `modelfleet render --model`: typer shells over `modelfleet.triton.importer`
(registered by `modelfleet.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def import_repository(
    model_repository: Annotated[Path, typer.Argument(help="A Triton model repository: one folder per model, each "
                                                          "with a config.pbtxt (or a model file Triton "
                                                          "auto-completes) and numbered version folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the specs go.")] = Path("models"),
    source_prefix: Annotated[str | None, typer.Option("--source-prefix", help="Where the repository lives in the "
                                                      "cloud, s3://bucket/prefix or gs://bucket/prefix; each spec's "
                                                      "source becomes PREFIX/<model>.")] = None,
    owner: Annotated[str, typer.Option("--owner", help="The team or e-mail written as each spec's owner.")] = "unassigned",
    p99_ms: Annotated[float, typer.Option("--p99-ms", help="The p99 SLO written into each spec.", min=0.001)] = 100.0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite specs that already exist in OUT.")] = False,
) -> None:
    """Write one spec per model of MODEL_REPOSITORY that renders back to the same config (compared as protobuf
    messages after Triton's normalisation). Exit 0: every model is equivalent; 1: some config fields could not be
    expressed (listed per model and field, and in the spec's header); 2: a model could not be imported."""
    from modelfleet.triton.importer import RepositoryImportError, ImportOptions, import_model, model_folders, spec_text

    err = Console(stderr=True, highlight=False)
    if not model_repository.is_dir():
        err.print(f"{model_repository}: not a directory; give a Triton model repository", markup=False)
        raise typer.Exit(2)
    options = ImportOptions(source_prefix=source_prefix, owner=owner, p99_ms=p99_ms)
    folders = model_folders(model_repository)
    if not folders:
        err.print(f"{model_repository}: no model folders (a folder with a config.pbtxt or a numbered version "
                  "folder)", markup=False)
        raise typer.Exit(2)
    problems, unequal = [], 0
    out.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        try:
            item = import_model(folder, options)
        except RepositoryImportError as exc:
            problems.append(str(exc))
            continue
        target = out / f"{item.name}.yaml"
        if target.exists() and not force:
            problems.append(f"{target}: already exists; pass --force to overwrite it")
            continue
        target.write_text(spec_text(item, options))
        verdict = "equivalent" if item.equivalent else f"NOT equivalent ({len(item.differences)} field(s))"
        print(f"{target}: {verdict}")
        for difference in item.differences:
            print(f"  {item.name}: {difference}")
        unequal += not item.equivalent
    for problem in problems:
        err.print(problem, markup=False, soft_wrap=True)
    if problems:
        raise typer.Exit(2)
    if unequal:
        raise typer.Exit(1)


def render_model(spec_file: Path, out: Path) -> None:
    """`modelfleet render --model SPEC_FILE --out DIR`: DIR/<model>/config.pbtxt for the spec's hardware class,
    with no stack (no tuning record applied), to review an import."""
    from modelfleet.cli import _fail
    from modelfleet.loader import Problem, SpecError, load_model
    from modelfleet.triton.config import ModelConfigError, render_config

    if not spec_file.is_file():
        _fail([Problem(str(spec_file), None, "", "no such spec file")])
    try:
        spec = load_model(spec_file, str(spec_file))
        text = render_config(spec, spec.hardware.gpu_class, where=str(spec_file))
    except SpecError as exc:
        _fail(exc)
    except ModelConfigError as exc:
        _fail([Problem("render", None, "", str(exc))])
    from modelfleet.render import OutputError, check_output_dir

    target = out / spec.name / "config.pbtxt"
    try:
        check_output_dir(target.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except (OutputError, OSError) as exc:
        _fail([Problem("render", None, "--out", str(exc))])
    print(target)
