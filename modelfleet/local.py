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


# Where the local stack listens unless `modelfleet up --port NAME=PORT` says otherwise; all on 127.0.0.1.
DEFAULT_PORTS = {"triton-http": 8000, "triton-grpc": 8001, "triton-metrics": 8002}


def local_processes(plan: FleetPlan, root: Path, folder: Path, ports: dict[str, int]) -> list[LocalProcess]:
    """The supervised processes of the local stack, from the plan: what `modelfleet up` runs."""
    from modelfleet.triton.runtime import TritonServer

    repository = build_local_repository(plan, root, folder / "model-repository")
    triton = TritonServer(repository, ports["triton-http"], ports["triton-grpc"], ports["triton-metrics"],
                          log_path=folder / "logs" / "triton.log")
    environment = triton.install.env()
    return [
        LocalProcess(
            name="triton",
            command=tuple(triton.command()),
            ports={"http": triton.http_port, "grpc": triton.grpc_port, "metrics": triton.metrics_port},
            ready_url=f"http://{triton.http_url}/v2/health/ready",
            env={key: environment[key] for key in ("PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV")},
        ),
    ]


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
