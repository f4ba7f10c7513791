"""The example models' model.py load in the pinned cloud image as they do here.

The python backend of nvcr.io/nvidia/tritonserver:<tag>-py3 has the standard library, numpy (installed by
triton-inference-server/server build.py for the python backend) and triton_python_backend_utils — nothing else,
so a model.py importing anything more fails to load in the cloud while passing every local test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BACKENDS = sorted((Path(__file__).resolve().parent.parent / "examples" / "backends").glob("*.py"))
IMAGE_PACKAGES = {"numpy", "triton_python_backend_utils"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_there_is_a_backend_per_example_model():
    assert [p.name for p in BACKENDS] == ["fraud_detector.py", "sentiment.py"]


@pytest.mark.parametrize("backend", BACKENDS, ids=[p.stem for p in BACKENDS])
def test_model_py_imports_only_what_the_image_ships(backend):
    extra = _imports(backend) - IMAGE_PACKAGES - set(sys.stdlib_module_names)
    assert not extra, f"{backend.name} imports {sorted(extra)}, which the pinned Triton image's python backend lacks"
