"""The local stack: the plan's own Triton configs, served by a real tritonserver on this machine."""

from __future__ import annotations

from pathlib import Path

from modelfleet.localstack import LocalProcess
from modelfleet.plan import FleetPlan
from modelfleet.spec import ModelSpec
from modelfleet.render import model_configs
from modelfleet.triton.config import CPU, build_repository, local_source


def repository_dir(root: Path, stack: str) -> Path:
    return root / "build" / "serve" / stack / "model-repository"


def build_local_repository(plan: FleetPlan, root: Path, repository: Path) -> Path:
    """Lay out every model of the stack with exactly the config `modelfleet render` writes for CPU, and its
    artefacts linked from `source.local`. Raises ModelConfigError or ArtefactMissingError naming the file."""
    configs = model_configs(plan)
    return build_repository(
        repository,
        [(model, configs[(model.name, CPU)], local_source(model, root)) for model in plan.models],
        link=True,
    )


# Where the local stack listens unless `modelfleet up --port NAME=PORT` says otherwise; all on 127.0.0.1. The
# gateway's listeners are the plan's (8080/8081 unless the stack says otherwise).
DEFAULT_PORTS = {"triton-http": 8000, "triton-grpc": 8001, "triton-metrics": 8002,
                 "gateway-http": 8080, "gateway-grpc": 8081, "gateway-admin": 9901,
                 "gateway-extproc": 9002, "drift-metrics": 9102, "prometheus": 9090, "alertmanager": 9093}


def default_ports(plan: FleetPlan) -> dict[str, int]:
    ports = dict(DEFAULT_PORTS)
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
    if plan.gateway is not None:
        gateway_ports = LocalPorts(http=ports["gateway-http"], grpc=ports["gateway-grpc"], admin=ports["gateway-admin"],
                                   triton_http=ports["triton-http"], triton_grpc=ports["triton-grpc"],
                                   extproc=ports["gateway-extproc"],
                                   extproc_metrics=ports["drift-metrics"])
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
                                               ports["drift-metrics"] if plan.gateway else None),
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
