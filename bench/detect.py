"""KIRI against simple baselines on the Server Machine Dataset, by the protocol of the data README.

    .venv/bin/python bench/detect.py --data ../shared/data/smd
        [--machines machine-1-6 ...] [--kiri-args "--steps 500"] [--workers 2]
        [--out bench/results/detect.md]

For each machine-X-Y.npz in --data (arrays train, test, test_label), static figures only:

* KIRI, through its real code path. Every row becomes an `obs` record of atom "smd" (host = the
  machine, ts = row index x 60 s, test rows continuing after train, values named by the README's
  38 columns). `kiri train smd --from TRAIN.ndjson --out WEIGHTS` runs as a subprocess in a
  temporary KIRI_HOME (it fits an auto schema), then Detector.load(WEIGHTS).score() scores the
  test rows in batches, the code kiri-atom runs, in --workers processes (default 2, one per
  core), each with a contiguous share of the rows. Its label-free threshold is the atom's own
  calibrated one, Score.threshold.
* Baselines fitted on train: PCA (k = 5, score = squared reconstruction error), IsolationForest
  (random_state = 0, score = -score_samples), 1-NN (distance to the nearest train row). Their
  label-free threshold is the max of their own scores on train, no labels (for 1-NN, each train
  row's distance to its nearest other train row).

Figures, point-wise, averaged over machines and then shown per machine:
* label-free F1: a row is flagged when its score is above the label-free threshold;
* best F1 over all thresholds, and AUPRC (average precision): the ceiling;
* PA-F1, a reference only: point-adjusted F1 at its best threshold, where a labelled segment
  counts as wholly detected when any of its rows is flagged (it inflates every method);
* train s: wall time of fitting plus calibrating (for KIRI, the whole `kiri train` process);
  score rows/s: test rows scored per second (for KIRI, Detector.score in its --workers
  processes side by side: all the test rows over the slowest worker's time);
* culprit hit rate, KIRI and the |z| reference: for each line `start-end:d1,d2,...` of
  machine-X-Y.interpretation.txt (test rows start to end - 1, the rows test_label marks;
  1-based columns named by operators, n of them), each row's columns are ranked by their score
  (KIRI: the score's z, each field's -log p against its held-out distribution, the ranking
  kiri-decide names culprits by; reference: |z| against the train mean and std), and the share of
  the named columns among the top n (hit@100%) and the top ceil(1.5 n) (hit@150%) is averaged
  over the rows, then over the segments. Tied columns share the places left evenly.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields
from datetime import date
from pathlib import Path

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiri.detector import Detector  # noqa: E402
from kiri.records import Obs  # noqa: E402

COLUMNS = [
    "cpu_r",
    "load_1",
    "load_5",
    "load_15",
    "mem_shmem",
    "mem_u",
    "mem_u_e",
    "total_mem",
    "disk_q",
    "disk_r",
    "disk_rb",
    "disk_svc",
    "disk_u",
    "disk_w",
    "disk_wa",
    "disk_wb",
    "si",
    "so",
    "eth1_fi",
    "eth1_fo",
    "eth1_pi",
    "eth1_po",
    "tcp_tw",
    "tcp_use",
    "active_opens",
    "curr_estab",
    "in_errs",
    "in_segs",
    "listen_overflows",
    "out_rsts",
    "out_segs",
    "passive_opens",
    "retransegs",
    "tcp_timeouts",
    "udp_in_dg",
    "udp_out_dg",
    "udp_rcv_buf_errs",
    "udp_snd_buf_errs",
]
ATOM = "smd"
STEP_SECONDS = 60
BATCH = 4096
PCA_K = 5
THRESHOLD_RULE = "max of the method's own scores on train"
REFERENCES = (
    "best F1: 1-NN 0.491, PCA-k5 0.481",
    "AUPRC: PCA-k5 0.420, 1-NN 0.408",
    "label-free F1: 0.274 (Netdata-style per-metric k-means), 0.211 (1-NN)",
)
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
    flagged: float | None = None  # share of test rows above the label-free threshold


HEADERS = (
    "label-free F1",
    "best F1",
    "AUPRC",
    "PA-F1 (ref)",
    "train s",
    "score rows/s",
    "culprit hit@100%",
    "hit@150%",
    "flagged",
)
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
)


@dataclass
class Machine:
    name: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray
    culprits: list[tuple[range, list[int]]]  # test rows, 0-based columns named by operators


def load_machine(path: Path) -> Machine:
    arrays = np.load(path)
    culprits = []
    for line in path.with_suffix(".interpretation.txt").read_text().split():
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
    # scikit-learn (and threadpoolctl, which comes with it) ships no type stubs
    from sklearn.metrics import average_precision_score  # type: ignore[import-untyped]

    return float(average_precision_score(labels, scores))


def detection(scores: np.ndarray, threshold: float | np.ndarray, labels: np.ndarray) -> Figures:
    flagged = scores > threshold
    return Figures(
        label_free_f1=f1(flagged, labels),
        best_f1=best_f1(scores, labels, np.ones(len(scores))),
        auprc=auprc(scores, labels),
        pa_f1=point_adjusted_f1(scores, labels),
        flagged=float(flagged.mean()),
    )


def hit_rate(
    column_scores: np.ndarray, culprits: list[tuple[range, list[int]]], factor: float
) -> float:
    """The mean share of named columns among each row's top ceil(factor x n) columns."""
    shares = []
    for rows, named in culprits:
        s = column_scores[rows.start : rows.stop]
        k = min(math.ceil(factor * len(named)), s.shape[1])
        kth = np.sort(s, axis=1)[:, -k, None]
        above, tied = s > kth, s == kth
        is_named = np.isin(np.arange(s.shape[1]), named)
        hits = (above & is_named).sum(1) + (k - above.sum(1)) / tied.sum(1) * (tied & is_named).sum(
            1
        )
        shares.append(float(np.mean(hits / len(named))))
    return float(np.mean(shares))


def culprit_hits(column_scores: np.ndarray, culprits) -> tuple[float, float]:
    """hit@100% and hit@150%: the named columns' share among the top n and ceil(1.5 n)."""
    return hit_rate(column_scores, culprits, 1.0), hit_rate(column_scores, culprits, 1.5)


# --- KIRI --------------------------------------------------------------------------------------


def observations(rows: np.ndarray, host: str, first_row: int) -> list[Obs]:
    return [
        Obs(
            ts=float((first_row + i) * STEP_SECONDS),
            atom=ATOM,
            host=host,
            values=dict(zip(COLUMNS, row, strict=True)),
        )
        for i, row in enumerate(rows.astype(float).tolist())
    ]


def kiri_train(m: Machine, home: Path, extra: list[str]) -> tuple[Path, float]:
    """Train the atom with `kiri train` in KIRI_HOME=home: its weights, and the seconds taken."""
    data, out = home / f"{m.name}.train.ndjson", home / f"{m.name}.weights.json"
    data.write_bytes(msgspec.json.Encoder().encode_lines(observations(m.train, m.name, 0)))
    cmd = [
        sys.executable,
        "-m",
        "kiri.cli",
        "train",
        ATOM,
        "--from",
        str(data),
        "--out",
        str(out),
        *extra,
    ]
    env = dict(os.environ, KIRI_HOME=str(home), KIRI_LOG_LEVEL="warning")
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"kiri train failed on {m.name}:\n{done.stdout}{done.stderr}")
    return out, seconds


def kiri(m: Machine, home: Path, extra: list[str], workers: int) -> tuple[Figures, str]:
    """KIRI's figures on one machine, and a note on its threshold."""
    weights, train_s = kiri_train(m, home, extra)
    parts = np.array_split(np.arange(len(m.test)), workers)
    jobs = [(weights, m.test[p], m.name, len(m.train) + int(p[0])) for p in parts]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        scored = pool.starmap(kiri_score, jobs)
    surprise, threshold, z, seconds = (np.concatenate(a) for a in zip(*scored, strict=True))
    figures = detection(surprise, threshold, m.labels)
    # the workers score side by side: the slowest one's time is the wall time of the scoring
    figures.train_s, figures.rows_per_s = train_s, len(m.test) / seconds.max()
    detector = Detector.load(weights)
    scored_fields = detector.schema.ordered[detector.schema.n_context :]
    ranked = np.empty(m.test.shape)
    ranked[:, [COLUMNS.index(f.name) for f in scored_fields]] = z
    figures.hit100, figures.hit150 = culprit_hits(ranked, m.culprits)
    cal = detector.calibration
    note = (
        f"KIRI threshold {cal.threshold:.3f} ({cal.method}); test surprise p50 "
        f"{np.median(surprise):.3f}, max {surprise.max():.3f}"
    )
    return figures, note


def kiri_score(weights: Path, rows: np.ndarray, host: str, first_row: int) -> tuple:
    """One worker: Detector.score, the code kiri-atom runs, on its share of the test rows.
    Returns each row's surprise, threshold and per-field z (the culprit ranking), and the
    seconds Detector.score took."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # with sklearn

    # this process imported numpy before kiri could ask BLAS for one thread per process, and
    # two workers each running BLAS on two threads thrash two cores
    threadpool_limits(1)
    detector = Detector.load(weights)
    test = observations(rows, host, first_row)
    t = time.perf_counter()
    scores = [s for i in range(0, len(test), BATCH) for s in detector.score(test[i : i + BATCH])]
    seconds = time.perf_counter() - t
    refused = [s for s in scores if isinstance(s, Exception)]
    if refused:
        raise SystemExit(f"{host}: the atom refused {len(refused)} rows, first: {refused[0]}")
    scored = [s for s in scores if not isinstance(s, Exception)]
    return (
        np.array([s.surprise for s in scored]),
        np.array([s.threshold for s in scored]),
        np.array([s.z for s in scored]),
        np.array([seconds]),
    )


def z_reference(m: Machine) -> Figures:
    """Culprit hit rate of ranking columns by |z| against the train mean and std."""
    mean, std = m.train.mean(0), m.train.std(0)
    z = np.abs(m.test - mean) / np.maximum(std, 1e-6)
    hit100, hit150 = culprit_hits(z, m.culprits)
    return Figures(hit100=hit100, hit150=hit150)


# --- baselines ---------------------------------------------------------------------------------

# Each fits on the train rows and returns its scoring function and its scores on train.


def pca(train: np.ndarray) -> tuple[Callable, np.ndarray]:
    from sklearn.decomposition import PCA  # type: ignore[import-untyped]

    model = PCA(n_components=PCA_K).fit(train)

    def score(x: np.ndarray) -> np.ndarray:
        return np.sum((x - model.inverse_transform(model.transform(x))) ** 2, axis=1)

    return score, score(train)


def isolation_forest(train: np.ndarray) -> tuple[Callable, np.ndarray]:
    from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped]

    model = IsolationForest(random_state=0).fit(train)
    return (lambda x: -model.score_samples(x)), -model.score_samples(train)


def nearest_neighbour(train: np.ndarray) -> tuple[Callable, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors  # type: ignore[import-untyped]

    model = NearestNeighbors(n_neighbors=1).fit(train)
    on_train = model.kneighbors()[0][:, 0]  # with no query, each row's nearest *other* row
    return (lambda x: model.kneighbors(x)[0][:, 0]), on_train


BASELINES = {"PCA-k5": pca, "IsolationForest": isolation_forest, "1-NN": nearest_neighbour}


def baseline(fit: Callable, m: Machine) -> Figures:
    t = time.perf_counter()
    score, on_train = fit(m.train)
    threshold = float(on_train.max())
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    scores = score(m.test)
    rows_per_s = len(m.test) / (time.perf_counter() - t)
    figures = detection(scores, threshold, m.labels)
    figures.train_s, figures.rows_per_s = train_s, rows_per_s
    return figures


# --- report ------------------------------------------------------------------------------------


def mean_figures(per_machine: list[Figures]) -> Figures:
    means = {}
    for f in fields(Figures):
        values = [getattr(x, f.name) for x in per_machine]
        means[f.name] = None if None in values else float(np.mean(values))
    return Figures(**means)


def table(rows: list[tuple[str, Figures]], first: str, with_flagged: bool) -> list[str]:
    """A Markdown table, padded so that it also reads as plain text."""
    n = len(HEADERS) - (not with_flagged)
    body = [
        [name]
        + [
            fmt.format(v) if v is not None else "-"
            for fmt, v in zip(FORMATS[:n], astuple(fig)[:n], strict=True)
        ]
        for name, fig in rows
    ]
    head = [first, *HEADERS[:n]]
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
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = (
        " with uncommitted changes in kiri/" if git("status", "--porcelain", "--", "kiri") else ""
    )
    return f"commit {git('rev-parse', '--short', 'HEAD')}{dirty}"


def report(
    results: dict[str, dict[str, Figures]], notes: dict[str, str], kiri_args: str, workers: int
) -> str:
    machines = list(results)
    methods = list(results[machines[0]])
    mean_rows = [(m, mean_figures([results[x][m] for x in machines])) for m in methods]
    lines = [
        "# KIRI on the Server Machine Dataset (static figures)",
        "",
        "Reproduce: `.venv/bin/python bench/detect.py --data ../shared/data/smd"
        + (f" --kiri-args {shlex.quote(kiri_args)}" if kiri_args else "")
        + "`",
        "",
        f"Run {date.today().isoformat()}, {git_state()}; `kiri train` extra arguments: "
        f"{kiri_args or '(none, the defaults)'}; machines: {', '.join(machines)}.",
        "",
        "Fit on train, score every test row; point-wise figures, no point adjustment except in "
        "PA-F1, which is a reference only. Label-free threshold: KIRI's own calibrated one "
        f"(Score.threshold); for the baselines, the {THRESHOLD_RULE} (for 1-NN, each train row's "
        "distance to its nearest other train row), no labels. Culprit hit rate: share of the "
        "operator-named columns among each row's top n (100%) or ceil(1.5 n) (150%) columns, "
        "ranked by the score's z, each field's -log p against its held-out distribution (KIRI), "
        "or by absolute z-score against train (reference), averaged over rows, segments, "
        "machines. `train s` and `score rows/s` are wall-clock figures on a shared 2-core "
        f"machine; KIRI scores in {workers} process" + "es" * (workers > 1) + ".",
        "",
        "Reference figures to beat (from the issue): " + "; ".join(REFERENCES) + ".",
        "",
        f"## Mean over {len(machines)} machine" + "s" * (len(machines) > 1),
        "",
        *table(mean_rows, "method", with_flagged=False),
        "",
        "## Per machine",
        "",
        *table(
            [(f"{x} {m}", results[x][m]) for x in machines for m in methods],
            "machine method",
            with_flagged=True,
        ),
        "",
        *[f"- {x}: {notes[x]}" for x in machines],
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="KIRI and baselines on the SMD machines.")
    parser.add_argument("--data", type=Path, required=True, help="folder of machine-X-Y.npz")
    parser.add_argument("--machines", nargs="+", metavar="NAME", help="only these machines")
    parser.add_argument("--kiri-args", default="", help='appended to `kiri train`: "--steps 500"')
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="scoring processes for KIRI, each with its share of the test rows",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "detect.md",
        help="the Markdown results file",
    )
    args = parser.parse_args()
    paths = sorted(args.data.glob("*.npz"))
    if args.machines:
        paths = [p for p in paths if p.stem in args.machines]
    if not paths:
        raise SystemExit(f"no machines to run in {args.data}")

    results: dict[str, dict[str, Figures]] = {}
    notes: dict[str, str] = {}
    for path in paths:
        m = load_machine(path)
        print(f"{m.name}: train {m.train.shape}, test {m.test.shape}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as home:
            figures, notes[m.name] = kiri(m, Path(home), shlex.split(args.kiri_args), args.workers)
        results[m.name] = {
            "KIRI": figures,
            Z_REF: z_reference(m),
            **{name: baseline(fit, m) for name, fit in BASELINES.items()},
        }

    text = report(results, notes, args.kiri_args, args.workers)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
