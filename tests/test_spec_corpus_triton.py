"""Bad Triton settings in a spec get one clear line naming the file, the line, the field and the fix (cases in
tests/corpus/bad_triton.yaml, run exactly like tests/corpus/bad.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from test_spec_corpus import _apply, _CaseLoader, run_validate

CASES = yaml.load((Path(__file__).parent / "corpus" / "bad_triton.yaml").read_text(), Loader=_CaseLoader)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_bad_triton_setting_gets_a_clear_error(project_copy: Path, case: dict) -> None:
    _apply(project_copy, case["files"])
    result = run_validate(project_copy, *(["--stack", case["stack"]] if "stack" in case else []))
    assert result.exit_code == 2, f"expected exit 2, got {result.exit_code}:\n{result.output}"
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[-1] == f"{len(case['expect'])} problem(s) found.", result.stderr
    assert sorted(lines[:-1]) == sorted(case["expect"]), result.stderr
