"""`modelfleet tune MODEL`: a thin typer shell over `modelfleet.tuning.run` (registered by `modelfleet.cli`)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


class SearchOption(str, Enum):
    quick = "quick"
    brute = "brute"


def tune(
    model: Annotated[str, typer.Argument(help="A model name (models/<MODEL>.yaml).")],
    search: Annotated[SearchOption, typer.Option("--search", help="quick: Model Analyzer's quick search, then the "
                                                 "queue delays for its winner; brute: every combination of the "
                                                 "spec's tuning bounds.")] = SearchOption.quick,
    hardware: Annotated[str | None, typer.Option("--hardware", help="The hardware class the record is for. Default: "
                                                 "cpu on this machine; required with --triton-url.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Stop Model Analyzer after this many seconds and record "
                                           "what it measured (marked incomplete).", min=10)] = 1800,
    triton_url: Annotated[str | None, typer.Option("--triton-url", help="Profile an already running Triton "
                                                   "(explicit model control, holding the model in its repository), "
                                                   "e.g. a GPU node: host[:http_port]; gRPC and metrics on 8001/8002 "
                                                   "unless given.")] = None,
    grpc_url: Annotated[str | None, typer.Option("--grpc-url", help="host:port of --triton-url's gRPC endpoint.")] = None,
    metrics_url: Annotated[str | None, typer.Option("--metrics-url", help="--triton-url's metrics URL.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted search from Model Analyzer's "
                                         "checkpoint instead of starting over.")] = False,
    root: Annotated[Path | None, typer.Option("--root", help="The project directory (the one holding Pulumi.yaml).",
                                              show_default=False)] = None,
) -> None:
    """Tune MODEL's Triton settings with the real Model Analyzer against its p99 SLO, and write
    models/MODEL.tuning/HARDWARE.yaml (chosen settings, measured throughput and p99, every variant measured).

    Exit codes:
    0: record written, also when --timeout stopped the search (the record says complete: false);
    3: record written, but no variant meets the p99 SLO;
    130: interrupted (Ctrl-C): nothing written, rerun with --resume;
    1: Triton or Model Analyzer failed; 2: a bad spec or option."""
    from modelfleet.cli import _fail, _root
    from modelfleet.loader import Problem, SpecError, load_model
    from modelfleet.tuning.run import Progress, TuneError, TuneInterrupted, TuneOptions, gpus
    from modelfleet.tuning.run import tune as run_tune

    root = _root(root)
    path = root / "models" / f"{model}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (root / "models").glob("*.yaml"))
        _fail([Problem(f"models/{model}.yaml", None, "", f"no such model; known: {', '.join(known) or 'none'}")])
    try:
        spec = load_model(path, f"models/{model}.yaml")
    except SpecError as exc:
        _fail(exc)
    if hardware is None:
        if triton_url:
            _fail([Problem("--hardware", None, "", "name the hardware class of the server behind --triton-url, "
                                                  "e.g. --hardware nvidia-l4")])
        hardware = "cpu"
        if gpus():
            _fail([Problem("--hardware", None, "", "this machine has GPUs: name the class to tune for, e.g. "
                                                  "--hardware nvidia-l4")])

    err = Console(stderr=True, highlight=False)
    options = TuneOptions(mode=search.value, hardware_class=hardware, timeout_s=timeout, triton_url=triton_url,
                          grpc_url=grpc_url, metrics_url=metrics_url, resume=resume)
    err.print(f"tuning [bold]{spec.name}[/] on [bold]{hardware}[/]: p99 SLO {spec.slo.p99_ms:g} ms, "
              f"objective {spec.tuning.objective}, {search.value} search, at most {timeout:g} s")
    try:
        result = _with_progress(spec, root, options, err, run_tune, Progress)
    except TuneInterrupted as exc:
        err.print(f"[yellow]{exc}[/]")
        raise typer.Exit(130)
    except TuneError as exc:
        err.print(f"[red]error:[/] {exc}", markup=True)
        raise typer.Exit(1)
    _summary(result, root, Console() if sys.stdout.isatty() else Console(width=140, no_color=True, highlight=False))
    if not result.record.slo_met:
        raise typer.Exit(3)


def _with_progress(spec, root, options, err: Console, run_tune, Progress):
    from rich.progress import Progress as Bar, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
             transient=not err.is_terminal) as bar:
        task = bar.add_task("starting", total=None)
        progress = Progress()

        def on_event(kind: str, text: str) -> None:
            if kind in ("phase", "server", "stop", "log"):
                bar.console.print(f"  {text}", markup=False, highlight=False)
            bar.update(task, description=f"[{progress.phase or 'setup'}] {progress.measurements} measurement(s), "
                                         f"{len(progress.configs)} config(s): {text}"[:120])

        progress.on_event = on_event
        return run_tune(spec, root, options, progress)


def _summary(result, root: Path, console: Console) -> None:
    record = result.record
    chosen = record.chosen
    table = Table(title=f"{record.model} on {record.hardware_class}: {len(record.variants)} measurement(s) of "
                        f"{record.search.variants_measured} config(s)", title_justify="left")
    for column in ("variant", "max batch", "instances", "queue delay µs", "preferred", "concurrency", "infer/s",
                   "p99 ms", "SLO"):
        table.add_column(column, justify="left" if column in ("variant", "preferred") else "right")
    for v in sorted(record.variants, key=lambda v: -v.throughput_per_s):
        mark = "→ " if v == chosen else ""
        table.add_row(mark + v.variant, str(v.max_batch_size), str(v.instance_count),
                      "off" if not v.dynamic_batching else str(v.max_queue_delay_us),
                      ",".join(map(str, v.preferred_batch_sizes)) or "—", str(v.concurrency),
                      f"{v.throughput_per_s:,.0f}", f"{v.p99_ms:.2f}", "yes" if v.meets_slo else "no")
    console.print(table)
    settings = (f"max_batch_size {chosen.max_batch_size}, {chosen.instance_count} instance(s), "
                + (f"dynamic batching with {chosen.max_queue_delay_us} µs queue delay"
                   if chosen.dynamic_batching else "no dynamic batching")
                + (f", preferred sizes {list(chosen.preferred_batch_sizes)}" if chosen.preferred_batch_sizes else ""))
    where = result.path.relative_to(root) if result.path.is_relative_to(root) else result.path
    if record.slo_met:
        console.print(f"[green]chosen[/]: {chosen.variant}: {settings}: {chosen.throughput_per_s:,.0f} infer/s at "
                      f"concurrency {chosen.concurrency}, p99 {chosen.p99_ms:.2f} ms (SLO {record.slo_p99_ms:g} ms)")
    else:
        console.print(f"[red]no variant meets the p99 SLO of {record.slo_p99_ms:g} ms[/]; the closest is "
                      f"{chosen.variant} ({settings}) with p99 {chosen.p99_ms:.2f} ms at "
                      f"{chosen.throughput_per_s:,.0f} infer/s. The plan will not size replicas from this record "
                      f"unless the spec sets tuning.accept_unmet_slo: true.")
    if record.lower_bound:
        console.print(f"[yellow]lower bound[/]: throughput was still rising at concurrency {chosen.concurrency}, the "
                      "highest measured for these settings, after extending the search as far as it could")
    search = record.search
    if search.converged_without_new_measurements:
        console.print(f"converged: Model Analyzer only revisited measured configs in "
                      f"{', '.join(search.converged_without_new_measurements)}; stopped there (nothing new to measure)")
    console.print(f"searched by Model Analyzer: {', '.join(search.searched_by_model_analyzer) or 'nothing'}; "
                  f"swept by modelfleet: {', '.join(search.swept_by_modelfleet) or 'nothing'}")
    if not result.complete:
        console.print("[yellow]incomplete[/]: the time bound stopped the search; rerun with --resume to finish it")
    console.print(f"record: {where}")


if __name__ == "__main__":  # pragma: no cover - `python -m modelfleet.cli_tune MODEL`, without the main CLI
    typer.run(tune)
