"""bench/detect.py's protocols: what each model is trained on and which test rows it scores."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import detect  # type: ignore[import-not-found, unused-ignore]  # noqa: E402


def machine(train: int, test: int) -> detect.Machine:
    rows = np.zeros((train + test, 3), np.float32)
    return detect.Machine("m", rows[:train], rows[train:], np.zeros(test, bool), [])


def test_static_scores_every_test_row_with_the_model_of_the_train_rows() -> None:
    segs = detect.segments(machine(2000, 3000), "static")
    assert [(s.start, s.stop, s.window) for s in segs] == [(0, 3000, range(2000))]


def test_online_retrains_on_the_schedule_on_rows_already_seen() -> None:
    segs = detect.segments(machine(2000, 3000), "online")
    assert [(s.start, s.stop) for s in segs] == [(0, 1440), (1440, 2880), (2880, 3000)]
    assert [s.window for s in segs] == [range(2000), range(3440), range(4880)]
    # each model learns only from rows before the first one it scores
    assert all(s.window.stop <= 2000 + s.start for s in segs)
    long = detect.segments(machine(20_000, 3000), "online")
    assert long[1].window == range(21_440 - 10_080, 21_440)


def test_columns_come_from_columns_txt_then_the_smd_names_then_numbers(tmp_path: Path) -> None:
    assert detect.column_names(tmp_path, 3) == ["m01", "m02", "m03"]
    smd = tmp_path / "smd"
    smd.mkdir()
    assert detect.column_names(smd, 38)[:2] == ["cpu_r", "load_1"]
    (smd / "columns.txt").write_text("a\nb\n")
    assert detect.column_names(smd, 2) == ["a", "b"]
    with pytest.raises(SystemExit, match="2 column names for 3 columns"):
        detect.column_names(smd, 3)


def test_flagged_is_the_share_of_normal_rows_over_the_threshold() -> None:
    scores = np.array([0.0, 2.0, 2.0, 0.0, 5.0])
    labels = np.array([False, False, False, False, True])
    figures = detect.detection(scores, np.full(5, 1.0), labels)
    assert figures.flagged == 0.5
    assert figures.label_free_f1 == pytest.approx(2 / 4)
