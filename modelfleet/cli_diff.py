"""`modelfleet diff`: what a change does to a stack (registered by `modelfleet.cli`).

Two plan JSONs, or the working tree against a git ref. The ref is evaluated from a `git archive` of it in a
temporary folder, by its own code (its modelfleet, components and program, in a subprocess), so the user's
working tree, index and worktree list are never touched and the base is planned exactly as it was written.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from modelfleet.loader import Problem


class DiffFormat(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


class _Failed(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise _Failed([Problem(str(path), None, "", "no such file; write one with "
                               "`modelfleet plan --stack NAME --format json > FILE`")])
    except json.JSONDecodeError as exc:
        raise _Failed([Problem(str(path), exc.lineno, "", f"not JSON ({exc.msg}); expected the output of "
                               "`modelfleet plan --format json`")])
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        raise _Failed([Problem(str(path), None, "resources", "no resource list: not a `modelfleet plan --format "
                               "json` file")])
    return data


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise _Failed([Problem("git", None, "", f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")])
    return done.stdout.strip()


def default_base(root: Path) -> str:
    """The merge base of HEAD with the default branch (origin's HEAD, else main, else master)."""
    candidates = []
    head = subprocess.run(["git", "-C", str(root), "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"],
                          capture_output=True, text=True)
    if head.returncode == 0 and head.stdout.strip():
        candidates.append(head.stdout.strip())
    candidates += ["origin/main", "main", "origin/master", "master"]
    for branch in candidates:
        if subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}"],
                          capture_output=True).returncode == 0:
            return _git(root, "merge-base", "HEAD", branch)
    raise _Failed([Problem("git", None, "--base", "no default branch found (origin/HEAD, main, master); "
                           "pass --base REF")])


def plan_at_ref(root: Path, ref: str, stack: str) -> dict:
    """The plan JSON of `stack` as the commit `ref` declares it, evaluated by that commit's own code."""
    commit = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    prefix = _git(root, "rev-parse", "--show-prefix")  # root may be a folder inside the repository
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", f"{commit}:{prefix}" if prefix
                              else commit], capture_output=True)
    if archive.returncode != 0:
        raise _Failed([Problem("git", None, "", f"git archive {ref}: {archive.stderr.decode().strip()}")])
    with tempfile.TemporaryDirectory(prefix="modelfleet-base-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        # The ref's own packages first; a ref without them (specs only) falls back to the installed modelfleet.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH")) if p)}
        done = subprocess.run([sys.executable, "-m", "modelfleet.cli", "plan", "--stack", stack, "--format", "json",
                               "--root", tmp], capture_output=True, text=True, cwd=tmp, env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "problem(s) found" not in line]
        raise _Failed([Problem(f"{ref} ({commit[:12]})", None, "", line.replace(tmp + "/", ""))
                       for line in lines[-20:]] or [Problem(ref, None, "", f"plan exited {done.returncode}")])
    return json.loads(done.stdout)


def _head_plan(root: Path, stack: str) -> dict:
    from modelfleet.cli import _evaluate, _review
    from modelfleet.report import Report

    fleet_plan, evaluation = _evaluate(root, stack)  # a spec error exits 2 with file:line, as `plan` does
    return Report(fleet_plan, evaluation, {"policies": _review(evaluation).to_json()}).to_json()


def diff(
    old: Annotated[Path | None, typer.Argument(help="The old plan JSON (`modelfleet plan --format json`).",
                                               show_default=False)] = None,
    new: Annotated[Path | None, typer.Argument(help="The new plan JSON.", show_default=False)] = None,
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="Compare this stack in the working tree "
                                              "against --base.")] = None,
    base: Annotated[str | None, typer.Option("--base", help="A git ref to compare against. Default: the merge "
                                             "base of HEAD with the default branch.")] = None,
    output: Annotated[DiffFormat, typer.Option("--format", "-f", help="text, json, or markdown (a pull-request "
                                               "comment).")] = DiffFormat.text,
    root: Annotated[Path | None, typer.Option("--root", help="The project directory (the one holding "
                                              "Pulumi.yaml).", show_default=False)] = None,
) -> None:
    """What a change does: resources created, deleted, updated (changed inputs, old → new, secrets redacted)
    and REPLACED (from each provider's replace-on-change properties), cost per region and model, the budget
    after it, and policy verdicts that appear or disappear. Exits 0 (also when there are changes); 2 on a bad
    spec on either side, a bad file or ref."""
    from modelfleet.cli import _fail, _root
    from modelfleet.diff import diff_plans, render_json, render_markdown, render_text

    try:
        if old is not None or new is not None:
            if old is None or new is None or stack is not None or base is not None:
                raise _Failed([Problem("diff", None, "", "give OLD.json and NEW.json, or --stack NAME [--base REF]")])
            before, after = _load_json(old), _load_json(new)
            labels = (str(old), str(new))
        elif stack is not None:
            project = _root(root)
            ref = base or default_base(project)
            before = plan_at_ref(project, ref, stack)
            after = _head_plan(project, stack)
            labels = (ref if base else f"merge base {ref[:12]}", "working tree")
        else:
            raise _Failed([Problem("diff", None, "", "give OLD.json and NEW.json, or --stack NAME [--base REF]")])
    except _Failed as exc:
        _fail(exc.problems)
    result = diff_plans(before, after, *labels)
    render = {DiffFormat.json: render_json, DiffFormat.markdown: render_markdown}.get(output, render_text)
    sys.stdout.write(render(result))
