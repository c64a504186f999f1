"""kiri-decide: turn `score` records into `decision` records, one per score.

The default policy, per atom and host: alert when the surprise exceeds the atom's threshold on
k of the last n observations; keep one incident open while it lasts, re-notifying only after
--repeat seconds; resolve once the last n observations are all below the threshold. Time is the
records' own, so a replayed day decides exactly as the live day did.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections import deque
from typing import Any

from kiri.atoms import UnknownAtom, atom_spec
from kiri.records import Decision, Score
from kiri.schema import SchemaError
from kiri.stream import Stream, add_stream_options, run_main, setup_logging

MAX_CULPRITS_NAMED = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiri-decide",
                                description="Decide what to do about scores: score -> decision.")
    p.add_argument("--k", type=int, default=3, help="alert when k of the last n are unusual")
    p.add_argument("--n", type=int, default=5, help="the window of observations k counts in")
    p.add_argument("--sensitivity", type=float, default=1.0,
                   help="scale: 2 halves every threshold (more alerts), 0.5 doubles it")
    p.add_argument("--repeat", type=float, default=3600.0, metavar="S",
                   help="re-notify an open incident after S seconds")
    add_stream_options(p)
    return p


class Track:
    """One atom on one host: its recent verdicts and its open incident, if any."""

    def __init__(self, n: int) -> None:
        self.recent: deque[bool] = deque(maxlen=n)
        self.incident = ""
        self.notified = 0.0


class Policy:
    def __init__(self, k: int, n: int, sensitivity: float, repeat: float) -> None:
        self.k, self.n, self.sensitivity, self.repeat = k, n, sensitivity, repeat
        self.tracks: dict[tuple[str, str], Track] = {}
        prefix = os.urandom(3).hex()  # ids stay unique across restarts and short for buttons
        self._ids = (f"{prefix}{i:x}" for i in itertools.count(1))

    def decide(self, score: Score) -> Decision:
        track = self.tracks.setdefault((score.atom, score.host), Track(self.n))
        threshold = score.threshold / self.sensitivity
        track.recent.append(score.surprise > threshold)
        action = self._action(track, score.ts)
        if action == "alert" and not track.incident:
            track.incident = next(self._ids)
        incident = track.incident
        if action == "alert":
            track.notified = score.ts
        elif action == "resolve":
            track.incident = ""
        culprits = sorted(zip(score.tokens, score.nll), key=lambda c: -c[1])
        return Decision(
            ts=score.ts, id=next(self._ids), atom=score.atom, host=score.host, action=action,
            severity=_severity(action, score.surprise, threshold), surprise=score.surprise,
            threshold=round(threshold, 4), culprits=culprits, incident=incident,
            atoms=[score.atom], summary=_summary(action, score, culprits, threshold),
        )

    def _action(self, track: Track, ts: float) -> str:
        unusual = sum(track.recent)
        if not track.incident:
            return "alert" if unusual >= self.k else "ok"
        if unusual == 0 and len(track.recent) == self.n:
            return "resolve"
        if track.recent[-1] and ts - track.notified >= self.repeat:
            return "alert"
        return "ok"


def check(score: Score) -> str | None:
    """Why a score makes no sense to decide on, if it doesn't."""
    if len(score.tokens) != len(score.nll):
        return f"score has {len(score.tokens)} tokens but {len(score.nll)} nll values"
    if score.threshold <= 0:
        return f"score threshold must be positive, got {score.threshold}"
    if not score.atom:
        return "score has no atom"
    return None


def _severity(action: str, surprise: float, threshold: float) -> str:
    if action != "alert":
        return ""
    return "critical" if surprise >= 2 * threshold else "warning"


def _summary(action: str, score: Score, culprits: list, threshold: float) -> str:
    figures = f"(surprise {score.surprise:.1f}, threshold {threshold:.1f})"
    if action == "resolve":
        return f"{score.atom} on {score.host} is back to normal {figures}"
    if action != "alert":
        return ""
    top = culprits[0][1] if culprits else 0.0
    named = [t for t, nll in culprits[:MAX_CULPRITS_NAMED] if nll >= max(threshold, top / 2)]
    parts = [_describe(score, t) for t in named or [culprits[0][0]]]
    subject = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    verb = "is" if len(parts) == 1 else "are"
    return f"{subject} {verb} unusual for {score.host} {figures}"


def _describe(score: Score, token: str) -> str:
    """`CPU 97% (C9)`, or the bare token for an atom this version does not know."""
    try:
        field = atom_spec(score.atom).schema.field_of(token)
    except (UnknownAtom, SchemaError, ValueError):
        return token
    return f"{field.describe(score.values.get(field.name))} ({token})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.k <= args.n:
        parser.error("need 1 <= --k <= --n")
    if args.sensitivity <= 0:
        parser.error("--sensitivity must be positive")
    log = setup_logging("decide")
    policy = Policy(args.k, args.n, args.sensitivity, args.repeat)

    def body() -> None:
        with Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
            for score, _raw in stream.records(0, consumes=(Score,), check=check):
                decision = policy.decide(score)
                if decision.action != "ok":
                    log.debug(decision.action, atom=decision.atom, host=decision.host,
                             incident=decision.incident, summary=decision.summary)
                stream.emit(decision)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
