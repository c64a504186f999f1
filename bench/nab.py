"""KIRI as a stream detector on the Numenta Anomaly Benchmark, scored by the project's NAB scorer.

    bin/bench nab --data ../shared/data/nab/data [--results OUT] [--score] [--files N]

Each DATA/CATEGORY/FILE.csv (`timestamp,value`) is a stream of one-field observations (atom
"nab", host = the file, the row's time as ts). KIRI reads it in order and learns only from rows it
has already seen, as kiri-atom does live:
* its first model is trained with `kiri train` on the probationary rows (the first
  min(floor(0.15 n), 750), which NAB does not score);
* it then scores each row with Detector.score and retrains on kiri.atoms.retraining's schedule, the
  one kiri-atom uses: every 1,440 rows, on the most recent 10,080 rows seen;
* kiri-decide's policy, with its default options, decides on each score as it would live; a
  row's anomaly score is the decision's rarity (how seldom this stream has been as surprising
  before) where the policy alerts, and 0 elsewhere: NAB counts every row above its threshold
  as a detection, and KIRI tells people once per incident, not on every unusual row.

It writes NAB's results layout, OUT/kiri/CATEGORY/kiri_FILE.csv with
`timestamp,value,anomaly_score,label` (label 1 inside a labelled window). With --score it scores
them with bench/nabscore.py on the three profiles, beside the reference detectors in
DATA/../reference on the same files.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atom_runs
import nabscore
from atom_runs import ROOT, Training

from kiri.atoms.retraining import DEFAULT as SCHEDULE
from kiri.decide import stage as decide
from kiri.decide.stage import policy_of
from kiri.wire.records import Score

ATOM = "nab"
DETECTOR = "kiri"


@dataclass
class Series:
    name: str  # CATEGORY/FILE.csv
    timestamps: list[str]
    values: np.ndarray

    @property
    def probation(self) -> int:
        return min(math.floor(0.15 * len(self.values)), 750)

    @property
    def host(self) -> str:
        return self.name.removesuffix(".csv").replace("/", ".")


def read_series(data: Path, name: str) -> Series:
    with (data / name).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return Series(name, [r["timestamp"] for r in rows], np.array([float(r["value"]) for r in rows]))


def series_names(data: Path, limit: int = 0) -> list[str]:
    """Every CATEGORY/FILE.csv under data; with limit, that many, spread over the categories."""
    names = sorted(str(p.relative_to(data)) for p in data.glob("*/*.csv"))
    if not limit:
        return names
    by_category: dict[str, list[str]] = {}
    for n in names:
        by_category.setdefault(n.split("/")[0], []).append(n)
    picked: list[str] = []
    while len(picked) < min(limit, len(names)):
        for group in by_category.values():
            if group and len(picked) < limit:
                picked.append(group.pop(0))
    return sorted(picked)


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).replace(tzinfo=UTC).timestamp()


def anomaly_scores(scores: list[Score]) -> np.ndarray:
    """kiri-decide's default policy over one stream's scores: each alert's rarity, else 0."""
    policy = policy_of(decide.build_parser().parse_args([]))
    out = np.zeros(len(scores))
    for i, s in enumerate(scores):
        decisions = policy.decide(s)
        out[i] = max((d.rarity for d in decisions if d.action == "alert"), default=0.0)
    return out


def run(data: Path, names: list[str], workers: int, extra: list[str]) -> dict[str, np.ndarray]:
    """Each series' anomaly scores, KIRI reading it as a stream (0 on the probationary rows)."""
    all_series = [read_series(data, n) for n in names]
    with tempfile.TemporaryDirectory() as tmp:
        jobs, plans = [], {}
        for k, s in enumerate(all_series):
            obs = atom_runs.observations(
                s.values[:, None], ["value"], ATOM, s.host, [epoch(t) for t in s.timestamps]
            )
            points = SCHEDULE.plan(s.probation, len(obs))
            plans[s.name] = (obs, points)
            for j, seen in enumerate(points):
                window = SCHEDULE.window_of(seen)
                out = Path(tmp) / f"{k}-{j}" / "weights.json"
                out.parent.mkdir()
                jobs.append(Training(ATOM, obs[window.start : window.stop], out, extra))
        started = time.perf_counter()
        atom_runs.train_all(jobs, workers)
        print(
            f"nab: {len(jobs)} trainings in {time.perf_counter() - started:.0f} s", file=sys.stderr
        )
        results: dict[str, np.ndarray] = {}
        job = iter(jobs)
        for s in all_series:
            obs, points = plans[s.name]
            records: list[Score] = []
            for seen, until in zip(points, [*points[1:], len(obs)], strict=True):
                records += atom_runs.score_records(next(job).out, obs[seen:until])[0]
            results[s.name] = np.concatenate([np.zeros(points[0]), anomaly_scores(records)])
    return results


def write_results(
    out: Path, data: Path, results: dict[str, np.ndarray], corpus: nabscore.Corpus
) -> None:
    """NAB's results layout: OUT/kiri/CATEGORY/kiri_FILE.csv."""
    for name, scores in results.items():
        s = read_series(data, name)
        labels = corpus.labels(name)
        category, file = name.split("/")
        path = out / DETECTOR / category / f"{DETECTOR}_{file}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp", "value", "anomaly_score", "label"])
            for t, v, a, label in zip(s.timestamps, s.values, scores, labels, strict=True):
                w.writerow([t, repr(float(v)), f"{a:.6f}", int(label)])


def main() -> None:
    parser = argparse.ArgumentParser(description="KIRI as a stream detector on NAB data.")
    parser.add_argument("--data", type=Path, required=True, help="NAB's data/ folder")
    parser.add_argument(
        "--windows", type=Path, help="the label windows (default: DATA/../windows.json)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench" / "results" / "nab",
        help="where to write NAB's results layout (default: bench/results/nab)",
    )
    parser.add_argument("--score", action="store_true", help="score the results, print a table")
    parser.add_argument("--files", type=int, default=0, help="only N files, across categories")
    parser.add_argument("--workers", type=int, default=2, help="trainings run side by side")
    parser.add_argument("--kiri-args", default="", help="appended to `kiri train`")
    args = parser.parse_args()
    windows = args.windows or args.data.parent / "windows.json"
    names = series_names(args.data, args.files)
    corpus = nabscore.load_corpus(args.data, windows, names)
    results = run(args.data, names, args.workers, args.kiri_args.split())
    write_results(args.results, args.data, results, corpus)
    print(f"results written under {args.results / DETECTOR}", file=sys.stderr)
    if args.score:
        print("\n".join(score_table(corpus, results, args.data.parent / "reference")))


def score_table(
    corpus: nabscore.Corpus, results: dict[str, np.ndarray], reference: Path
) -> list[str]:
    """KIRI beside the reference detectors, normalised NAB scores on the same files."""
    detectors = {DETECTOR: results}
    for name in sorted(p.name for p in reference.iterdir() if p.is_dir()):
        detectors[name] = {f: nabscore.read_scores(reference / name / f) for f in results}
    return nabscore.report(corpus, detectors)


if __name__ == "__main__":
    main()
