"""`modelfleet keys create|list|revoke` and the gateway half of `modelfleet serve --stack local`."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelfleet.gateway import keys as keyfile
from modelfleet.gateway.plan import key_hash

keys_app = typer.Typer(help="API keys of a stack's gateway (locally a file of hashes; the key is shown once).",
                       no_args_is_help=True)
STACK = Annotated[str, typer.Option("--stack", "-s", help="Stack name: reads stacks/Pulumi.<NAME>.yaml.")]
ROOT = Annotated[Path | None, typer.Option("--root", help="The project directory.", show_default=False)]
DEV_TENANT = "dev"


def _local_keys(root: Path | None, stack: str) -> Path:
    from modelfleet.cli import _plan_only, _root

    root = _root(root)
    plan = _plan_only(root, stack)
    if plan.environment != "local":
        # The cloud side stores keys in the cloud's secret manager (the SecurityPolicy's secret), not here.
        Console(stderr=True).print(f"stack {stack} is {plan.environment}: its keys live in the cloud's secret "
                                   "manager, which this machine cannot reach; manage them there", markup=False)
        raise typer.Exit(2)
    return keyfile.key_file(root, stack)


def _bad(message: str) -> None:
    Console(stderr=True, highlight=False).print(f"error: {message}", markup=False)
    raise typer.Exit(2)


@keys_app.command("create")
def create(tenant: Annotated[str, typer.Option("--tenant", "-t", help="Who the key is for.")],
           stack: STACK = "local",
           scope: Annotated[list[str] | None, typer.Option("--scope", help="infer:<model> (repeat) or infer:*; "
                                                                           "default infer:*")] = None,
           expires: Annotated[str | None, typer.Option(help="ISO 8601 UTC, e.g. 2027-01-01T00:00:00Z")] = None,
           root: ROOT = None) -> None:
    """Create a key for TENANT and print it once; only its hash is stored."""
    path = _local_keys(root, stack)
    try:
        api_key, record = keyfile.create(path, tenant, scope or ["infer:*"], expires)
    except keyfile.KeyError_ as exc:
        _bad(str(exc))
    print(api_key)
    Console(stderr=True, highlight=False).print(
        f"key {record.key_id} for {record.tenant} ({', '.join(record.scopes)}); shown once, stored as a hash in "
        f"{path}", markup=False)


@keys_app.command("list")
def list_(stack: STACK = "local",
          tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None, root: ROOT = None) -> None:
    """Key ids, tenants, scopes and state (never the keys)."""
    path = _local_keys(root, stack)
    for r in keyfile.load(path).values():
        if tenant and r.tenant != tenant:
            continue
        state = f"revoked {r.revoked}" if r.revoked else (f"expires {r.expires}" if r.expires else "active")
        if not r.hash.startswith("{SHA}"):
            state = "stored before native checks: refused, create a new key"
        print(f"{r.key_id}  {r.tenant}  {','.join(r.scopes)}  created {r.created}  {state}")


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id `keys list` shows.")],
           stack: STACK = "local", tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None,
           root: ROOT = None) -> None:
    """Revoke a key; the running gateway refuses it from its next request."""
    path = _local_keys(root, stack)
    try:
        record = keyfile.revoke(path, key_id, tenant)
    except keyfile.KeyError_ as exc:
        _bad(str(exc))
    print(f"revoked {record.key_id} ({record.tenant}) at {record.revoked}")


def dev_key(root: Path, stack: str) -> tuple[Path, str | None]:
    """The stack's dev key file (0600); a new key, printed once by the caller, when there is none yet."""
    keys = keyfile.key_file(root, stack)
    path = keys.with_name("dev-api-key")
    # Under the key file's lock: two `modelfleet up` at once find one dev key, not one each.
    with keyfile.locked(keys):
        # Kept while the key file holds its hash in the current form (a key stored as `sha256:` before the gateway
        # checked keys inside Envoy cannot be checked there: docs/adr/0004-native-gateway-auth.md).
        if path.exists() and key_hash(path.read_text().strip()) in {r.hash for r in keyfile.load(keys).values()}:
            return path, None
        api_key, _ = keyfile.create(keys, DEV_TENANT, ["infer:*"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(api_key + "\n")
    return path, api_key


@contextlib.contextmanager
def local_gateway(plan, root: Path, stack: str, triton_http: int, triton_grpc: int, console: Console,
                  gateway_ports: str | None = None, drift_metrics: int = 0):
    """Envoy and the service in front of the local Triton, with the config `modelfleet render` writes."""
    from modelfleet.gateway.envoy_config import default_ports
    from modelfleet.gateway.local import LocalGateway

    ports = default_ports(plan.gateway)
    chosen = {"triton_http": triton_http, "triton_grpc": triton_grpc, "extproc_metrics": drift_metrics}
    if gateway_ports:
        try:
            http, grpc, extproc, admin = (int(p) for p in gateway_ports.split(","))
        except ValueError:
            _bad(f"--gateway-ports: write four ports HTTP,GRPC,EXTPROC,ADMIN, got {gateway_ports!r}")
        chosen.update(http=http, grpc=grpc, extproc=extproc, admin=admin)
    ports = type(ports)(**{**ports.__dict__, **chosen})
    key_path, new_key = dev_key(root, stack)
    workdir = root / "build" / "serve" / stack / "gateway"
    jwks = str(root / plan.gateway.jwt.jwks_file) if plan.gateway.jwt and plan.gateway.jwt.jwks_file else None
    with LocalGateway(plan.gateway, ports, root, stack, keyfile.key_file(root, stack), workdir, jwks) as gateway:
        console.print(f"[green]gateway ready[/]\n  HTTP    {gateway.http_url}\n  gRPC    {gateway.grpc_url} "
                      f"(header x-modelfleet-model: <model>)\n  audit   {gateway.audit_path}")
        if new_key:
            console.print(f"  dev API key (shown once; also in {key_path}, mode 0600):\n  {new_key}", markup=False)
        else:
            console.print(f"  dev API key in {key_path}")
        yield gateway
