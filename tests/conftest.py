"""Shared fixtures: the example project, copies of it to break, and the offline evaluation of its stacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A throwaway copy of the example project's specs and program, safe to edit."""
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(PROJECT / name, tmp_path / name)
    for folder in ("models", "stacks"):
        shutil.copytree(PROJECT / folder, tmp_path / folder)
    copy_artefacts(tmp_path)
    return tmp_path


def copy_artefacts(target: Path) -> None:
    """The program uploads the models' artefacts (source.local, under build/model-artifacts): give the copy its
    own, copied (a link would let a test that rebuilds or writes under build/ touch the project's)."""
    artefacts = PROJECT / "build" / "model-artifacts"
    if artefacts.is_dir():
        shutil.copytree(artefacts, target / "build" / "model-artifacts", symlinks=False)


@pytest.fixture(scope="session")
def evaluated():
    """Evaluate a stack once per test session; evaluation is in-process and repeatable."""
    from modelfleet.offline import evaluate

    cache: dict = {}

    def get(stack: str):
        if stack not in cache:
            cache[stack] = evaluate(PROJECT, stack)
        return cache[stack]

    return get
