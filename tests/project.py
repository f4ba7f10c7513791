"""The example project copied into a test's folder: its program, specs and stacks, and the built artefacts the
release uploads (`build/model-artifacts`, not in git)."""

from __future__ import annotations

import shutil
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def copy_project(root: Path, *, link_artefacts: bool = False) -> Path:
    """A copy safe to edit. Artefacts are copied unless `link_artefacts` (servers that only read them), so a test
    that rebuilds or writes under build/ never touches the project's own."""
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(PROJECT / name, root / name)
    for folder in ("models", "stacks"):
        shutil.copytree(PROJECT / folder, root / folder)
    artefacts = PROJECT / "build" / "model-artifacts"
    if link_artefacts:
        (root / "build").mkdir()
        (root / "build" / "model-artifacts").symlink_to(artefacts.resolve())
    elif artefacts.is_dir():
        shutil.copytree(artefacts, root / "build" / "model-artifacts", symlinks=False)
    return root
