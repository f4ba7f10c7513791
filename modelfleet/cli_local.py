"""`modelfleet up / status / down`: the local stack in the background (registered by `modelfleet.cli`)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelfleet.gateway.plan import API_KEY_HEADER
from modelfleet.loader import Problem

RUN_DIR_OPTION = Annotated[Path | None, typer.Option(
    "--run-dir", help="Where the stack keeps its state and logs. Default: build/local/<stack>.", show_default=False)]


def _cli():
    # cli.py registers these commands at its end: import its helpers lazily to avoid a cycle.
    from modelfleet import cli
    return cli


def _folder(root: Path, stack: str, run_dir: Path | None) -> Path:
    from modelfleet.localstack import run_dir as default_run_dir
    return (run_dir or default_run_dir(root, stack)).resolve()


def _ports(overrides: list[str], plan) -> dict[str, int]:
    from modelfleet.local import default_ports

    ports = default_ports(plan)
    problems = []
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in ports:
            problems.append(Problem("--port", None, name or item, f"expected NAME=PORT with NAME one of "
                                    f"{', '.join(sorted(ports))}, got {item!r}"))
        elif not value.isdigit() or not 1 <= int(value) <= 65535:
            problems.append(Problem("--port", None, name, f"must be a port number 1-65535, got {value!r}"))
        else:
            ports[name] = int(value)
    clashes = sorted({p for p in ports.values() if list(ports.values()).count(p) > 1})
    if clashes:
        problems.append(Problem("--port", None, "", f"two services on one port: {', '.join(map(str, clashes))}"))
    if problems:
        _cli()._fail(problems)
    return ports


def up(
    stack: Annotated[str, typer.Option("--stack", "-s", help="A local stack: reads stacks/Pulumi.<NAME>.yaml.")] = "local",
    port: Annotated[list[str] | None, typer.Option("--port", help="Move one service: NAME=PORT, e.g. "
                                                   "triton-http=18000 (repeatable).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for every process to be ready.",
                                           min=1)] = 120,
    run_dir: RUN_DIR_OPTION = None,
    root: Annotated[Path | None, typer.Option("--root", help="The project directory (the one holding Pulumi.yaml).",
                                              show_default=False)] = None,
) -> None:
    """Start the local stack in the background — real Triton (CPU), the gateway (Envoy, auth and inspection
    services) and Prometheus + Alertmanager, supervised — wait until it is ready, send one inference through the
    gateway with the dev key, and print the endpoints. `modelfleet status` shows it, `modelfleet down` stops it."""
    from modelfleet.local import local_processes, smoke_request
    from modelfleet.cli_gateway import dev_key
    from modelfleet.localstack import LocalStackError, PortInUse, check_ports, start, supervisor_running
    from modelfleet.monitoring.local import MonitoringStartupError
    from modelfleet.triton.config import ArtefactMissingError, ModelConfigError
    from modelfleet.triton.runtime import TritonNotInstalled

    cli = _cli()
    root = cli._root(root)
    plan = cli._plan_only(root, stack)
    if plan.environment != "local":
        cli._fail([Problem(f"stacks/Pulumi.{stack}.yaml", None, "modelfleet:environment",
                           f"up runs a local environment on this machine, not {plan.environment}; "
                           "use --stack local, or `pulumi up` for cloud stacks")])
    folder = _folder(root, stack, run_dir)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)
    if supervisor_running(folder):
        out.print(f"the {stack} stack is already running (state in {folder}); "
                  "`modelfleet status` shows it, `modelfleet down` stops it")
        _print_status(folder, out)
        return
    ports = _ports(port or [], plan)
    began = time.monotonic()
    # The dev key exists before the auth service starts, so the first request already finds it.
    key_path, new_key = dev_key(root, stack) if plan.gateway is not None else (None, None)
    try:
        processes = local_processes(plan, root, folder, ports)
        check_ports(processes)
        start(processes, folder, ready_timeout_s=timeout, progress=lambda m: err.print(f"  {m}"))
    except (ModelConfigError, ArtefactMissingError) as exc:
        cli._fail([Problem("up", None, "", str(exc))])
    except PortInUse as exc:
        cli._fail([Problem("up", None, "", str(exc))])
    except (TritonNotInstalled, MonitoringStartupError, LocalStackError) as exc:
        err.print(f"[red]error:[/] {exc}", markup=True)
        raise typer.Exit(1)
    model = plan.models[0]
    headers = {}
    if key_path is not None:
        headers[API_KEY_HEADER] = key_path.read_text().strip()
        url = f"http://127.0.0.1:{ports['gateway-http']}/v2/models/{model.name}/infer"
    else:
        url = f"http://127.0.0.1:{ports['triton-http']}/v2/models/{model.name}/infer"
    try:
        answer = _post(url, smoke_request(model), headers)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        from modelfleet.localstack import stop
        stop(folder)
        err.print(f"[red]error:[/] the stack started but the first inference failed: POST {url}: {exc}", markup=True)
        raise typer.Exit(1)
    outputs = ", ".join(o["name"] for o in answer.get("outputs", []))
    out.print(f"[green]local stack up[/] in {time.monotonic() - began:.1f}s — first inference: "
              f"{model.name} → {outputs} (through {'the gateway' if headers else 'Triton'})")
    table = Table("endpoint", "address", box=None)
    if plan.gateway is not None:
        table.add_row("gateway HTTP (KServe v2, x-api-key)", f"http://127.0.0.1:{ports['gateway-http']}")
        table.add_row("gateway gRPC (x-modelfleet-model)", f"127.0.0.1:{ports['gateway-grpc']}")
        table.add_row("audit log", str(folder / "gateway" / "audit.log"))
    table.add_row("Triton HTTP (direct)", f"http://127.0.0.1:{ports['triton-http']}")
    table.add_row("Triton metrics", f"http://127.0.0.1:{ports['triton-metrics']}/metrics")
    table.add_row("Prometheus", f"http://127.0.0.1:{ports['prometheus']}")
    table.add_row("Alertmanager", f"http://127.0.0.1:{ports['alertmanager']}")
    out.print(table)
    if headers:
        out.print(f"dev API key: {key_path} (mode 0600)")
        if new_key:
            out.print(f"  new key, shown once: {new_key}", markup=False)
    out.print(f"logs: {folder / 'logs'}")
    example = (f"curl -s -H '{API_KEY_HEADER}: '$(cat {key_path}) http://127.0.0.1:{ports['gateway-http']}"
               f"/v2/models/{model.name}" if headers else
               f"curl -s http://127.0.0.1:{ports['triton-http']}/v2/models/{model.name}")
    out.print(f"next: modelfleet status   ·   modelfleet down   ·   {example}", markup=False)


def _post(url: str, body: dict, headers: dict[str, str]) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _print_status(folder: Path, out: Console) -> int:
    from modelfleet.localstack import status as process_status

    rows = process_status(folder)
    if not rows:
        out.print(f"not running (no supervisor answers in {folder})")
        return 3
    table = Table("process", "state", "pid", "ports", "health", "uptime", box=None)
    for row in rows:
        ports = " ".join(f"{name}:{port}" for name, port in sorted(row.ports.items()))
        uptime = f"{row.uptime_s:.0f}s" if row.uptime_s is not None else "-"
        table.add_row(row.name, row.state, str(row.pid or "-"), ports, "ok" if row.healthy else "FAILING", uptime)
    out.print(table)
    out.print(f"logs: {folder / 'logs'}")
    return 0 if all(r.healthy for r in rows) else 1


def status(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The local stack's name.")] = "local",
    run_dir: RUN_DIR_OPTION = None,
    root: Annotated[Path | None, typer.Option("--root", help="The project directory.", show_default=False)] = None,
) -> None:
    """Show each process of the local stack: state, pid, ports and health. Exit 0 when all are healthy,
    1 when one is not, 3 when the stack is not running."""
    folder = _folder(_cli()._root(root), stack, run_dir)
    raise typer.Exit(_print_status(folder, Console(highlight=False)))


def down(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The local stack's name.")] = "local",
    run_dir: RUN_DIR_OPTION = None,
    root: Annotated[Path | None, typer.Option("--root", help="The project directory.", show_default=False)] = None,
) -> None:
    """Stop every process of the local stack and wait until their ports are free. Logs stay."""
    from modelfleet.localstack import LocalStackError, read_state, stop, supervisor_running

    folder = _folder(_cli()._root(root), stack, run_dir)
    out = Console(highlight=False)
    if not supervisor_running(folder) and read_state(folder) is None:
        out.print(f"not running (nothing to stop in {folder})")
        return
    began = time.monotonic()
    try:
        forced = stop(folder)
    except LocalStackError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}", markup=True)
        raise typer.Exit(1)
    if forced:
        out.print(f"stopped by force: {', '.join(forced)}")
    out.print(f"stopped in {time.monotonic() - began:.1f}s; ports free; logs kept in {folder / 'logs'}")
