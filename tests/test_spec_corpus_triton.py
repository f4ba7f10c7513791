"""Bad Triton settings in a spec get one clear line naming the file, the line, the field and the fix (cases in
tests/corpus/bad_triton.yaml, run exactly like tests/corpus/bad.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from test_spec_corpus import _CaseLoader, check_case

CASES = yaml.load((Path(__file__).parent / "corpus" / "bad_triton.yaml").read_text(), Loader=_CaseLoader)


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_bad_triton_setting_gets_a_clear_error(project_copy: Path, case: dict) -> None:
    check_case(project_copy, case)
