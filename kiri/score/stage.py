"""kiri-atom ATOM: turn the atom's `obs` records into `score` records.

Observations are scored in groups, one forward pass per group. The weights file is watched:
when a retrain lands, the next group is scored by the new model, with no restart. With --learn
the atom keeps learning (kiri.atoms.lifecycle): with no weights yet it records a warm-up window,
trains in a background process, passes observations through meanwhile, and starts scoring as
soon as the weights land; then it retrains on kiri.atoms.retraining's schedule as the data grows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from kiri import add_version_option, complete
from kiri.atoms.detector import Detector
from kiri.atoms.lifecycle import LifeCycle
from kiri.atoms.registry import UnknownAtom, atom_spec, known_atoms
from kiri.atoms.schema import Schema, SchemaError
from kiri.home.config import ConfigError
from kiri.home.paths import scores_dir, weights_path
from kiri.home.recordings import Recorder
from kiri.home.runner import run_main
from kiri.model.weights import WeightsError
from kiri.wire.errors import KiriError
from kiri.wire.log import Log
from kiri.wire.records import Obs, Score
from kiri.wire.stream import Check, Stream, add_stream_options, setup_logging

RELOAD_EVERY = 1.0  # seconds between checks of the weights file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiri-atom", description="Score observations: obs -> score.")
    p.add_argument(
        "atom",
        metavar="ATOM",
        help=f"the atom: {', '.join(known_atoms())}, or one trained from its data",
    )
    add_version_option(p)
    p.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="weights file (default: $KIRI_HOME/atoms/ATOM/weights.json)",
    )
    p.add_argument(
        "--learn",
        action="store_true",
        help="keep learning: with no weights yet, record a warm-up window, train, then score; "
        "then retrain as the data grows (kiri.atoms.retraining)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=120,
        metavar="N",
        help="observations to record before training, with --learn",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="also append each score to $KIRI_HOME/data/ATOM/scores/ for `kiri dashboard` "
        "(always with --learn)",
    )
    add_stream_options(p)
    return p


class LiveDetector:
    """The atom's current detector, reloaded whenever the weights file changes."""

    def __init__(self, path: Path, log: Log) -> None:
        self.path, self.log = path, log
        self.detector: Detector | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_EVERY:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            detector = Detector.load(self.path)
        except WeightsError as e:
            if self.detector is None:
                raise
            self.log.error("weights_rejected", reason=str(e), keeping=self.detector.id)
            return
        self.log.info(
            "weights_loaded", path=str(self.path), model=detector.id, threshold=detector.threshold
        )
        self.detector = detector


def score_stream(args: argparse.Namespace, stream: Stream, log: Log) -> None:
    atom = args.atom
    path = args.weights or weights_path(atom)
    model = LiveDetector(path, log)
    model.refresh(force=True)
    if model.detector is None and not args.learn:
        raise KiriError(
            f"atom {atom} has no weights at {path}: run `kiri train {atom}`, "
            "or start kiri-atom with --learn"
        )
    life = LifeCycle(atom, args.warmup, path, log) if args.learn else None
    if life:
        log.info("learning", atom=atom, warmup=args.warmup, seen=life.state.seen)
    scores = ScoreLog(atom) if args.learn or args.record else None
    try:
        for group in stream.batches(0, consumes=(Obs,), check=_meta_check(atom, model)):
            model.refresh(force=life is not None and life.proc is not None)
            mine = [(rec, raw, n) for rec, raw, n in group if rec.atom == atom]
            detector = model.detector
            if life and detector:
                life.landed(detector.id, detector.calibration)
            results: Sequence[Score | SchemaError | None] = (
                [None] * len(mine)
                if detector is None
                else detector.score([rec for rec, _, _ in mine])
            )
            if life:
                for rec, _raw, _n in mine:
                    life.observe(rec)
            if scores:  # recorded whole, for the dashboard to explain any moment
                scores.extend(results)
            _emit(stream, group, iter(results), atom)
    finally:
        if life:
            life.stop()
        if scores:
            scores.close()


class ScoreLog:
    """The atom's scores, one day file each under data/ATOM/scores/: what `kiri dashboard`
    draws. One encoding and one write per group of scores (per day within it)."""

    def __init__(self, atom: str) -> None:
        self.recorder = Recorder(atom, scores_dir(atom))
        self.encoder = msgspec.json.Encoder()
        self._buf = bytearray()
        self._day = (0.0, 0.0)  # the local day of the scores in _buf: [start, end)

    def extend(self, results: Sequence[Score | SchemaError | None]) -> None:
        day_ts = 0.0
        for result in results:
            if not isinstance(result, Score):
                continue
            if not self._day[0] <= result.ts < self._day[1]:  # another local day's file
                if self._buf:
                    self._write(day_ts)
                self._day = _local_day(result.ts)
            if not self._buf:
                day_ts = result.ts
            self.encoder.encode_into(result, self._buf, -1)
            self._buf += b"\n"
        if self._buf:
            self._write(day_ts)

    def _write(self, ts: float) -> None:
        self.recorder.append(ts, bytes(self._buf))
        self._buf.clear()

    def close(self) -> None:
        self.recorder.close()


def _local_day(ts: float) -> tuple[float, float]:
    """The local day ts falls in, as [midnight, next midnight) in Unix seconds."""
    y, m, d = time.localtime(ts)[:3]
    return time.mktime((y, m, d, 0, 0, 0, 0, 0, -1)), time.mktime((y, m, d + 1, 0, 0, 0, 0, 0, -1))


def _meta_check(atom: str, model: LiveDetector) -> Check[Obs]:
    """The check of the stage loop: an observation of this atom whose meta fields cannot
    divide its values (meta.cpus "nan" or "1e-320") is rejected, while learning too, so that
    a warm-up never records it."""
    try:
        spec: Schema | None = atom_spec(atom).schema
    except (UnknownAtom, ConfigError):  # an atom fitted from its data divides by nothing
        spec = None

    def check(rec: Obs) -> str | None:
        if rec.atom != atom:
            return None
        schema = model.detector.schema if model.detector else spec
        return schema.meta_problem(rec.meta) if schema else None

    return check


def as_sent(score: Score) -> Score:
    """The score as it goes down the pipe: what explains an alert only with a score at or above
    its threshold, which may make one; on every score it would double the stream."""
    if score.surprise < score.threshold:
        score.fields, score.measured, score.worse = [], [], []
        score.usual_low, score.usual_high = [], []
    return score


def _emit(
    stream: Stream,
    group: list[tuple[Obs, bytes, int]],
    results: Iterator[Score | SchemaError | None],
    atom: str,
) -> None:
    """Emit each record of a group in order: its score, its rejection, or itself."""
    for rec, raw, lineno in group:
        result = next(results) if rec.atom == atom else None
        if isinstance(result, Score):
            stream.emit(as_sent(result))
        elif result is not None:
            stream.reject("-", lineno, str(result), raw)
        else:  # another atom's observation, or still warming up
            stream.emit_raw(rec, raw)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    try:
        atom_spec(args.atom)
    except ConfigError:
        pass  # config.toml is wrong: run_main says so in one line, as every stage does
    except UnknownAtom as e:  # fine for an atom fitted from its data: it has weights, or learns
        if not (args.learn or args.weights or weights_path(args.atom).exists()):
            parser.error(str(e))
    except ValueError as e:
        parser.error(str(e))
    log = setup_logging("atom").bind(atom=args.atom)

    def body() -> None:
        with Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
            score_stream(args, stream, log)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
