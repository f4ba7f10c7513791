"""Shared fixtures: the example project, copies of it to break, and the offline evaluation of its stacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.project import copy_project

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A throwaway copy of the example project's specs and program, safe to edit."""
    return copy_project(tmp_path)


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
