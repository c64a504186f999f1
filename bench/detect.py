"""KIRI beside classical detectors on server metrics and NAB, by the protocols of the data README.

    bin/bench detect --suite dev [--quick]
    bin/bench detect --data DIR [--protocol static|online|both] [--machines NAME ...]
        [--kiri-args "--steps 500"] [--workers 2] [--out FILE]

`--suite dev` runs every development set beside this checkout (../shared/data): SMD and ASD on
both protocols, and NAB through bench/nab.py; it prints one table per suite and writes
bench/results/detection.md. `--quick` runs one machine per dataset and 6 NAB files.
`--data DIR` runs one folder of machines, any folder of the same layout: NAME.npz with arrays
`train`, `test` and `test_label`, and NAME.interpretation.txt with the operators' culprits.
Columns are named by a `columns.txt` beside the files (one name a line), or for a folder named
smd by the data README's SMD names, or else m01, m02, ... The names only label culprits: every
dataset runs the same default configuration, and no code path knows which dataset it is on.

Protocols, for KIRI and for every baseline alike:
* static: fit on train, score every test row;
* online: start from the static model, score the test rows in time order, and retrain on
  kiri.atoms.retraining's schedule (the one kiri-atom uses: every 1,440 rows, on the most recent
  10,080 rows already seen, train rows included), never on labels. Each model scores the rows up
  to the next retrain, with its own label-free threshold.

KIRI runs through its real code path (bench/atom_runs.py): every row is an `obs` record of atom
"bench" (host = the machine, ts = row index x 60 s, test rows continuing after train), `kiri
train bench --from ROWS --out WEIGHTS` trains it as a subprocess, and Detector.score, the code
kiri-atom runs, scores it. Its label-free threshold is the atom's own, Score.threshold.
Baselines: PCA (k = 5, squared reconstruction error), IsolationForest (random_state = 0,
-score_samples), 1-NN (distance to the nearest training row); their label-free threshold is the
max of their own scores on their training rows (for 1-NN, each row's distance to its nearest
other row), no labels.

Figures, point-wise, averaged over machines and then shown per machine:
* label-free F1: a row is flagged when its score is above the label-free threshold;
* best F1 over all thresholds, and AUPRC (average precision): the ceiling;
* PA-F1, a reference only: point-adjusted F1 at its best threshold;
* train s: wall time of one fit (for KIRI, the whole `kiri train` process); score rows/s (static):
  test rows over the slowest of KIRI's --workers scoring processes;
* culprit hit@100% / hit@150%: for each operator-named segment, the share of the named columns
  among each row's top n (ceil(1.5 n)) columns by the method's ranking (KIRI: the order
  decisions name culprits in, kiri.wire.patterns.culprit_order; reference: |z| against the
  training rows);
* flagged: the share of normal (unlabelled) test rows above the label-free threshold.
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atom_runs
from atom_runs import ROOT, Training

from kiri.atoms.retraining import DEFAULT as SCHEDULE
from kiri.wire.patterns import culprit_order

# The data README's names for the SMD columns, in order.
SMD_COLUMNS = """
cpu_r load_1 load_5 load_15 mem_shmem mem_u mem_u_e total_mem disk_q disk_r disk_rb disk_svc
disk_u disk_w disk_wa disk_wb si so eth1_fi eth1_fo eth1_pi eth1_po tcp_tw tcp_use active_opens
curr_estab in_errs in_segs listen_overflows out_rsts out_segs passive_opens retransegs
tcp_timeouts udp_in_dg udp_out_dg udp_rcv_buf_errs udp_snd_buf_errs
"""
ATOM = "bench"
STEP_SECONDS = 60
PCA_K = 5
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
PROTOCOLS = ("static", "online")
Z_REF = "z-score vs train (ref)"


@dataclass
class Figures:
    """One method's figures on one machine (or their mean); None where not measured."""

    label_free_f1: float | None = None
    best_f1: float | None = None
    auprc: float | None = None
    pa_f1: float | None = None
    train_s: float | None = None
    rows_per_s: float | None = None
    hit100: float | None = None
    hit150: float | None = None
    flagged: float | None = None
    atom_mb: float | None = None  # kiri-atom's peak RSS scoring the test rows as a stream


HEADERS = (
    "label-free F1", "best F1", "AUPRC", "PA-F1 (ref)", "train s", "score rows/s",
    "culprit hit@100%", "hit@150%", "flagged normal", "atom RSS MB",
)  # fmt: skip
FORMATS = (
    "{:.3f}",
    "{:.3f}",
    "{:.3f}",
    "{:.3f}",
    "{:.1f}",
    "{:,.0f}",
    "{:.3f}",
    "{:.3f}",
    "{:.2%}",
    "{:.0f}",
)


@dataclass
class Machine:
    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    culprits: list[tuple[range, list[int]]]  # test rows, 0-based columns named by operators

    @property
    def rows(self) -> np.ndarray:
        """Train then test rows: the stream the online protocol reads."""
        return np.concatenate([self.train, self.test])


def column_names(folder: Path, width: int) -> list[str]:
    listed = folder / "columns.txt"
    if listed.exists():
        names = listed.read_text().split()
    elif folder.name == "smd":
        names = SMD_COLUMNS.split()
    else:
        names = [f"m{i + 1:02d}" for i in range(width)]
    if len(names) != width:
        raise SystemExit(f"{folder}: {len(names)} column names for {width} columns")
    return names


def load_machine(path: Path) -> Machine:
    arrays = np.load(path)
    culprits = []
    interpretation = path.with_suffix(".interpretation.txt")
    for line in interpretation.read_text().split() if interpretation.exists() else []:
        rows, _, columns = line.partition(":")
        start, end = map(int, rows.split("-"))
        culprits.append((range(start, end), [int(d) - 1 for d in columns.split(",")]))
    return Machine(
        path.stem, arrays["train"], arrays["test"], arrays["test_label"].astype(bool), culprits
    )


# --- figures -----------------------------------------------------------------------------------


def f1(flagged: np.ndarray, labels: np.ndarray) -> float:
    tp = np.sum(flagged & labels)
    return float(2 * tp / (flagged.sum() + labels.sum())) if tp else 0.0


def best_f1(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float:
    """The best F1 over all thresholds, each item counting `weights` rows."""
    order = np.argsort(-scores, kind="stable")
    s, pos, w = scores[order], positive[order], weights[order]
    tp, flagged = np.cumsum(w * pos), np.cumsum(w)
    cut = np.r_[s[1:] != s[:-1], True]  # a threshold between each pair of distinct scores
    return float(np.max(2 * tp[cut] / (flagged[cut] + np.sum(w * pos))))


def point_adjusted_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best F1 when each labelled segment is flagged whole once any of its rows is: one item
    per segment, scored by its highest row and weighing its length, and one per normal row."""
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(np.int8), 0]))
    starts, ends = edges[::2], edges[1::2]
    seg_scores = np.array([scores[a:b].max() for a, b in zip(starts, ends, strict=True)])
    items = np.r_[seg_scores, scores[~labels]]
    positive = np.r_[np.ones(len(starts), bool), np.zeros((~labels).sum(), bool)]
    weights = np.r_[ends - starts, np.ones((~labels).sum())]
    return best_f1(items, positive, weights)


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score  # type: ignore[import-untyped]

    return float(average_precision_score(labels, scores))


def detection(scores: np.ndarray, threshold: np.ndarray, labels: np.ndarray) -> Figures:
    flagged = scores > threshold
    return Figures(
        label_free_f1=f1(flagged, labels),
        best_f1=best_f1(scores, labels, np.ones(len(scores))),
        auprc=auprc(scores, labels),
        pa_f1=point_adjusted_f1(scores, labels),
        flagged=float(flagged[~labels].mean()),
    )


def hit_rate(
    column_scores: np.ndarray, culprits: list[tuple[range, list[int]]], factor: float
) -> float:
    """The mean share of named columns among each row's top ceil(factor x n) columns; tied
    columns share the places left evenly."""
    shares = []
    for rows, named in culprits:
        s = column_scores[rows.start : rows.stop]
        k = min(math.ceil(factor * len(named)), s.shape[1])
        kth = np.sort(s, axis=1)[:, -k, None]
        above, tied = s > kth, s == kth
        is_named = np.isin(np.arange(s.shape[1]), named)
        share_left = (k - above.sum(1)) / tied.sum(1)
        hits = (above & is_named).sum(1) + share_left * (tied & is_named).sum(1)
        shares.append(float(np.mean(hits / len(named))))
    return float(np.mean(shares)) if shares else float("nan")


def with_hits(figures: Figures, column_scores: np.ndarray, m: Machine) -> Figures:
    figures.hit100 = hit_rate(column_scores, m.culprits, 1.0)
    figures.hit150 = hit_rate(column_scores, m.culprits, 1.5)
    return figures


# --- the protocols -----------------------------------------------------------------------------


@dataclass
class Segment:
    """Test rows [start, stop) scored by the model trained on stream rows `window`."""

    start: int
    stop: int
    window: range


def segments(m: Machine, protocol: str) -> list[Segment]:
    """Static: one model from train for every test row. Online: the retraining schedule."""
    n_train, total = len(m.train), len(m.train) + len(m.test)
    if protocol == "static":
        return [Segment(0, len(m.test), range(n_train))]
    points = SCHEDULE.plan(n_train, total)
    ends = [*points[1:], total]
    windows = [range(n_train), *(SCHEDULE.window_of(p) for p in points[1:])]
    return [
        Segment(p - n_train, e - n_train, w) for p, e, w in zip(points, ends, windows, strict=True)
    ]


# --- KIRI --------------------------------------------------------------------------------------


def stream_obs(m: Machine, columns: list[str]) -> list[atom_runs.Obs]:
    rows = m.rows
    return atom_runs.observations(
        rows, columns, ATOM, m.name, [i * STEP_SECONDS for i in range(len(rows))]
    )


class Kiri:
    """KIRI on the machines of one dataset: every training first, side by side, then scoring."""

    def __init__(self, columns: list[str], extra: list[str], workers: int, home: Path) -> None:
        self.columns, self.extra, self.workers, self.home = columns, extra, workers, home

    def run(
        self, machines: list[Machine], protocols: Sequence[str]
    ) -> dict[str, dict[str, Figures]]:
        """Figures per machine and protocol."""
        plans = {(m.name, p): segments(m, p) for m in machines for p in protocols}
        weights: dict[tuple[str, range], Path] = {}
        jobs: list[Training] = []
        seconds_of: dict[Path, float] = {}
        streams = {m.name: stream_obs(m, self.columns) for m in machines}
        for (name, _), plan in plans.items():
            for seg in plan:
                if (name, seg.window) not in weights:  # online starts from the static model
                    out = self.home / f"{name}-{seg.window.start}-{seg.window.stop}" / "w.json"
                    out.parent.mkdir(parents=True)
                    weights[name, seg.window] = out
                    obs = streams[name][seg.window.start : seg.window.stop]
                    jobs.append(Training(ATOM, obs, out, self.extra))
        started = time.perf_counter()
        for job, s in zip(jobs, atom_runs.train_all(jobs, self.workers), strict=True):
            seconds_of[job.out] = s
        print(
            f"  KIRI: {len(jobs)} trainings in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        results: dict[str, dict[str, Figures]] = {}
        for m in machines:
            first = len(m.train)
            obs = streams[m.name]
            for protocol in protocols:
                plan = plans[m.name, protocol]
                if protocol == "static":  # in --workers shares, to time the scoring
                    w = weights[m.name, plan[0].window]
                    shares = np.array_split(np.arange(len(m.test)), self.workers)
                    jobs_ = [(w, obs[first + int(s[0]) : first + int(s[-1]) + 1]) for s in shares]
                else:
                    jobs_ = [
                        (weights[m.name, seg.window], obs[first + seg.start : first + seg.stop])
                        for seg in plan
                    ]
                scored = atom_runs.score_all(jobs_, self.workers)
                surprise = np.concatenate([s.surprise for s in scored])
                threshold = np.concatenate([s.threshold for s in scored])
                z = np.concatenate([s.z for s in scored])
                spread = np.concatenate([s.spread for s in scored])
                figures = detection(surprise, threshold, m.labels)
                columns = [self.columns.index(f) for f in scored[0].fields]
                with_hits(figures, culprit_ranks(z, spread, columns, m.test.shape), m)
                figures.train_s = float(
                    np.mean([seconds_of[weights[m.name, seg.window]] for seg in plan])
                )
                if protocol == "static":
                    figures.rows_per_s = len(m.test) / max(s.seconds for s in scored)
                    figures.atom_mb = atom_runs.stream_peak_mb(w, obs[first:])
                results.setdefault(m.name, {})[protocol] = figures
        return results


def culprit_ranks(
    z: np.ndarray, spread: np.ndarray, columns: list[int], shape: tuple[int, ...]
) -> np.ndarray:
    """Per row, each column's place in the order decisions name culprits in (culprit_order):
    higher is likelier, columns the atom does not score lowest."""
    ranks = np.full(shape, -1.0)
    n = len(columns)
    for row, (zs, ss) in enumerate(zip(z.tolist(), spread.tolist(), strict=True)):
        for place, k in enumerate(culprit_order(zs, ss)):
            ranks[row, columns[k]] = n - place
    return ranks


# --- baselines ---------------------------------------------------------------------------------

# Each fits on training rows and returns its scoring function and its scores on those rows.
Fit = Callable[[np.ndarray], tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]]


def pca(train: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    from sklearn.decomposition import PCA  # type: ignore[import-untyped]

    model = PCA(n_components=PCA_K).fit(train)

    def score(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.sum((x - model.inverse_transform(model.transform(x))) ** 2, axis=1))

    return score, score(train)


def isolation_forest(train: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped]

    model = IsolationForest(random_state=0).fit(train)
    return (lambda x: -model.score_samples(x)), -model.score_samples(train)


def nearest_neighbour(train: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    from sklearn.neighbors import NearestNeighbors  # type: ignore[import-untyped]

    model = NearestNeighbors(n_neighbors=1).fit(train)
    on_train = model.kneighbors()[0][:, 0]  # with no query, each row's nearest *other* row
    return (lambda x: model.kneighbors(x)[0][:, 0]), on_train


BASELINES: dict[str, Fit] = {
    "PCA-k5": pca,
    "IsolationForest": isolation_forest,
    "1-NN": nearest_neighbour,
}


def baseline(fit: Fit, m: Machine, protocol: str) -> Figures:
    rows = m.rows
    scores, thresholds, fit_s, score_s = [], [], [], 0.0
    for seg in segments(m, protocol):
        t = time.perf_counter()
        score, on_train = fit(rows[seg.window.start : seg.window.stop])
        fit_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        scores.append(score(m.test[seg.start : seg.stop]))
        score_s += time.perf_counter() - t
        thresholds.append(np.full(seg.stop - seg.start, float(on_train.max())))
    figures = detection(np.concatenate(scores), np.concatenate(thresholds), m.labels)
    figures.train_s = float(np.mean(fit_s))
    if protocol == "static":
        figures.rows_per_s = len(m.test) / score_s
    return figures


def z_reference(m: Machine, protocol: str) -> Figures:
    """Culprit hit rate of ranking columns by |z| against each model's training rows."""
    rows, parts = m.rows, []
    for seg in segments(m, protocol):
        window = rows[seg.window.start : seg.window.stop]
        mean, std = window.mean(0), np.maximum(window.std(0), 1e-6)
        parts.append(np.abs(m.test[seg.start : seg.stop] - mean) / std)
    return with_hits(Figures(), np.concatenate(parts), m)


# --- report ------------------------------------------------------------------------------------


def mean_figures(per_machine: list[Figures]) -> Figures:
    means: dict[str, float | None] = {}
    for f in fields(Figures):
        values = [getattr(x, f.name) for x in per_machine]
        means[f.name] = None if None in values else float(np.nanmean(values))
    return Figures(**means)


def table(rows: list[tuple[str, Figures]], first: str) -> list[str]:
    """A Markdown table, padded so that it also reads as plain text."""
    body = [
        [name]
        + [
            fmt.format(v) if v is not None and not math.isnan(v) else "-"
            for fmt, v in zip(FORMATS, astuple(fig), strict=True)
        ]
        for name, fig in rows
    ]
    head = [first, *HEADERS]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return [line(head), rule, *map(line, body)]


def git_state() -> str:
    """The commit, and whether kiri/ differs from it: the figures depend on the working tree."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "kiri", "bench")
    return f"commit {git('rev-parse', '--short', 'HEAD')}" + (
        " with uncommitted changes in kiri/ or bench/" if dirty else ""
    )


Results = dict[str, dict[str, dict[str, Figures]]]  # machine -> protocol -> method -> figures


def run_dataset(
    folder: Path, names: list[str] | None, protocols: Sequence[str], extra: list[str], workers: int
) -> Results:
    paths = sorted(folder.glob("*.npz"))
    if names:
        paths = [p for p in paths if p.stem in names]
    if not paths:
        raise SystemExit(f"no machines to run in {folder}")
    machines = [load_machine(p) for p in paths]
    columns = column_names(folder, machines[0].train.shape[1])
    print(
        f"{folder.name}: {len(machines)} machines, protocols {', '.join(protocols)}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as home:
        kiri = Kiri(columns, extra, workers, Path(home)).run(machines, protocols)
    results: Results = {}
    for m in machines:
        for protocol in protocols:
            results.setdefault(m.name, {})[protocol] = {
                "KIRI": kiri[m.name][protocol],
                Z_REF: z_reference(m, protocol),
                **{name: baseline(fit, m, protocol) for name, fit in BASELINES.items()},
            }
    return results


def dataset_tables(title: str, results: Results, protocol: str) -> list[str]:
    machines = list(results)
    methods = list(results[machines[0]][protocol])
    means = [(x, mean_figures([results[m][protocol][x] for m in machines])) for x in methods]
    per = [(f"{m} {x}", results[m][protocol][x]) for m in machines for x in methods]
    return [
        f"## {title}, {protocol} protocol: mean over {len(machines)} machines",
        "",
        *table(means, "method"),
        "",
        f"### {title}, {protocol}: per machine",
        "",
        *table(per, "machine method"),
        "",
    ]


def header(command: str, extra: str, workers: int) -> list[str]:
    return [
        f"Reproduce: `{command}`",
        "",
        f"Run {date.today().isoformat()}, {git_state()}; `kiri train` extra arguments: "
        f"{extra or '(none, the defaults)'}; KIRI scores in {workers} processes on a shared "
        "2-core machine, so `train s` and `score rows/s` are wall-clock figures.",
        "",
        "Point-wise figures, no point adjustment except in PA-F1 (a reference only). Label-free "
        "thresholds: KIRI's own calibrated one; for the baselines, the max of their own scores "
        "on their training rows. Online: every method retrains on kiri.atoms.retraining's schedule "
        f"(every {SCHEDULE.every:,} rows on the most recent {SCHEDULE.window:,} rows seen). "
        "`flagged normal`: the share of unlabelled test rows above the label-free threshold.",
        "",
    ]


def suite(quick: bool, extra: str, workers: int) -> str:
    import nab
    import nabscore

    sets = {"SMD": DATA / "smd", "ASD": DATA / "asd"}
    lines = ["# KIRI on the development data" + (" (quick)" if quick else ""), ""]
    command = "bin/bench detect --suite dev" + (" --quick" if quick else "")
    lines += header(
        command + (f" --kiri-args {shlex.quote(extra)}" if extra else ""), extra, workers
    )
    for title, folder in sets.items():
        names = [sorted(folder.glob("*.npz"))[0].stem] if quick else None
        results = run_dataset(folder, names, PROTOCOLS, shlex.split(extra), workers)
        for protocol in PROTOCOLS:
            block = dataset_tables(title, results, protocol)
            print("\n".join(block), flush=True)
            lines += block
    data = DATA / "nab" / "data"
    names = nab.series_names(data, 6 if quick else 0)
    corpus = nabscore.load_corpus(data, DATA / "nab" / "windows.json", names)
    scores = nab.run(data, names, workers, shlex.split(extra))
    nab.write_results(RESULTS / "nab", data, scores, corpus)
    block = [
        f"## NAB: {len(names)} series, normalised scores by the project's scorer",
        "",
        *nab.score_table(corpus, scores, DATA / "nab" / "reference"),
        "",
    ]
    print("\n".join(block), flush=True)
    lines += block
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="KIRI and baselines on the development data.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--suite", choices=["dev"], help="every development set (../shared/data)")
    what.add_argument("--data", type=Path, help="one folder of NAME.npz machines")
    parser.add_argument(
        "--quick", action="store_true", help="with --suite: one machine a dataset, 6 NAB files"
    )
    parser.add_argument(
        "--protocol", choices=["static", "online", "both"], default="both", help="with --data"
    )
    parser.add_argument("--machines", nargs="+", metavar="NAME", help="with --data: only these")
    parser.add_argument("--kiri-args", default="", help='appended to `kiri train`: "--steps 500"')
    parser.add_argument("--workers", type=int, default=2, help="KIRI processes side by side")
    parser.add_argument("--out", type=Path, help="the Markdown results file")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.suite:
        text = suite(args.quick, args.kiri_args, args.workers)
        out = args.out or RESULTS / ("detection-quick.md" if args.quick else "detection.md")
    else:
        protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
        results = run_dataset(
            args.data, args.machines, protocols, shlex.split(args.kiri_args), args.workers
        )
        command = f"bin/bench detect --data {args.data} --protocol {args.protocol}"
        text = "\n".join(
            [f"# KIRI on {args.data.name}", "", *header(command, args.kiri_args, args.workers)]
            + [line for p in protocols for line in dataset_tables(args.data.name, results, p)]
        )
        print(text)
        out = args.out or RESULTS / f"detect-{args.data.name}.md"
    text += f"\nWall time of the whole run: {time.perf_counter() - started:.0f} s.\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
