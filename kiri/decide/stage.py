"""kiri-decide: turn `score` records into `decision` records, one per score.

The policy (kiri/decide/policy.py): alert on k of the last n observations above the threshold, or on
fewer that stand for --for seconds, one incident per host, alerts of several atoms on one host
within --group-wait grouped into one. People's verdicts come back as records on the feedback
FIFO (--feedback): a suppression rule turns a matching alert into `suppress` (logged, not
notified), and a rule that has ended (expired: how kiri-feedback passes on a deleted one) takes
the rule of its id away. Standing rules are loaded from
the store at start. Rules count only from the FIFO and the store, each for one host until it
expires; a `rule` on stdin passes through and is never acted on, and a `decision` on stdin is
refused as a bad record, so no upstream record can forge either. Once the Nerve atom is
trained on at least --nerve-min verdicts, it chooses whether to notify when it is sure
(--nerve-confidence); the decision's `by` says who chose. The default policy's decisions are
recorded as Nerve's examples where nobody gives a verdict.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import msgspec

from kiri import add_version_option, complete
from kiri.decide.nerve import NerveAdvisor, PolicyExamples
from kiri.decide.policy import Advisor, Policy
from kiri.home.runner import run_main
from kiri.home.store import Store, db_path
from kiri.wire.log import Log
from kiri.wire.records import UNDECODABLE, Decision, Record, Rule, Score
from kiri.wire.stream import Stream, add_stream_options, setup_logging

# three five-second samples, as k of n asks of pulse; one observation of a slower atom
SUSTAIN = 15.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiri-decide", description="Decide what to do about scores: score -> decision."
    )
    add_version_option(p)
    p.add_argument("--k", type=int, default=3, help="alert when k of the last n are unusual")
    p.add_argument("--n", type=int, default=5, help="the window of observations k counts in")
    p.add_argument(
        "--for",
        dest="sustain",
        type=float,
        default=SUSTAIN,
        metavar="S",
        help="or when fewer of them are, but they stand for at least S seconds (each "
        "observation for the time since the one before): an hourly atom alerts on one hour",
    )
    p.add_argument(
        "--sensitivity",
        type=float,
        default=1.0,
        help="scale: 2 halves every threshold (more alerts), 0.5 doubles it",
    )
    p.add_argument(
        "--repeat",
        type=float,
        default=3600.0,
        metavar="S",
        help="re-notify an open incident after S seconds",
    )
    p.add_argument(
        "--feedback",
        type=Path,
        metavar="PATH",
        help="read rule and verdict records from this FIFO (created if missing), "
        "never blocking the main stream",
    )
    p.add_argument(
        "--group-wait",
        type=float,
        default=30.0,
        metavar="S",
        help="hold an alert up to S seconds so that other atoms alerting on the same "
        "host join it: one alert instead of several (0: never wait)",
    )
    p.add_argument(
        "--nerve-min",
        type=int,
        default=20,
        metavar="N",
        help="ask the Nerve atom once it is trained on at least N verdicts",
    )
    p.add_argument(
        "--nerve-confidence",
        type=float,
        default=0.7,
        metavar="P",
        help="follow Nerve only when it gives its choice at least probability P",
    )
    add_stream_options(p)
    return p


def check(score: Record) -> str | None:
    """Why a score makes no sense to decide on, if it doesn't."""
    if not isinstance(score, Score):  # a decision forged upstream would be delivered as one
        return "a decision on kiri-decide's input is not passed on: only kiri-decide decides"
    if len(score.tokens) != len(score.nll):
        return f"score has {len(score.tokens)} tokens but {len(score.nll)} nll values"
    if score.z and len(score.z) != len(score.tokens):
        return f"score has {len(score.tokens)} tokens but {len(score.z)} z values"
    if score.threshold <= 0:
        return f"score threshold must be positive, got {score.threshold}"
    if not score.atom:
        return "score has no atom"
    return None


class Feedback:
    """The feedback FIFO: suppression rules from kiri-feedback, read as they come.

    Opened read-write, so it never reports end-of-file when kiri-feedback restarts, and
    non-blocking, so the main stream never waits for it.
    """

    def __init__(self, path: Path, policy: Policy, log: Log) -> None:
        self.policy, self.log = policy, log
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
            except UNDECODABLE as e:
                self.log.warning("bad_feedback_record", reason=str(e))

    def handle(self, record: Record) -> None:
        if isinstance(record, Rule):
            # kiri-feedback passes a deleted rule on as one that has ended: drop the rule
            if record.expires <= time.time() and self.policy.rules.drop(record.id):
                self.log.info("rule_removed", rule=record.id, atom=record.atom, host=record.host)
                return
            refused = self.policy.rules.add(record)
            if refused:
                self.log.warning("rule_refused", rule=record.id, reason=refused)
                return
            self.log.info(
                "rule_added", rule=record.id, atom=record.atom, host=record.host, match=record.match
            )


def policy_of(args: argparse.Namespace, advisor: Advisor | None = None) -> Policy:
    """The policy these options describe; bench/nab.py decides with parse_args([]): the
    defaults, exactly as kiri-decide runs."""
    return Policy(
        args.k, args.n, args.sensitivity, args.repeat, args.group_wait, advisor, args.sustain
    )


def standing_rules() -> list[Rule]:
    """The suppression rules in the store, if there is one yet."""
    if not db_path().exists():
        return []
    with Store() as store:
        return [r for r in store.active_rules() if r.action == "suppress"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.k <= args.n:
        parser.error("need 1 <= --k <= --n")
    if args.sensitivity <= 0 or args.sustain <= 0:
        parser.error("--sensitivity and --for must be positive")
    if args.group_wait < 0 or not 0 < args.nerve_confidence <= 1:
        parser.error("--group-wait must be at least 0 and --nerve-confidence in (0, 1]")
    log = setup_logging("decide")
    advisor = NerveAdvisor(args.nerve_min, args.nerve_confidence, log)
    policy = policy_of(args, advisor)
    examples = PolicyExamples()

    def emit(stream: Stream, decisions: list[Decision]) -> None:
        for decision in decisions:
            stream.emit(decision)
            examples.add(decision)

    def body() -> None:
        for rule in standing_rules():
            refused = policy.rules.add(rule)
            if refused:
                log.warning("rule_refused", rule=rule.id, reason=refused)
        log.info("rules_loaded", rules=len(policy.rules))
        with examples, Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
            if args.feedback:
                feedback = Feedback(args.feedback, policy, log)
                stream.watch(feedback.fd, feedback.ready)
            for score, _raw in stream.records(0, consumes=(Score, Decision), check=check):
                assert isinstance(score, Score)  # check() refused the decisions
                emit(stream, policy.decide(score))
            emit(stream, policy.flush())  # the input ended (or a signal came): nothing held back

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
