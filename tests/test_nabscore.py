"""bench/nabscore.py against NAB's own results: per-file scores and counts, and the optimiser."""

from __future__ import annotations

import csv
import json
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "nab"  # from ../shared/data/nab: make_nab_reference.py
sys.path.insert(0, str(ROOT / "bench"))

import nabscore  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

DETECTORS = ("numenta", "windowedGaussian")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def corpus(reference: dict[str, np.ndarray]) -> nabscore.Corpus:
    windows = json.loads((FIXTURE / "windows.json").read_text())
    stamps = {
        str(name): [datetime.fromtimestamp(int(t), UTC).replace(tzinfo=None) for t in ts]
        for name, ts in zip(reference["names"], times(reference), strict=True)
    }
    return nabscore.corpus_of(stamps, windows)


def times(reference: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [reference[f"t{k}"] for k in range(len(reference["names"]))]


@pytest.fixture(scope="module")
def detectors(
    corpus: nabscore.Corpus, reference: dict[str, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """The reference detectors' scores, and the null detector's (it never detects)."""
    names = [str(n) for n in reference["names"]]
    out = {d: {n: reference[f"{d}{k}"] for k, n in enumerate(names)} for d in DETECTORS}
    out["null"] = {f.name: np.zeros(f.rows) for f in corpus}
    return out


@pytest.fixture(scope="module")
def expected() -> list[dict[str, str]]:
    with (FIXTURE / "scores.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_corpus(corpus: nabscore.Corpus) -> None:
    assert len(corpus) == 28
    assert corpus.windows == 36


def test_sweep_scores_by_hand() -> None:
    """100 rows (15 probationary), one window on rows 40..49 (w = 10)."""
    start = datetime(2020, 1, 1)
    stamps = tuple(start + timedelta(minutes=5 * i) for i in range(100))
    f = nabscore.File("x/y.csv", stamps, ((40, 49),))
    p = nabscore.PROFILES["standard"]
    sweep = f.sweep(p)

    def sigma(x: float) -> float:
        return -1.0 if x > 3.0 else 2 / (1 + math.exp(5 * x)) - 1

    assert f.probation == 15
    assert sweep[39] == pytest.approx(-0.11)  # before any window
    assert sweep[40] == pytest.approx(1.0)  # left edge: the best reward
    assert sweep[49] == pytest.approx(sigma(-0.1) / sigma(-1.0))
    assert sweep[50] == pytest.approx(0.11 * sigma(1 / 9))
    assert sweep[76] == 0.11 * sigma(3.0) != -0.11  # 27 rows past: d = 3, not cut off yet
    assert sweep[79] == -0.11  # 30 rows past: d = 3.33 > 3, the full cost exactly
    assert sweep[99] == -0.11
    scores = np.zeros(100)
    scores[[10, 45, 47, 60]] = 1.0  # 10 is probationary; 45 is the window's earliest detection
    got = nabscore.score_file(f, scores, 0.5, p)
    assert got.score == pytest.approx(sigma(-0.5) / sigma(-1.0) + 0.11 * sigma(11 / 9))
    assert (got.tp, got.tn, got.fp, got.fn) == (2, 74, 1, 8)
    assert nabscore.score_file(f, np.zeros(100), 0.5, p).score == -1.0


@pytest.mark.parametrize("detector", [*DETECTORS, "null"])
def test_files_match_nab(
    detector: str,
    corpus: nabscore.Corpus,
    detectors: dict[str, dict[str, np.ndarray]],
    expected: list[dict[str, str]],
) -> None:
    """Every file and profile of scores.csv at its threshold: the raw score and the four counts."""
    rows = [r for r in expected if r["Detector"] == detector and r["File"] != "Totals"]
    assert len(rows) == 3 * 28
    wrong = []
    for r in rows:
        profile = nabscore.PROFILES[r["Profile"]]
        f = corpus[r["File"]]
        got = nabscore.score_file(f, detectors[detector][f.name], float(r["Threshold"]), profile)
        want = [int(r[k]) for k in ("TP", "TN", "FP", "FN", "Total_Count")]
        counts = [got.tp, got.tn, got.fp, got.fn, got.total]
        if abs(got.score - float(r["Score"])) > 0.01 or counts != want:
            wrong.append(f"{r['Profile']} {f.name}: {got} != {r['Score']} {want}")
    assert not wrong, "\n".join(wrong)


def test_totals_and_normalised(
    corpus: nabscore.Corpus,
    detectors: dict[str, dict[str, np.ndarray]],
    expected: list[dict[str, str]],
) -> None:
    """The Totals rows, and the README's 72.3 and 26.5 at scores.csv's thresholds."""
    at_nab: dict[tuple[str, str], float] = {}
    for r in expected:
        if r["File"] != "Totals":
            continue
        profile = nabscore.PROFILES[r["Profile"]]
        scores = detectors[r["Detector"]]
        got = nabscore.score_corpus(corpus, scores, float(r["Threshold"]), profile)
        total = sum(s.score for s in got.values())
        assert total == pytest.approx(float(r["Score"]), abs=0.01), r
        at_nab[r["Detector"], r["Profile"]] = nabscore.normalised(total, corpus, profile)
    assert at_nab["numenta", "standard"] == pytest.approx(72.3, abs=0.1)
    assert at_nab["windowedGaussian", "standard"] == pytest.approx(26.5, abs=0.1)
    assert at_nab["null", "standard"] == 0.0


def test_optimiser(
    corpus: nabscore.Corpus,
    detectors: dict[str, dict[str, np.ndarray]],
    expected: list[dict[str, str]],
) -> None:
    """One threshold per profile over the 28 files: at least as good as NAB's (chosen on 58)."""
    standard = nabscore.PROFILES["standard"]
    for name, want in (("numenta", 72.3), ("windowedGaussian", 26.5)):
        _, total = nabscore.optimise(corpus, detectors[name], standard)
        assert nabscore.normalised(total, corpus, standard) == pytest.approx(want, abs=0.1)
    for r in expected:
        if r["File"] == "Totals":
            _, total = nabscore.optimise(
                corpus, detectors[r["Detector"]], nabscore.PROFILES[r["Profile"]]
            )
            assert total >= float(r["Score"]) - 1e-9, r
    threshold, total = nabscore.optimise(corpus, detectors["null"], standard)
    assert (threshold, total) == (1.1, -36.0)


def test_sweep_agrees_with_scoring_each_file(
    corpus: nabscore.Corpus, detectors: dict[str, dict[str, np.ndarray]]
) -> None:
    """The incremental sweep's corpus score at a candidate = the sum of score_file there."""
    for name in DETECTORS:
        for profile in nabscore.PROFILES.values():
            thresholds, totals = nabscore.sweep_thresholds(corpus, detectors[name], profile)
            assert len(set(thresholds.tolist())) == len(thresholds)
            picks = {0, 1, len(thresholds) - 1, int(np.argmax(totals))}
            picks |= set(np.linspace(0, len(thresholds) - 1, 6).astype(int).tolist())
            for k in sorted(picks):
                got = nabscore.score_corpus(corpus, detectors[name], thresholds[k], profile)
                direct = sum(s.score for s in got.values())
                assert totals[k] == pytest.approx(direct, rel=1e-12, abs=1e-9), (name, profile, k)


def test_results_layout_and_command_line(
    tmp_path: Path,
    corpus: nabscore.Corpus,
    detectors: dict[str, dict[str, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """NAB's results layout round-trips, and the command line prints the table."""
    scores = detectors["numenta"]
    for f in corpus:
        path = nabscore.results_path(tmp_path, "copy", f.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as out:
            w = csv.writer(out)
            w.writerow(["timestamp", "value", "anomaly_score", "label"])
            for t, a, label in zip(f.timestamps, scores[f.name], f.labels(), strict=True):
                w.writerow([t.strftime("%Y-%m-%d %H:%M:%S"), 0.0, repr(float(a)), int(label)])
    back = nabscore.read_results(tmp_path, "copy", corpus)
    assert all(np.array_equal(back[n], scores[n]) for n in scores)
    data, ref = tmp_path / "data", tmp_path / "reference"
    for f in corpus:
        for path, rows in (
            (data / f.name, [(t, 0.0) for t in f.timestamps]),
            (ref / "numenta" / f.name, list(zip(f.timestamps, scores[f.name], strict=True))),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as out:
                w = csv.writer(out)
                w.writerow(["timestamp", "value" if path.is_relative_to(data) else "anomaly_score"])
                w.writerows([t.strftime("%Y-%m-%d %H:%M:%S"), repr(float(x))] for t, x in rows)
    nabscore.main(
        [
            "--data",
            str(data),
            "--windows",
            str(FIXTURE / "windows.json"),
            "--results",
            str(tmp_path),
            "--detector",
            "copy",
            "--reference",
            str(ref),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    table = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in lines[3:]}
    assert set(table) == {"copy", "numenta"}
    assert table["copy"] == table["numenta"]
    assert float(table["numenta"][0]) == pytest.approx(72.3, abs=0.05)
