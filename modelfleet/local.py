"""The local stack: the plan's own Triton configs, served by a real tritonserver on this machine."""

from __future__ import annotations

from pathlib import Path

from modelfleet import canary
from modelfleet.localstack import LocalProcess
from modelfleet.plan import FleetPlan
from modelfleet.spec import ModelSpec
from modelfleet.render import model_configs
from modelfleet.triton.config import (CPU, ArtefactMissingError, build_repository, check_artefacts, local_source,
                                      server_flags)


def repository_dir(root: Path, stack: str) -> Path:
    return root / "build" / "serve" / stack / "model-repository"


def build_local_repository(plan: FleetPlan, root: Path, repository: Path) -> Path:
    """Lay out every model of the stack with exactly the config `modelfleet render` writes for CPU, and its
    artefacts linked from `source.local`. Raises ModelConfigError or ArtefactMissingError naming the file."""
    configs = model_configs(plan)
    build_repository(
        repository,
        [(model, configs[(model.name, CPU)], local_source(model, root)) for model in plan.models],
        link=True,
    )
    for model in canary_models(plan):
        # The bucket's layout (modelfleet.release): the canary's version beside the stable's, and its config where
        # `--model-config-name=canary` looks for it.
        source = local_source(model, root)
        spec = canary.canary_spec(model)
        try:
            check_artefacts(spec, source)
        except ArtefactMissingError as exc:
            raise ArtefactMissingError(f"{exc}; rollout.canary_version names a version directory under "
                                       "source.local: build or copy it there, or fix the number") from None
        target = repository / model.name / str(spec.version)
        target.symlink_to((source / str(spec.version)).resolve(), target_is_directory=True)
        config = repository / canary.config_key(model.name)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(configs[(canary.config_key(model.name), CPU)])
    return repository


def canary_models(plan: FleetPlan) -> list[ModelSpec]:
    """The models whose canary (modelfleet.canary) the local stack serves from its second Triton."""
    return [m for m in plan.models if m.rollout.canary_version is not None]


def canary_server(plan: FleetPlan, repository: Path):
    """`serve`'s second Triton for the canaries, on the canary ports the gateway's default config names; a no-op
    context without a canary."""
    import contextlib

    from modelfleet.triton.runtime import TritonServer

    if not canary_models(plan):
        return contextlib.nullcontext()
    return TritonServer(repository, *(CANARY_PORTS[f"triton-canary-{n}"] for n in ("http", "grpc", "metrics")),
                        models=[m.name for m in canary_models(plan)], extra_args=canary_triton_args(plan))


def canary_triton_args(plan: FleetPlan) -> tuple[str, ...]:
    """The canary Triton's flags beyond the stable's: it reads each canary's configs/canary.pbtxt, as the canary
    Deployment does (serving.triton_args)."""
    return (f"--model-config-name={canary.CONFIG_NAME}", *server_flags(canary_models(plan)))


# Where the local stack listens unless `modelfleet up --port NAME=PORT` says otherwise; all on 127.0.0.1. The
# gateway's listeners are the plan's (8080/8081 unless the stack says otherwise).
DEFAULT_PORTS = {"triton-http": 8000, "triton-grpc": 8001, "triton-metrics": 8002,
                 "gateway-http": 8080, "gateway-grpc": 8081, "gateway-admin": 9901,
                 "gateway-extproc": 9002, "drift-metrics": 9102, "prometheus": 9090, "alertmanager": 9093}


# The canaries' Triton (modelfleet.canary), only in a stack whose models have one; the gateway's default config
# points its canary clusters here (envoy_config.CANARY_TRITON_*_PORT).
CANARY_PORTS = {"triton-canary-http": 8010, "triton-canary-grpc": 8011, "triton-canary-metrics": 8012}


def default_ports(plan: FleetPlan) -> dict[str, int]:
    ports = dict(DEFAULT_PORTS) | (CANARY_PORTS if canary_models(plan) else {})
    if plan.gateway is not None:
        ports.update({"gateway-http": plan.gateway.http_port, "gateway-grpc": plan.gateway.grpc_port})
    return ports


def local_processes(plan: FleetPlan, root: Path, folder: Path, ports: dict[str, int]) -> list[LocalProcess]:
    """The supervised processes of the local stack, from the plan: what `modelfleet up` runs. Each piece's command
    line comes from the class that runs it in the foreground (`serve`, tests), so both run the same thing."""
    from modelfleet.gateway import keys as keyfile
    from modelfleet.gateway.envoy_config import LocalPorts
    from modelfleet.gateway.local import LocalGateway
    from modelfleet.monitoring.local import LocalMonitoring, Targets
    from modelfleet.triton.runtime import TritonServer

    repository = build_local_repository(plan, root, folder / "model-repository")
    triton = TritonServer(repository, ports["triton-http"], ports["triton-grpc"], ports["triton-metrics"],
                          log_path=folder / "logs" / "triton.log")
    environment = triton.install.env()
    processes = [LocalProcess(
        name="triton", command=tuple(triton.command()),
        ports={name: ports[name] for name in ("triton-http", "triton-grpc", "triton-metrics")},
        ready_url=f"http://{triton.http_url}/v2/health/ready",
        env={key: environment[key] for key in ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")},
    )]
    canaries = canary_models(plan)
    if canaries:
        names = ("triton-canary-http", "triton-canary-grpc", "triton-canary-metrics")
        second = TritonServer(repository, *(ports[n] for n in names), models=[m.name for m in canaries],
                              log_path=folder / "logs" / "triton-canary.log", extra_args=canary_triton_args(plan))
        processes.append(LocalProcess(
            name="triton-canary", command=tuple(second.command()), ports={n: ports[n] for n in names},
            ready_url=f"http://{second.http_url}/v2/health/ready",
            env={key: environment[key] for key in ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")}))
    if plan.gateway is not None:
        gateway_ports = LocalPorts(http=ports["gateway-http"], grpc=ports["gateway-grpc"], admin=ports["gateway-admin"],
                                   triton_http=ports["triton-http"], triton_grpc=ports["triton-grpc"],
                                   extproc=ports["gateway-extproc"],
                                   extproc_metrics=ports["drift-metrics"],
                                   canary_triton_http=ports["triton-canary-http"] if canaries else 0,
                                   canary_triton_grpc=ports["triton-canary-grpc"] if canaries else 0)
        jwt = plan.gateway.jwt
        gateway = LocalGateway(plan.gateway, gateway_ports, root, plan.stack, keyfile.key_file(root, plan.stack),
                               folder / "gateway", str(root / jwt.jwks_file) if jwt and jwt.jwks_file else None)
        gateway.write_config()
        processes.append(LocalProcess(name="gateway-extproc", command=tuple(gateway.service_command("extproc")),
                                      ports={n: ports[n] for n in ("gateway-extproc", "drift-metrics")},
                                      ready_port=ports["gateway-extproc"], env=gateway.service_env()))
        processes.append(LocalProcess(
            name="envoy", command=tuple(gateway.envoy_command()),
            ports={n: ports[n] for n in ("gateway-http", "gateway-grpc", "gateway-admin")},
            ready_url=gateway.envoy_ready_url))
    monitoring = LocalMonitoring(plan, Targets(ports["triton-metrics"], ports["gateway-admin"] if plan.gateway else None,
                                               ports["drift-metrics"] if plan.gateway else None,
                                               ports["triton-canary-metrics"] if canaries else None),
                                 ports["prometheus"], ports["alertmanager"], folder / "monitoring")
    monitoring.write_configs()
    for name, (command, ready_url) in monitoring.commands().items():
        processes.append(LocalProcess(name=name, command=tuple(command), ports={name: ports[name]},
                                      ready_url=ready_url))
    return processes


def smoke_request(model: ModelSpec) -> dict:
    """A KServe v2 inference request any instance of `model` accepts: one item, variable dims as 1,
    zeros (or a short text for BYTES). What `modelfleet up` sends to prove the stack answers."""
    requests = []
    for tensor in model.inputs:
        shape = ([1] if model.max_batch_size > 0 else []) + [1 if d == -1 else d for d in tensor.dims]
        count = 1
        for d in shape:
            count *= d
        value = "modelfleet smoke test" if tensor.dtype == "BYTES" else False if tensor.dtype == "BOOL" else 0
        requests.append({"name": tensor.name, "datatype": tensor.dtype, "shape": shape, "data": [value] * count})
    return {"inputs": requests}
