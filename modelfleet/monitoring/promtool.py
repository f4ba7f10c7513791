"""promtool (Debian's `prometheus` package, installed by scripts/install_monitoring.sh): checks and unit tests
of the rendered rules, run as a process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

INSTALL_HINT = "install it: bash scripts/install_monitoring.sh (apt-get install prometheus prometheus-alertmanager)"


class PromtoolError(RuntimeError):
    """promtool is missing or rejected the files; the message carries its output."""


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        raise PromtoolError(f"promtool not found on PATH; {INSTALL_HINT}")
    return found


def run(*args: str | Path, cwd: Path | None = None, timeout_s: float = 600) -> str:
    proc = subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout_s)
    if proc.returncode != 0:
        raise PromtoolError(f"promtool {' '.join(map(str, args))} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def check_rules(*files: Path) -> str:
    return run("check", "rules", *files)


def test_rules(*files: Path) -> str:
    return run("test", "rules", *files)
