"""Every kind of bad input gets one clear line naming the file, the line, the field and the fix — never a
traceback. Cases live in tests/corpus/bad.yaml so that adding one is adding data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from modelfleet.cli import app

CORPUS = Path(__file__).parent / "corpus" / "bad.yaml"


class _CaseLoader(yaml.SafeLoader):
    """`!replace {old: new}` edits the example file; `!copy path` copies another example file; `!latin1 text`
    writes the text in Latin-1 (so that é is not UTF-8)."""


_CaseLoader.add_constructor("!replace", lambda loader, node: ("replace", loader.construct_mapping(node)))
_CaseLoader.add_constructor("!copy", lambda loader, node: ("copy", loader.construct_scalar(node)))
_CaseLoader.add_constructor("!latin1", lambda loader, node: ("latin1", loader.construct_scalar(node)))

CASES = yaml.load(CORPUS.read_text(), Loader=_CaseLoader)


def _apply(root: Path, files: dict) -> None:
    for relative, change in files.items():
        target = root / relative
        if isinstance(change, str):
            target.write_text(change)
        elif change[0] == "copy":
            target.write_text((root / change[1]).read_text())
        elif change[0] == "latin1":
            target.write_bytes(change[1].encode("latin-1"))
        else:
            text = target.read_text()
            for old, new in change[1].items():
                assert old in text, f"corpus case edits {relative}, which no longer contains {old!r}"
                text = text.replace(old, new)
            target.write_text(text)


def run_validate(root: Path, *args: str):
    return CliRunner().invoke(app, ["validate", "--root", str(root), *args])


def check_case(project_copy: Path, case: dict) -> None:
    """Apply one corpus case to the project copy: `validate` exits 2 with exactly the case's lines."""
    _apply(project_copy, case["files"])
    result = run_validate(project_copy, *(["--stack", case["stack"]] if "stack" in case else []))
    assert result.exit_code == 2, f"expected exit 2, got {result.exit_code}:\n{result.output}"
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[-1] == f"{len(case['expect'])} problem(s) found.", result.stderr
    assert sorted(lines[:-1]) == sorted(case["expect"]), result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_bad_spec_gets_a_clear_error(project_copy: Path, case: dict) -> None:
    check_case(project_copy, case)


def test_example_specs_are_valid(project_copy: Path) -> None:
    result = run_validate(project_copy)
    assert result.exit_code == 0, result.output
    assert "ok: dev, local, prod, staging valid" in result.stdout


def test_minimal_model_gets_safe_defaults(tmp_path: Path) -> None:
    from modelfleet.loader import load_model

    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\nowner: me@example.com\nsource: s3://bucket/tiny\nbackend: onnxruntime\n"
        "inputs: [{name: x, dtype: FP32, dims: [4]}]\noutputs: [{name: y, dtype: FP32, dims: [1]}]\n"
        "slo: {p99_ms: 20}\n"
    )
    spec = load_model(path)
    assert spec.source.aws == "s3://bucket/tiny" and spec.source.gcp is None
    assert spec.scaling.min_replicas == 1 and not spec.scaling.scale_to_zero
    assert spec.gateway.pii.mode == "mask" and not spec.gateway.audit.payloads
    assert spec.gateway.fail_mode == "closed" and spec.gateway.auth == ["api-key"]
    assert spec.hardware.gpu_class == "nvidia-l4" and spec.hardware.gpus_per_replica == 1


def test_validate_single_files(project_copy: Path) -> None:
    ok = run_validate(project_copy, str(project_copy / "models" / "sentiment.yaml"),
                      str(project_copy / "stacks" / "Pulumi.prod.yaml"))
    assert ok.exit_code == 0, ok.output
    (project_copy / "models" / "sentiment.yaml").write_text("name: sentiment\nowner: 5\n")
    bad = run_validate(project_copy, str(project_copy / "models" / "sentiment.yaml"))
    assert bad.exit_code == 2
    assert "models/sentiment.yaml:2 owner: expected a string, got 5" in bad.stderr
