"""KIRI's atom through its real code path, for the detection benchmarks.

Rows become `obs` records; `kiri train ATOM --from FILE --out WEIGHTS` trains them as a
subprocess in a KIRI_HOME of its own, the command a person runs; Detector.score, the code
kiri-atom runs, scores them. bench/detect.py and bench/nab.py both use these.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kiri.atoms.detector import Detector  # noqa: E402
from kiri.wire.records import Obs, Score  # noqa: E402

BATCH = 4096  # observations per Detector.score call


def observations(
    rows: np.ndarray, columns: Sequence[str], atom: str, host: str, ts: Sequence[float]
) -> list[Obs]:
    """One `obs` record per row, its values named by `columns`, stamped `ts`."""
    return [
        Obs(ts=float(t), atom=atom, host=host, values=dict(zip(columns, row, strict=True)))
        for t, row in zip(ts, rows.astype(float).tolist(), strict=True)
    ]


@dataclass
class Training:
    """One `kiri train` run to make: these observations, to these weights."""

    atom: str
    observations: list[Obs]
    out: Path
    extra: Sequence[str] = ()


def train(job: Training) -> float:
    """Run `kiri train` for the job in a KIRI_HOME beside its weights; the seconds it took."""
    home = job.out.parent
    data = job.out.with_suffix(".ndjson")
    data.write_bytes(msgspec.json.Encoder().encode_lines(job.observations))
    cmd = [sys.executable, "-m", "kiri.cli", "train", job.atom, "--from", str(data)]
    cmd += ["--out", str(job.out), *job.extra]
    env = dict(os.environ, KIRI_HOME=str(home / "home"), KIRI_LOG_LEVEL="warning")
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    data.unlink()
    if done.returncode:
        raise SystemExit(f"kiri train failed for {job.out.name}:\n{done.stdout}{done.stderr}")
    return seconds


def train_all(jobs: Sequence[Training], workers: int) -> list[float]:
    """Run the trainings, `workers` at a time (each is its own process); their seconds."""
    if workers <= 1 or len(jobs) <= 1:
        return [train(j) for j in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(train, jobs, chunksize=1)


@dataclass
class Scored:
    """Detector.score's figures for a run of observations, one row each."""

    surprise: np.ndarray  # (N,)
    threshold: np.ndarray  # (N,)
    z: np.ndarray  # (N, scored fields), in the schema's document order
    spread: np.ndarray  # (N, scored fields): each value against its training median
    fields: list[str]  # the scored fields' names, in that order
    seconds: float  # the time Detector.score took


def score_records(weights: Path, obs: Sequence[Obs]) -> tuple[list[Score], Detector, float]:
    """The `score` records kiri-atom would write for these observations, in batches as it
    scores them; the detector, and the seconds scoring took."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no stubs

    # bench processes import numpy before kiri could ask BLAS for one thread per process, and
    # two scoring processes each running BLAS on two threads thrash two cores
    threadpool_limits(1)
    detector = Detector.load(weights)
    started = time.perf_counter()
    scores = [s for i in range(0, len(obs), BATCH) for s in detector.score(obs[i : i + BATCH])]
    seconds = time.perf_counter() - started
    refused = [s for s in scores if not isinstance(s, Score)]
    if refused:
        raise SystemExit(f"{weights.name}: the atom refused {len(refused)} rows: {refused[0]}")
    return [s for s in scores if isinstance(s, Score)], detector, seconds


def score(weights: Path, obs: Sequence[Obs]) -> Scored:
    """Score observations with the atom's weights, as kiri-atom does: the figures, as arrays."""
    valid, detector, seconds = score_records(weights, obs)
    fields = [f.name for f in detector.schema.ordered[detector.schema.n_context :]]
    return Scored(
        np.array([s.surprise for s in valid]),
        np.array([s.threshold for s in valid]),
        np.array([s.z for s in valid]).reshape(len(valid), len(fields)),
        np.array([s.spread for s in valid]).reshape(len(valid), len(fields)),
        fields,
        seconds,
    )


def score_all(jobs: Sequence[tuple[Path, list[Obs]]], workers: int) -> list[Scored]:
    """Score each (weights, observations) job, `workers` processes side by side."""
    if workers <= 1 or len(jobs) <= 1:
        return [score(w, o) for w, o in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.starmap(score, jobs, chunksize=1)


def stream_peak_mb(weights: Path, obs: Sequence[Obs]) -> float:
    """Peak resident memory, in MB, of `kiri-atom` scoring these observations as a stream.

    Read from the process's own /proc VmHWM while it runs, not from getrusage: a child forked
    from this (large) benchmark process would report the parent's size as its own peak."""
    data = weights.with_suffix(".stream.ndjson")
    data.write_bytes(msgspec.json.Encoder().encode_lines(obs))
    cmd = [sys.executable, "-m", "kiri.score.stage", obs[0].atom, "--weights", str(weights)]
    env = dict(os.environ, KIRI_HOME=str(weights.parent / "home"), KIRI_LOG_LEVEL="warning")
    peak = 0
    with data.open("rb") as stdin:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
        while proc.poll() is None:
            peak = max(peak, _high_water_kb(proc.pid))
            time.sleep(0.05)
    data.unlink()
    if proc.returncode:
        raise SystemExit(f"kiri-atom failed on {weights} (status {proc.returncode})")
    return peak / 1024


def _high_water_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has just exited
        return 0
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0
    )
