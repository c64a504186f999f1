"""kiri-feedback: turn delivered alerts and people's verdicts into learning.

It reads what kiri-act passes on (each delivered decision, then its outcomes) and records the
delivered ones in the store, so `kiri alerts` lists them and people can judge them. It follows
the verdicts people give (`kiri feedback dismiss ID`, Telegram, …) and turns them into:
* a suppression `rule`, once the same atom and culprit pattern has been dismissed --after times
  (one more for a pattern of one token), and its deletion once those dismissals are replaced
  (kiri/feedback/suppression.py);
* a retrain of the atom for "this is the new normal", with the observation kept as a training
  example for it, started here in the background (kiri.atoms.training_jobs.Trainings);
* a labelled example for the Nerve atom, in $KIRI_HOME/data/nerve/, and after every
  --nerve-every verdicts a retrain of Nerve.
Its stdout carries the suppression `rule`s to the feedback FIFO that kiri-decide reads: it
follows the rules' changes in the store (seq), so a rule deleted with `kiri rules delete` reaches
kiri-decide too, as a rule that has ended. Once a day it prunes what is older than [retention]
allows (kiri/home/retention.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import msgspec

from kiri import add_version_option, complete
from kiri.atoms import nerve_examples as nerve
from kiri.atoms.training_jobs import Trainings
from kiri.feedback import suppression
from kiri.home import retention
from kiri.home.paths import examples_path, private_dir
from kiri.home.recordings import Recorder
from kiri.home.runner import run_main
from kiri.home.store import Store, VerdictRow
from kiri.wire.log import Log
from kiri.wire.patterns import named_culprits, pattern_key
from kiri.wire.records import Decision, Outcome, Record, Rule, Verdict
from kiri.wire.stream import Stream, add_stream_options, setup_logging

CURSOR = "feedback.verdicts_seen"
RULES_CURSOR = "feedback.rules_seen"
PRUNED = "feedback.pruned"  # when kiri-feedback last pruned
PRUNE_EVERY = 86400.0
FORGED = (
    "rules and verdicts reach kiri-decide only from kiri-feedback's store: "
    "one on its input is not passed on"
)
LABELS = {"dismiss": "suppress", "confirm": "alert"}  # what the person says KIRI should have done
# kiri-act reports a decision's deliveries before it passes the next decision on, so one this many
# decisions old has had all its outcomes (with room for a few kiri-acts merged into one input).
PENDING_WINDOW = 1000


@dataclasses.dataclass
class Pending:
    """A delivered decision awaiting an ok outcome: the how-manieth it was, and its failures."""

    seq: int
    decision: Decision
    failures: int = 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiri-feedback",
        description="Record delivered alerts; turn verdicts into rules, retrains and examples.",
    )
    add_version_option(p)
    p.add_argument(
        "--after",
        type=int,
        default=suppression.AFTER,
        metavar="N",
        help="write a suppression rule once a pattern is dismissed N times "
        "(N+1 for a pattern of one token)",
    )
    p.add_argument(
        "--expires",
        type=float,
        default=suppression.EXPIRES,
        metavar="S",
        help="suppression rules expire after S seconds (default 7 days)",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=0.5,
        metavar="S",
        help="check the store for new verdicts every S seconds",
    )
    p.add_argument(
        "--nerve-every",
        type=int,
        default=5,
        metavar="N",
        help="ask for the Nerve atom to be trained again after every N verdicts",
    )
    add_stream_options(p)
    return p


class Learner:
    """Everything kiri-feedback does with one store and one output stream."""

    def __init__(self, store: Store, stream: Stream, args: argparse.Namespace, log: Log) -> None:
        self.store, self.stream, self.args, self.log = store, stream, args, log
        self.pending: dict[str, Pending] = {}  # by id, oldest first
        self.decisions = self.undelivered = 0
        self.seen = int(store.get_state(CURSOR, "0"))
        self.rules_seen = int(store.get_state(RULES_CURSOR, "0"))
        self.settings = suppression.Settings(args.after, args.expires)
        suppression.save_settings(store, self.settings)  # for `kiri feedback` to say what happens
        self.pruned_at = -PRUNE_EVERY  # read from the store at the first poll
        self.nerve = Recorder("nerve")
        self.verdicts = nerve.verdicts_recorded()
        self.trainings = Trainings(log)
        self.encode = msgspec.json.Encoder().encode

    # -- alerts -------------------------------------------------------------------------------

    def on_decision(self, decision: Decision) -> None:
        if decision.action in ("ok", "retrain", "spawn"):
            return  # alerts are what people judge; a retrain is no alert
        self.decisions += 1
        self.pending.pop(decision.id, None)  # a repeat goes to the back
        self.pending[decision.id] = Pending(self.decisions, decision)
        self._forget_settled()

    def _forget_settled(self) -> None:
        """Forget, oldest first, the decisions PENDING_WINDOW old: every outcome of theirs has
        come, none ok, so however many deliveries fail, what is kept stays bounded."""
        while self.pending:
            oldest = next(iter(self.pending.values()))
            if self.decisions - oldest.seq < PENDING_WINDOW:
                return
            del self.pending[oldest.decision.id]
            if oldest.failures:  # not a decision no sink takes, but one every sink failed
                self.undelivered += 1
                self.log.info(
                    "alert_undelivered",
                    id=oldest.decision.id,
                    failures=oldest.failures,
                    undelivered=self.undelivered,
                )

    def on_outcome(self, outcome: Outcome) -> None:
        pending = self.pending.get(outcome.id)
        if pending is None:
            return
        if not outcome.ok:
            pending.failures += 1  # not delivered (yet): a later sink's outcome may succeed
            return
        del self.pending[outcome.id]
        decision = pending.decision
        named = named_culprits(decision.culprits, decision.threshold)
        self.store.record_alert(decision, pattern_key(named))
        self.log.info("alert_recorded", id=decision.id, action=decision.action, atom=decision.atom)

    # -- verdicts -----------------------------------------------------------------------------

    def poll(self) -> None:
        self.trainings.tick()  # a waiting retrain starts once a slot is free
        for v in self.store.verdicts_after(self.seen):
            self.on_verdict(v)
            self.seen = v.seq
            self.store.set_state(CURSOR, str(v.seq))
        self._pass_rule_changes()
        self._prune()

    def _pass_rule_changes(self) -> None:
        """Every rule made or deleted since the last one passed on, to kiri-decide."""
        for rule in self.store.rule_changes_after(self.rules_seen):
            self.stream.emit(rule.record())
            if rule.deleted is None:
                self.log.info("rule_written", rule=rule.id, atom=rule.atom, match=rule.match)
            else:
                self.log.info("rule_deleted", rule=rule.id, atom=rule.atom, by=rule.deleted_by)
            self.rules_seen = rule.seq
            self.store.set_state(RULES_CURSOR, str(rule.seq))

    def _prune(self) -> None:
        """Once a day (counted in the store, across restarts; the first a day after the first
        start), remove what [retention] no longer keeps."""
        now = time.time()
        if now < self.pruned_at + PRUNE_EVERY:
            return
        self.pruned_at = float(self.store.get_state(PRUNED, "0")) or now
        if now < self.pruned_at + PRUNE_EVERY:
            self.store.set_state(PRUNED, str(self.pruned_at))
            return
        self.pruned_at = now
        self.store.set_state(PRUNED, str(now))
        try:
            removed = retention.prune(self.store, now)
        except OSError as e:
            self.log.warning("prune_failed", error=str(e))
            return
        if removed.any():
            self.log.info("pruned", **removed.counts())

    def on_verdict(self, v: VerdictRow) -> None:
        decision = msgspec.json.decode(v.decision, type=Decision)
        self._nerve_example(v, decision)
        if v.normal:
            self._new_normal(v, decision)
        suppression.review(self.store, v.host, v.atom, v.pattern, self.settings)
        self.log.info("verdict", alert=v.alert, verdict=v.verdict, normal=v.normal)

    def _new_normal(self, v: VerdictRow, decision: Decision) -> None:
        tokens = decision.tokens
        if tokens:
            path = examples_path(decision.atom)
            private_dir(path.parent)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as f:
                f.write(
                    msgspec.json.encode({"tokens": tokens, "alert": v.alert, "ts": v.ts}) + b"\n"
                )
        self._retrain(decision.atom, f"alert {v.alert} is the new normal")

    def _nerve_example(self, v: VerdictRow, decision: Decision) -> None:
        """What the person says KIRI should have done in that state, for Nerve to learn."""
        state = decision.state or {
            decision.atom: decision.surprise / decision.threshold if decision.threshold else 0.0
        }
        label = "retrain" if v.normal else LABELS[v.verdict]
        obs = nerve.example(state, decision.ts, decision.host, label, "verdict", v.alert)
        # Beside the policy's example of the decision (at its ts), and one per alert: where
        # training reads them, a later verdict's example replaces this one (same host and time).
        obs.ts = decision.ts + 0.001
        obs.meta["pattern"] = v.pattern
        self.nerve.append(obs.ts, self.encode(obs) + b"\n")
        self.verdicts += 1
        if self.args.nerve_every > 0 and self.verdicts % self.args.nerve_every == 0:
            self._retrain("nerve", f"{self.verdicts} verdicts to learn from")

    def _retrain(self, atom: str, why: str) -> None:
        try:
            started = self.trainings.request(atom)
        except (OSError, ValueError) as e:
            self.log.warning("retrain_not_started", atom=atom, why=why, error=str(e))
            return
        self.log.info("retrain_requested", atom=atom, why=why, detail=started)


def _not_forged(record: Record) -> str | None:
    """Why a record on the input must not reach the feedback FIFO (this stage's output)."""
    return FORGED if isinstance(record, (Rule, Verdict)) else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    log = setup_logging("feedback")

    def body() -> None:
        with Store() as store, Stream(log, fmt=args.format, dead_letter=args.dead_letter) as stream:
            learner = Learner(store, stream, args, log)
            learner.poll()
            stream.every(args.poll, learner.poll)
            kinds = (Decision, Outcome, Rule, Verdict)
            for record, _raw in stream.records(0, consumes=kinds, check=_not_forged):
                if isinstance(record, Decision):
                    learner.on_decision(record)
                elif isinstance(record, Outcome):
                    learner.on_outcome(record)
            learner.trainings.close()

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
