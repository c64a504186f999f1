"""Generated hostile input through every stage's real executable: no crash, every valid record
out in order, one bad_record per bad line. bench/fuzz.py holds the strategies and the check, and
runs the large corpus; here a few batches a stage keep the suite fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import fuzz  # type: ignore[import-not-found, unused-ignore]  # noqa: E402


@pytest.mark.parametrize("name", [s.name for s in fuzz.STAGES])
def test_generated_hostile_lines_cost_no_valid_record_and_are_each_reported(installed_pulse, name):
    stage = fuzz.BY_NAME[name]

    @settings(
        max_examples=4,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz.batches(60))
    def one(batch: list[fuzz.Case]) -> None:
        result = fuzz.run_batch(stage, batch, dict(os.environ))
        assert result.problems == []
        assert result.cases == len(batch)

    one()
