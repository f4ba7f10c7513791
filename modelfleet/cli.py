"""The `modelfleet` command line. Each command is a thin shell over the library; bad input exits 2 with one
clear line per problem, never a traceback."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelfleet.loader import (
    Problem,
    SpecError,
    load_fleet,
    load_model,
    load_models,
    parse_stack,
    stack_config_from_file,
    stack_name_problems,
)

app = typer.Typer(
    help="Declarative production ML on Pulumi: model specs in models/, environments in stacks/.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ROOT_OPTION = Annotated[
    Path, typer.Option("--root", help="The project directory (the one holding Pulumi.yaml).", show_default=False)
]
STACK_OPTION = Annotated[str, typer.Option("--stack", "-s", help="Stack name: reads stacks/Pulumi.<NAME>.yaml.")]


class Format(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


def _console() -> Console:
    # Fixed width off a terminal, so piped output is byte-identical from run to run and machine to machine.
    return Console() if sys.stdout.isatty() else Console(width=140, no_color=True, highlight=False)


def _fail(problems: list[Problem] | SpecError, code: int = 2) -> None:
    items = problems.problems if isinstance(problems, SpecError) else problems
    err = Console(stderr=True, highlight=False)
    for problem in items:
        err.print(str(problem), markup=False, soft_wrap=True)
    err.print(f"{len(items)} problem(s) found.", style="red")
    raise typer.Exit(code)


def _root(root: Path | None) -> Path:
    if root is not None:
        return root
    here = Path.cwd()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").exists():
            return candidate
    return here


@app.command()
def validate(
    files: Annotated[list[Path] | None, typer.Argument(help="Spec files to check (models/*.yaml or "
                                                           "stacks/Pulumi.*.yaml). Default: every model and stack.")] = None,
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="Check one stack and the models it runs, "
                                                                   "across files.")] = None,
    root: ROOT_OPTION = None,
) -> None:
    """Check specs: types, bounds, unknown keys, and cross-file rules (unknown models, hardware a region does
    not offer, overlapping networks, duplicate model names). Exits 2 on any problem."""
    root = _root(root)
    problems: list[Problem] = []
    checked = 0
    if files:
        for path in files:
            checked += 1
            display = _display(path, root)
            try:
                if path.name.startswith("Pulumi.") and path.suffix == ".yaml":
                    values, loaded = stack_config_from_file(path, display)
                    problems.extend(stack_name_problems(path.name[len("Pulumi."):-len(".yaml")],
                                                        parse_stack(values, display, loaded), display))
                else:
                    load_model(path, display)
            except SpecError as exc:
                problems.extend(exc.problems)
    stacks = [stack] if stack else ([] if files else _stack_names(root))
    if not files and not stack:
        _, _, model_problems = load_models(root)
        problems.extend(model_problems)
    for name in stacks:
        checked += 1
        try:
            load_fleet(root, name)
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        _fail(sorted(set(problems)))
    what = ", ".join(stacks) if stacks else f"{checked} file(s)"
    _console().print(f"[green]ok[/]: {what} valid")


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _stack_names(root: Path) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (root / "stacks").glob("Pulumi.*.yaml"))


def _evaluate(root: Path, stack: str):
    """The plan and the offline evaluation of the real program, or a clean exit with the spec's problems."""
    from modelfleet.offline import evaluate  # imports the Pulumi SDK: only for commands that need it
    from modelfleet.plan import build_plan

    import pulumi

    try:
        plan = build_plan(load_fleet(root, stack))
    except SpecError as exc:
        _fail(exc)
    try:
        return plan, evaluate(root, stack)
    except pulumi.RunError as exc:  # the program's own spec check (program.current_plan): already in words
        Console(stderr=True, highlight=False).print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def plan(
    stack: STACK_OPTION = "prod",
    output: Annotated[Format, typer.Option("--format", "-f", help="text for people, json for machines, markdown "
                                                                 "for a pull-request comment.")] = Format.text,
    previous: Annotated[Path | None, typer.Option(
        "--previous", help="The JSON plan (`plan --format json`) of what is deployed now: warns about regions "
                           "the stack drops, above all protected ones.")] = None,
    fail_region: Annotated[str | None, typer.Option("--fail-region", help="Prove the loss of this region "
                                                    "(aws:us-east-1): where its clients go, capacity, time, cost.")] = None,
    root: ROOT_OPTION = None,
) -> None:
    """Evaluate the Pulumi program offline (the SDK's mock runtime: no CLI, no credentials) and print every
    resource it declares, counts per cloud, region and type, node pools, cost against the budget, warnings."""
    from modelfleet.cli_previous import with_removed_regions
    from modelfleet.report import Report, render_json, render_markdown, render_text

    root = _root(root)
    fleet_plan, evaluation = _evaluate(root, stack)
    if previous is not None:
        try:
            fleet_plan = with_removed_regions(fleet_plan, previous)
        except ValueError as exc:
            _fail([Problem(str(previous), None, "--previous", str(exc))])
    if fail_region and fail_region not in [r.ref for r in fleet_plan.regions] or fail_region and not fleet_plan.routing:
        _fail([Problem(f"stacks/Pulumi.{stack}.yaml", None, "--fail-region", f"{fail_region} is not a routed region "
                       f"of stack {stack}; routed regions: "
                       f"{', '.join(r.ref for r in fleet_plan.regions) if fleet_plan.routing else 'none'}")])
    report = Report(fleet_plan, evaluation, {"policies": _review(evaluation).to_json()}, fail_region)
    if output is Format.json:
        sys.stdout.write(render_json(report))
    elif output is Format.markdown:
        sys.stdout.write(render_markdown(report))
    else:
        render_text(report, _console())


def _review(evaluation):
    """The policy pack's verdicts on an evaluation, or a clean exit when the pack's config is broken."""
    from modelfleet.review import PolicyConfigError, config_path, review

    try:
        return review(evaluation)
    except PolicyConfigError as exc:
        display = f"policies/config/{evaluation.stack}.json"
        _fail([Problem(display, None, "", str(exc).removeprefix(str(config_path(evaluation.stack)) + ": "))])


@app.command()
def check(
    stack: STACK_OPTION = "prod",
    root: ROOT_OPTION = None,
) -> None:
    """Review the stack with the policy pack in policies/, offline (the same validate functions `pulumi preview
    --policy-pack policies` runs). Exits 1 on any mandatory violation, 2 on a bad spec or policy config."""
    from modelfleet.report import _policies_text

    root = _root(root)
    _, evaluation = _evaluate(root, stack)
    result = _review(evaluation)
    _policies_text(result.to_json(), _console())
    if result.mandatory:
        raise typer.Exit(1)


def _plan_only(root: Path, stack: str):
    from modelfleet.plan import build_plan

    try:
        return build_plan(load_fleet(root, stack))
    except SpecError as exc:
        _fail(exc)


@app.command()
def render(
    stack: STACK_OPTION = "prod",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (created if missing).")] = Path("out"),
    root: ROOT_OPTION = None,
    model: Annotated[Path | None, typer.Option("--model", help="Render only this spec file's config, as "
                                               "OUT/<model>/config.pbtxt, without a stack.")] = None,
) -> None:
    """Write what a reviewer reads: each model's config.pbtxt under OUT/models/<model>/ (one folder per
    hardware class where they differ) and every Kubernetes object as YAML under OUT/kubernetes/<region>/."""
    if model is not None:
        return render_model(model, out)
    from modelfleet.gateway.native_auth import ModuleBuildError
    from modelfleet.render import OutputError
    from modelfleet.render import render as render_files
    from modelfleet.serving import ManifestError
    from modelfleet.triton.config import ModelConfigError

    root = _root(root)
    fleet_plan = _plan_only(root, stack)
    try:
        written = render_files(fleet_plan, out)
    except (ModelConfigError, ManifestError) as exc:
        _fail([Problem("render", None, "", str(exc))])
    except OutputError as exc:
        _fail([Problem("render", None, "--out", str(exc))])
    except ModuleBuildError as exc:
        _fail([Problem("render", None, "gateway", str(exc))])
    console = _console()
    for path in written:
        console.print(str(path), markup=False, highlight=False)
    console.print(f"[green]wrote {len(written)} file(s)[/] under {out}")


@app.command()
def serve(
    stack: STACK_OPTION = "local",
    http_port: Annotated[int, typer.Option(help="Triton's HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Triton's gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Triton's Prometheus metrics port.")] = 8002,
    gateway_ports: Annotated[str | None, typer.Option(help="HTTP,GRPC,EXTPROC,ADMIN ports of the gateway; "
                                                           "default the stack's (8080,8081), 9002,9901.")] = None,
    monitoring_ports: Annotated[str, typer.Option(help="PROMETHEUS,ALERTMANAGER,DRIFT ports of the local monitoring "
                                                       "(the drift gauges of the inspection service), or off.")]
    = "9090,9093,9003",
    root: ROOT_OPTION = None,
) -> None:
    """Run a real Triton on this machine with exactly the configs the plan renders (CPU), and the gateway in front
    of it (Envoy + the inspection service, HTTP 127.0.0.1:8080, gRPC :8081), until Ctrl-C.
    The model repository and the gateway's config and audit log are under build/serve/<stack>/."""
    import signal
    import time

    from modelfleet.cli_gateway import local_gateway
    from modelfleet.gateway.local import GatewayStartupError
    from modelfleet.local import build_local_repository, canary_server, repository_dir
    from modelfleet.monitoring.local import MonitoringStartupError, local_monitoring, parse_ports
    from modelfleet.triton.config import ArtefactMissingError, ModelConfigError, server_flags
    from modelfleet.triton.runtime import TritonNotInstalled, TritonServer, TritonStartupError

    root = _root(root)
    fleet_plan = _plan_only(root, stack)
    if fleet_plan.environment != "local":
        _fail([Problem(f"stacks/Pulumi.{stack}.yaml", None, "modelfleet:environment",
                       f"serve runs the local environment on this machine, not {fleet_plan.environment}; "
                       "use --stack local, or `pulumi up` for cloud stacks")])
    try:
        repository = build_local_repository(fleet_plan, root, repository_dir(root, stack))
    except (ModelConfigError, ArtefactMissingError) as exc:
        _fail([Problem("serve", None, "", str(exc))])
    try:
        monitor_ports = parse_ports(monitoring_ports)
    except ValueError as exc:
        _fail([Problem("serve", None, "--monitoring-ports", str(exc))])
    console = Console(stderr=True, highlight=False)
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    try:
        with TritonServer(repository, http_port, grpc_port, metrics_port,
                          extra_args=server_flags(fleet_plan.models)) as server, \
                canary_server(fleet_plan, repository), \
                local_gateway(fleet_plan, root, stack, http_port, grpc_port, console, gateway_ports,
                              drift_metrics=monitor_ports[2] if monitor_ports else 0) as gateway, \
                local_monitoring(fleet_plan, root, stack, metrics_port, gateway.ports, monitor_ports, console):
            console.print(f"[green]Triton ready[/] — models: {', '.join(m.name for m in fleet_plan.models)}")
            console.print(f"  HTTP    {server.http_url}\n  gRPC    {server.grpc_url}\n  metrics {server.metrics_url}")
            console.print(f"  repository {repository}\nCtrl-C to stop.")
            while not stop["now"] and server.process.poll() is None:
                time.sleep(0.2)
            if server.process.poll() is not None:
                console.print(f"[red]tritonserver exited with code {server.process.returncode}[/]\n{server.log_tail()}")
                raise typer.Exit(1)
    except (TritonNotInstalled, TritonStartupError, GatewayStartupError, MonitoringStartupError) as exc:
        console.print(f"[red]error:[/] {exc}", markup=True)
        raise typer.Exit(1)
    console.print("stopped")


from modelfleet.cli_tune import tune  # noqa: E402  `modelfleet tune` lives in cli_tune.py
app.command()(tune)
from modelfleet.cli_gateway import keys_app  # noqa: E402  `modelfleet keys` lives in cli_gateway.py
app.add_typer(keys_app, name="keys")
from modelfleet.cli_drift import profile  # noqa: E402  `modelfleet profile` lives in cli_drift.py
app.command()(profile)
from modelfleet.cli_drift_report import drift_report  # noqa: E402  Evidently, an optional extra
app.command("drift-report")(drift_report)
from modelfleet.cli_import import import_repository, render_model  # noqa: E402  import lives in cli_import.py
app.command("import")(import_repository)
from modelfleet.cli_diff import diff  # noqa: E402  `modelfleet diff` lives in cli_diff.py
app.command()(diff)
from modelfleet.cli_local import down, status, up  # noqa: E402  the local stack in the background
for _command in (up, status, down):
    app.command()(_command)


def main() -> None:  # pragma: no cover - the console script
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
