"""The seeded tiny run's numbers are pinned: any change shows as a diff against tests/golden/.

Regenerate deliberately with ``python scripts/regen_golden.py`` when a change is meant to move them.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("regen_golden", REPO / "scripts" / "regen_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def test_compare_reports_every_difference():
    e = [{"a": 1.0, "b": 2.0, "c": float("nan")}]
    assert golden.compare(e, [{"a": 1.0, "b": 2.0, "c": float("nan")}]) == []
    assert golden.compare(e, [{"a": 1.0, "b": 2.000001, "c": float("nan")}]) == ["gen 0 b: 2.0 → 2.000001"]
    assert golden.compare(e, [{"a": 1.0, "c": 0.0}]) == ["gen 0 b: 2.0 → None", "gen 0 c: nan → 0.0"]
    assert golden.compare(e, []) == ["1 generations expected, 0 found"]


def test_the_seeded_tiny_run_matches_its_golden_numbers(tmp_path):
    path = golden.golden_path()
    if not path.exists():
        # Floating-point kernels differ between CPU kinds, so each kind has its own file.
        pytest.skip(f"no golden file for CPU capability {golden.cpu_capability()}: "
                    "run `python scripts/regen_golden.py` on such a machine and commit it")
    expected = json.loads(path.read_text())
    assert expected["overrides"] == golden.OVERRIDES
    diffs = golden.compare(expected["generations"], golden.run_tiny(tmp_path))
    assert not diffs, "numbers moved from tests/golden/" + path.name + ":\n" + "\n".join(diffs[:40])
