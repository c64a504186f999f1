"""The Numenta Anomaly Benchmark (NAB v1.1) scorer, reimplemented as NAB's sweeper computes it.

    .venv/bin/python bench/nabscore.py --data ../shared/data/nab/data
        [--windows WINDOWS.json] [--results OUT [--detector NAME ...]] [--reference REFDIR]

Scores the detectors found under OUT, in NAB's results layout
(OUT/DETECTOR/CATEGORY/DETECTOR_FILE.csv with `timestamp,value,anomaly_score,label`), and with
--reference those under REFDIR (REFDIR/DETECTOR/CATEGORY/FILE.csv with
`timestamp,anomaly_score`), on every file of the corpus (--windows, default DATA/../windows.json),
and prints a table: each detector's normalised score on the three profiles, at the one threshold
per profile that maximises its summed raw score over the corpus.

The rules (NAB's `Sweeper`, see /work/shared/data/README.md, section nab/):
* the first min(floor(0.15 n), 750) rows of a file are probationary: never scored or counted;
* every row has a sweep score: inside a window of width w rows ending at row r,
  σ(-(r - i + 1) / w) · TP / σ(-1); outside, after a window ending at r_prev of width w_prev,
  σ(|r_prev - i| / (w_prev - 1)) · FP, and -FP before any window; σ(x) = 2 / (1 + e^(5x)) - 1,
  and -1 for x > 3;
* at threshold t a scored row is a detection when its anomaly score is >= t; each window adds
  the best sweep score of its detections (its earliest), or -FN without one; each detection
  outside the windows adds its own (negative) sweep score;
* the threshold is chosen per profile, one for the corpus, among every distinct anomaly score
  (and one above them all, which detects nothing), to maximise the corpus score;
* normalised = 100 (S - S_null) / (S_perfect - S_null), S_null the score of a detector that
  never detects (-FN per window), S_perfect = TP per window.

bench/nab.py scores KIRI with this module; its functions are the API:
load_corpus, read_scores, read_results, score_file, score_corpus, optimise, normalised, report.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

import numpy as np

PROBATION_PERCENT = 0.15
PROBATION_CAP_ROWS = 5000  # NAB caps probation at 0.15 × 5000 = 750 rows
NULL_THRESHOLD = 1.1  # NAB's first candidate, above every score in [0, 1]: nothing detected


@dataclass(frozen=True)
class Profile:
    """An application profile: NAB's cost matrix."""

    name: str
    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("standard", 1.0, 0.11, 1.0),
        Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
        Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
    )
}


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """NAB's scaledSigmoid: 2 / (1 + exp(5 x)) - 1, and -1 where x > 3."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore"):
        value = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, value)


MAX_TP = float(scaled_sigmoid(np.array(-1.0)))  # σ(-1): the reward at a window's left edge


def probation_length(rows: int) -> int:
    """Rows at the start of a file that are not scored: min(floor(0.15 n), 750)."""
    return int(min(math.floor(PROBATION_PERCENT * rows), PROBATION_PERCENT * PROBATION_CAP_ROWS))


@dataclass(frozen=True)
class File:
    """One data file of the corpus: its rows' timestamps and its windows as row indices."""

    name: str  # CATEGORY/FILE.csv
    timestamps: tuple[datetime, ...]
    windows: tuple[tuple[int, int], ...]  # (left, right) row indices, both inclusive

    @property
    def rows(self) -> int:
        return len(self.timestamps)

    @property
    def probation(self) -> int:
        return probation_length(self.rows)

    @cached_property
    def window_of(self) -> np.ndarray:
        """Each row's window number in this file, -1 outside every window."""
        out = np.full(self.rows, -1)
        for k, (left, right) in enumerate(self.windows):
            out[left : right + 1] = k
        return out

    @cached_property
    def _unit_sweep(self) -> np.ndarray:
        """Each row's unweighted sweep score: σ of its position in, or past, a window."""
        i = np.arange(self.rows)
        win = self.window_of
        inside = win >= 0
        left = np.array([w[0] for w in self.windows] or [0])
        right = np.array([w[1] for w in self.windows] or [0])
        width = (right - left + 1).astype(float)
        # Inside: p = -(r - i + 1) / w for the row's own window.
        k = np.where(inside, win, 0)
        p = -(right[k] - i + 1) / width[k]
        # Outside: the last window that ended before the row, if any.
        prev = np.searchsorted(right, i, side="left") - 1 if self.windows else np.full_like(i, -1)
        kp = np.maximum(prev, 0)
        # (After a 1-row window NAB divides by zero; here d = inf, the full cost.)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.abs(right[kp] - i) / (width[kp] - 1.0)
        past = np.where(prev >= 0, scaled_sigmoid(d), -1.0)
        return np.where(inside, scaled_sigmoid(p), past)

    def sweep(self, profile: Profile) -> np.ndarray:
        """Each row's weighted sweep score under the profile, as NAB's calcSweepScore."""
        unit = self._unit_sweep
        return np.where(self.window_of >= 0, unit * profile.tp / MAX_TP, unit * profile.fp)

    @property
    def scored_windows(self) -> int:
        """Windows with at least one row past probation (the ones NAB scores)."""
        return sum(1 for _, right in self.windows if right >= self.probation)

    def labels(self) -> np.ndarray:
        """Each row's label, True inside a window (NAB's `label` column)."""
        return self.window_of >= 0


@dataclass(frozen=True)
class Corpus:
    """The files that are scored together, by name (CATEGORY/FILE.csv)."""

    files: dict[str, File] = field(default_factory=dict)

    def __iter__(self) -> Iterator[File]:
        return iter(self.files.values())

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, name: str) -> File:
        return self.files[name]

    def labels(self, name: str) -> np.ndarray:
        """The file's per-row labels: True inside a window."""
        return self.files[name].labels()

    @property
    def windows(self) -> int:
        return sum(len(f.windows) for f in self)


@dataclass(frozen=True)
class FileScore:
    """A file's raw NAB score at one threshold, and its rows counted past probation."""

    score: float
    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.tn + self.fp + self.fn


def parse_time(text: str) -> datetime:
    """A NAB timestamp, with or without a fractional part (windows carry `.000000`)."""
    return datetime.fromisoformat(text.strip())


def _read_columns(path: Path, *columns: str) -> list[list[str]]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} in {header}")
        at = [header.index(c) for c in columns]
        rows = list(reader)
    return [[r[j] for r in rows] for j in at]


def load_corpus(data_dir: Path, windows_json: Path, names: Sequence[str] | None = None) -> Corpus:
    """The corpus of windows_json (CATEGORY/FILE.csv -> [[start, end], ...]) over data_dir.

    With names, only those files."""
    windows = json.loads(Path(windows_json).read_text())
    timestamps = {}
    for name in sorted(windows) if names is None else names:
        if name not in windows:
            raise KeyError(f"{name} is not in {windows_json}")
        (stamps,) = _read_columns(Path(data_dir) / name, "timestamp")
        timestamps[name] = [parse_time(t) for t in stamps]
    return corpus_of(timestamps, windows)


def corpus_of(
    timestamps: Mapping[str, Sequence[datetime]], windows: Mapping[str, Sequence[Sequence[str]]]
) -> Corpus:
    """The corpus of these files' row times and label windows ([start, end] timestamps).

    Window edges are matched to rows by time, so `2014-04-10 07:15:00.000000` finds the row
    `2014-04-10 07:15:00`."""
    files = {}
    for name, stamps in timestamps.items():
        index: dict[datetime, int] = {}
        for i, t in enumerate(stamps):
            index.setdefault(t, i)  # NAB's timestamps.index(): the first such row
        rows = []
        for start, end in windows[name]:
            try:
                rows.append((index[parse_time(start)], index[parse_time(end)]))
            except KeyError as e:
                raise ValueError(f"{name}: window edge {e} is not a row") from None
        rows.sort()
        for (_, r), (left, _) in itertools.pairwise(rows):
            if left <= r:
                raise ValueError(f"{name}: windows overlap")
        files[name] = File(name, tuple(stamps), tuple(rows))
    return Corpus(files)


def read_scores(path: Path) -> np.ndarray:
    """The `anomaly_score` column of one detector's file, in either layout."""
    (values,) = _read_columns(Path(path), "anomaly_score")
    return np.array(values, dtype=float)


def results_path(results_dir: Path, detector: str, name: str) -> Path:
    """NAB's results layout: DIR/DETECTOR/CATEGORY/DETECTOR_FILE.csv."""
    category, file = name.split("/")
    return Path(results_dir) / detector / category / f"{detector}_{file}"


def read_results(results_dir: Path, detector: str, corpus: Corpus) -> dict[str, np.ndarray]:
    """A detector's anomaly scores for every file of the corpus, from NAB's results layout."""
    return {f.name: read_scores(results_path(results_dir, detector, f.name)) for f in corpus}


def read_reference(reference_dir: Path, detector: str, corpus: Corpus) -> dict[str, np.ndarray]:
    """A detector's anomaly scores from the reference layout: DIR/DETECTOR/CATEGORY/FILE.csv."""
    return {f.name: read_scores(Path(reference_dir) / detector / f.name) for f in corpus}


def _checked(file: File, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (file.rows,):
        raise ValueError(f"{file.name}: {scores.shape[0]} scores for {file.rows} rows")
    return scores


def score_file(file: File, scores: np.ndarray, threshold: float, profile: Profile) -> FileScore:
    """The file's raw score and row counts when rows scoring >= threshold are detections."""
    scores = _checked(file, scores)
    scored = np.arange(file.rows) >= file.probation
    detected = scored & (scores >= threshold)
    inside = file.window_of >= 0
    sweep = file.sweep(profile)
    total = float(sweep[detected & ~inside].sum())
    for k in range(len(file.windows)):
        rows = file.window_of == k
        if not (rows & scored).any():
            continue  # wholly probationary: NAB does not score the window
        hits = sweep[rows & detected]
        total += float(hits.max()) if hits.size else -profile.fn
    return FileScore(
        score=total,
        tp=int((detected & inside).sum()),
        tn=int((scored & ~detected & ~inside).sum()),
        fp=int((detected & ~inside).sum()),
        fn=int((scored & ~detected & inside).sum()),
    )


def score_corpus(
    corpus: Corpus, scores_by_file: Mapping[str, np.ndarray], threshold: float, profile: Profile
) -> dict[str, FileScore]:
    """score_file for every file of the corpus, at one threshold."""
    return {f.name: score_file(f, scores_by_file[f.name], threshold, profile) for f in corpus}


def sweep_thresholds(
    corpus: Corpus, scores_by_file: Mapping[str, np.ndarray], profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate threshold, descending, and the corpus score at each (NAB's sweep).

    The first candidate is above every score (nothing detected, NAB's 1.1); then each distinct
    anomaly score of the scored rows. One sort of all rows, then running sums: O(N log N).
    """
    anomaly, sweep, window = [], [], []
    first_window = 0
    null = 0.0
    for f in corpus:
        keep = slice(f.probation, None)
        anomaly.append(_checked(f, scores_by_file[f.name])[keep])
        sweep.append(f.sweep(profile)[keep])
        win = f.window_of[keep]
        window.append(np.where(win >= 0, win + first_window, -1))
        first_window += len(f.windows)
        null -= profile.fn * f.scored_windows
    a = np.concatenate(anomaly) if anomaly else np.zeros(0)
    s = np.concatenate(sweep) if sweep else np.zeros(0)
    g = np.concatenate(window) if window else np.zeros(0, dtype=int)

    order = np.argsort(-a, kind="stable")
    a, s, g = a[order], s[order], g[order]
    # False positives: each adds its own sweep score.
    gain = np.where(g < 0, s, 0.0)
    # Windows: a detection adds what it raises its window's best so far (from -FN).
    for k in np.unique(g[g >= 0]):
        at = np.flatnonzero(g == k)
        best = np.maximum.accumulate(np.maximum(s[at], -profile.fn))
        gain[at] = np.diff(best, prepend=-profile.fn)
    running = null + np.cumsum(gain)
    # A threshold equal to a distinct score detects every row down to that score's last one.
    last = np.flatnonzero(np.append(a[1:] != a[:-1], True)) if a.size else np.zeros(0, int)
    top = max(NULL_THRESHOLD, float(np.nextafter(a[0], np.inf))) if a.size else NULL_THRESHOLD
    thresholds = np.concatenate([[top], a[last]])
    totals = np.concatenate([[null], running[last]])
    return thresholds, totals


def optimise(
    corpus: Corpus, scores_by_file: Mapping[str, np.ndarray], profile: Profile
) -> tuple[float, float]:
    """The threshold maximising the corpus score, and that score; ties go to the highest."""
    thresholds, totals = sweep_thresholds(corpus, scores_by_file, profile)
    best = int(np.argmax(totals))
    return float(thresholds[best]), float(totals[best])


def normalised(total: float, corpus: Corpus, profile: Profile) -> float:
    """100 (S - S_null) / (S_perfect - S_null): 0 never detecting, 100 perfect."""
    null = -profile.fn * sum(f.scored_windows for f in corpus)
    perfect = profile.tp * corpus.windows
    return 100.0 * (total - null) / (perfect - null)


def report(corpus: Corpus, detectors: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """A Markdown table: per detector, the normalised score and threshold on each profile."""
    header = "| detector | " + " | ".join(f"{p} | threshold" for p in PROFILES) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(PROFILES)]
    for name, scores in detectors.items():
        cells = []
        for profile in PROFILES.values():
            threshold, total = optimise(corpus, scores, profile)
            cells.append(f"{normalised(total, corpus, profile):.1f} | {threshold:.12g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="NAB v1.1 scores of detectors' results.")
    parser.add_argument("--data", type=Path, required=True, help="NAB's data/ folder")
    parser.add_argument("--windows", type=Path, help="label windows (default DATA/../windows.json)")
    parser.add_argument("--results", type=Path, help="NAB results layout: OUT/DETECTOR/...")
    parser.add_argument("--detector", nargs="+", help="only these detectors under --results")
    parser.add_argument("--reference", type=Path, help="reference layout: REFDIR/DETECTOR/...")
    args = parser.parse_args(argv)
    if args.results is None and args.reference is None:
        parser.error("nothing to score: give --results and/or --reference")
    corpus = load_corpus(args.data, args.windows or args.data.parent / "windows.json")
    detectors: dict[str, Mapping[str, np.ndarray]] = {}
    if args.results is not None:
        names = args.detector or sorted(p.name for p in args.results.iterdir() if p.is_dir())
        for name in names:
            detectors[name] = read_results(args.results, name, corpus)
    if args.reference is not None:
        for name in sorted(p.name for p in args.reference.iterdir() if p.is_dir()):
            detectors.setdefault(name, read_reference(args.reference, name, corpus))
    print(f"NAB v1.1 normalised scores, {len(corpus)} files, {corpus.windows} windows")
    print("\n".join(report(corpus, detectors)))


if __name__ == "__main__":
    main(sys.argv[1:])
