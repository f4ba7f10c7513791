"""Fixtures for tests against a real tritonserver, installed by scripts/install_triton.sh.

Nothing here skips: without Triton the fixtures fail with the command that installs it.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from modelfleet.triton.runtime import TritonInstall, TritonNotInstalled, TritonServer, find_install, free_ports

ROOT = Path(__file__).resolve().parents[2]

# TEST FIXTURES, not product configs: real configs are rendered from models/*.yaml. The fraud
# detector's long queue delay makes concurrent requests reliably meet in one batch, so the tests
# exercise model.py's concatenate-and-split path.
HAND_CONFIGS = {
    "fraud-detector": """
name: "fraud-detector"
backend: "python"
max_batch_size: 64
input [ { name: "features" data_type: TYPE_FP32 dims: [ 32 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
""",
    "sentiment": """
name: "sentiment"
backend: "python"
max_batch_size: 64
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "scores" data_type: TYPE_FP32 dims: [ 3 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
dynamic_batching { max_queue_delay_microseconds: 200 }
""",
}


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    try:
        return find_install()
    except TritonNotInstalled as error:
        message = str(error)
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback around the hint


@pytest.fixture(scope="session")
def build_examples(triton_install):
    """Build the example artefacts into a folder with the toolchain's Python, as `make setup` does."""

    def build(out: Path) -> Path:
        subprocess.run([str(triton_install.prefix / "bin" / "python"), str(ROOT / "examples" / "build_models.py"),
                        str(out)], check=True, capture_output=True, text=True)
        return out

    return build


@pytest.fixture(scope="session")
def examples():
    """examples/build_models.py as a module (examples/ is scripts, not a package), for its numpy references."""
    spec = importlib.util.spec_from_file_location("build_models", ROOT / "examples" / "build_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory, build_examples) -> Path:
    repository = build_examples(tmp_path_factory.mktemp("model-repository"))
    for name, config in HAND_CONFIGS.items():
        (repository / name / "config.pbtxt").write_text(config.lstrip())
    return repository


@pytest.fixture(scope="session")
def triton(triton_install, model_repository):
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(model_repository, http_port, grpc_port, metrics_port, install=triton_install) as server:
        yield server
