"""kiri-decide: turn `score` records into `decision` records, one per score.

The default policy, per atom and host: alert when the surprise exceeds the atom's threshold on
k of the last n observations; keep one incident open while it lasts, re-notifying only after
--repeat seconds; resolve once the last n observations are all below the threshold. Time is the
records' own, so a replayed day decides exactly as the live day did.

People's verdicts come back as records on the feedback FIFO (--feedback): a suppression rule
turns a matching alert into `suppress` (logged, not notified), and a retrain request becomes a
`retrain` decision. Standing rules are loaded from the store at start.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

from kiri.atoms import UnknownAtom, atom_spec
from kiri.patterns import named_culprits, pattern_key
from kiri.records import Decision, Record, Rule, Score
from kiri.schema import SchemaError
from kiri.store import Store, db_path
from kiri.stream import Stream, add_stream_options, run_main, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiri-decide",
                                description="Decide what to do about scores: score -> decision.")
    p.add_argument("--k", type=int, default=3, help="alert when k of the last n are unusual")
    p.add_argument("--n", type=int, default=5, help="the window of observations k counts in")
    p.add_argument("--sensitivity", type=float, default=1.0,
                   help="scale: 2 halves every threshold (more alerts), 0.5 doubles it")
    p.add_argument("--repeat", type=float, default=3600.0, metavar="S",
                   help="re-notify an open incident after S seconds")
    p.add_argument("--feedback", type=Path, metavar="PATH",
                   help="read rule and verdict records from this FIFO (created if missing), "
                   "never blocking the main stream")
    add_stream_options(p)
    return p


class Track:
    """One atom on one host: its recent verdicts and its open incident, if any."""

    def __init__(self, n: int) -> None:
        self.recent: deque[bool] = deque(maxlen=n)
        self.incident = ""
        self.notified = 0.0
        self.suppressed = False  # the open incident matched a rule: nobody was told


class Rules:
    """Suppression rules in force, by atom and culprit pattern."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str], Rule] = {}

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule: Rule) -> None:
        self._rules[(rule.atom, pattern_key(rule.match))] = rule

    def match(self, atom: str, named: list[str]) -> Rule | None:
        rule = self._rules.get((atom, pattern_key(named)))
        if rule and rule.expires and rule.expires <= time.time():
            return None
        return rule


class Policy:
    def __init__(self, k: int, n: int, sensitivity: float, repeat: float) -> None:
        self.k, self.n, self.sensitivity, self.repeat = k, n, sensitivity, repeat
        self.tracks: dict[tuple[str, str], Track] = {}
        self.rules = Rules()
        prefix = os.urandom(3).hex()  # ids stay unique across restarts and short for buttons
        self._ids = (f"{prefix}{i:x}" for i in itertools.count(1))

    def new_id(self) -> str:
        return next(self._ids)

    def decide(self, score: Score) -> Decision:
        track = self.tracks.setdefault((score.atom, score.host), Track(self.n))
        threshold = score.threshold / self.sensitivity
        track.recent.append(score.surprise > threshold)
        # most surprising first; the stable sort keeps the schema's order among equals
        culprits = sorted(zip(score.tokens, score.z or score.nll), key=_by_surprise, reverse=True)
        action = self._action(track, score.ts)
        rule = None
        if action == "alert":
            rule = self.rules.match(score.atom, named_culprits(culprits, threshold))
            track.incident = track.incident or self.new_id()
            track.notified, track.suppressed = score.ts, rule is not None
            action = "suppress" if rule else "alert"
        incident = track.incident
        if action == "resolve":
            track.incident = ""
            if track.suppressed:  # nobody was told of it, so nobody needs telling it is over
                action = "ok"
        summary = _summary(action, score, culprits, threshold)
        if rule:
            summary = f"{summary}; suppressed by rule {rule.id} ({rule.reason})"
        return Decision(
            ts=score.ts, id=self.new_id(), atom=score.atom, host=score.host, action=action,
            severity=_severity(action, score.surprise, threshold), surprise=score.surprise,
            threshold=round(threshold, 4), culprits=culprits, incident=incident,
            atoms=[score.atom], summary=summary,
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


def _by_surprise(culprit: tuple[str, float]) -> float:
    return culprit[1]


def check(score: Score) -> str | None:
    """Why a score makes no sense to decide on, if it doesn't."""
    if len(score.tokens) != len(score.nll):
        return f"score has {len(score.tokens)} tokens but {len(score.nll)} nll values"
    if score.z and len(score.z) != len(score.tokens):
        return f"score has {len(score.tokens)} tokens but {len(score.z)} z values"
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
    if action not in ("alert", "suppress"):
        return ""
    parts = [_describe(score, t) for t in named_culprits(culprits, threshold)]
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


class Feedback:
    """The feedback FIFO: rules and retrain requests from kiri-feedback, read as they come.

    Opened read-write, so it never reports end-of-file when kiri-feedback restarts, and
    non-blocking, so the main stream never waits for it.
    """

    def __init__(self, path: Path, policy: Policy, stream: Stream, log: Any) -> None:
        self.policy, self.stream, self.log = policy, stream, log
        if not path.exists():
            os.mkfifo(path, 0o600)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._pending = b""
        self._decode = msgspec.json.Decoder(Record).decode

    def ready(self) -> None:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in filter(None, lines):
            try:
                self.handle(self._decode(line))
            except (msgspec.MsgspecError, UnicodeDecodeError) as e:
                self.log.warning("bad_feedback_record", reason=str(e))

    def handle(self, record: Any) -> None:
        if isinstance(record, Rule) and record.action == "suppress":
            self.policy.rules.add(record)
            self.log.info("rule_added", rule=record.id, atom=record.atom, match=record.match)
        elif isinstance(record, Rule) and record.action == "retrain":
            self.stream.emit(Decision(
                ts=time.time(), id=self.policy.new_id(), atom=record.atom, action="retrain",
                summary=f"retrain {record.atom}: {record.reason}", atoms=[record.atom],
            ))


def standing_rules() -> list[Rule]:
    """The suppression rules in the store, if there is one yet."""
    if not db_path().exists():
        return []
    with Store() as store:
        return [r for r in store.active_rules() if r.action == "suppress"]


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
        for rule in standing_rules():
            policy.rules.add(rule)
        log.info("rules_loaded", rules=len(policy.rules))
        with Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
            if args.feedback:
                feedback = Feedback(args.feedback, policy, stream, log)
                stream.watch(feedback.fd, feedback.ready)
            for score, _raw in stream.records(0, consumes=(Score,), check=check):
                stream.emit(policy.decide(score))

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
