"""How kiri-act delivers one decision to one sink, and tries a failed one again later.

A delivery is tried at once, and --retries times more after a short backoff (0.5 s, 1 s, ...):
enough for a blip. One that still fails for a reason worth waiting out (no answer, a 503; not a
refusal, SinkError(retry=False)) is kept in the outbox (kiri/act/outbox.py) and reported
`ok: false`, its detail saying so. The stream goes on: the outbox is tried again from the
stream's tick, each sink's entries oldest first with a backoff of its own (from --outbox-retry,
doubling to MAX_BACKOFF), and a new decision for a sink with entries waiting is kept behind them
untried, so a receiver gets them in order. A late delivery is reported as the decision again,
then its `ok` outcome, so kiri-feedback records it however long ago (or before which restart)
the decision first came by. An entry not delivered within --outbox-keep is given up: a last
`ok: false` outcome says so. The outbox is in the store, so it outlives kiri-act: on start,
whatever waits for its sinks is tried at once. Every outcome, whichever sink it is of, is also
told to each sink's `on_outcome` (the metrics sink counts them).
"""

from __future__ import annotations

import time
import traceback
from typing import NamedTuple

import msgspec

from kiri.act.outbox import Entry, Outbox
from kiri.act.sinks import Sink, SinkError
from kiri.wire.backoff import Backoff
from kiri.wire.log import Log
from kiri.wire.records import UNDECODABLE, Decision, Outcome
from kiri.wire.redact import redact
from kiri.wire.render import local_time
from kiri.wire.stream import Stream

FIRST_BACKOFF = 0.5  # seconds before the first quick retry; doubled for each one after
KEEP = 24 * 3600.0  # seconds an outbox entry is tried for (--outbox-keep): a night's outage
FIRST_RETRY = 5.0  # seconds before an outbox entry's first retry (--outbox-retry)
BATCH = 50  # outbox entries tried per tick at most: a backlog never holds up the stream long


class Attempt(NamedTuple):
    """How delivering went: its outcome, the attempts made in all, whether trying again later
    may help, and how long the receiver asked to be left alone first (None: it did not say)."""

    outcome: Outcome
    tried: int = 0
    retry: bool = False
    wait: float | None = None


def deliver(
    stream: Stream,
    sink: Sink,
    decision: Decision,
    line: bytes,
    retries: int,
    log: Log,
    tried: int = 0,
) -> Attempt:
    """Deliver one decision to one sink, retrying with backoff (or the wait the receiver
    asked for) unless the sink says retrying cannot help; say how it went. `tried` counts the
    attempts made before, in the outbox."""
    error, wait, retry = "", None, True
    backoff = Backoff(FIRST_BACKOFF)
    for attempt in range(retries + 1):
        if attempt:
            stream.flush()  # outcomes already made go downstream while this sink waits
            if not stream.sleep(backoff.failed(error, wait)):
                break  # asked to stop: report the failure now
        tried += 1
        try:
            detail = sink.deliver(decision, line)
        except Exception as e:  # a sink must never stop the stream, whatever it raises
            error = _error(e, sink)
            log.warning(
                "sink_failed",
                sink=sink.name,
                id=decision.id,
                attempt=tried,
                error=error,
                **_traceback(e, sink),
            )
            retry = not isinstance(e, SinkError) or e.retry
            if not retry:
                break
            wait = e.wait if isinstance(e, SinkError) else None
            continue
        return Attempt(outcome(decision, sink, ok=True, detail=detail), tried)
    failed = outcome(decision, sink, ok=False, error=error, detail=f"attempts: {tried}")
    return Attempt(failed, tried, retry, wait)


class Deliveries:
    """Every delivery of one kiri-act: tried now, and what failed kept and tried again later
    (the module's docstring says how). Without an outbox (keep 0, or no store), a failure is
    reported and that is all."""

    def __init__(
        self,
        stream: Stream,
        sinks: list[Sink],
        outbox: Outbox | None,
        log: Log,
        *,
        retries: int = 2,
        keep: float = KEEP,
        first_retry: float = FIRST_RETRY,
    ) -> None:
        self.stream, self.sinks, self.log = stream, sinks, log
        self.outbox = outbox if keep > 0 else None
        self.retries, self.keep, self.first_retry = retries, keep, first_retry
        self.backoffs = {sink.name: Backoff(first_retry) for sink in sinks}
        self.due = dict.fromkeys(self.backoffs, 0.0)  # monotonic; on start, due at once
        self.waiting: dict[str, int] = {}
        self.busy = False  # a delivery is under way: a tick while it waits tries nothing
        if self.outbox is not None:
            self._expire()
            self.waiting = {k: v for k, v in self.outbox.counts().items() if k in self.due}
            if self.waiting:
                log.info("outbox_waiting", entries=self.waiting)

    def deliver(self, sink: Sink, decision: Decision, line: bytes) -> Outcome:
        """Deliver now, or keep it in the outbox behind what waits there for the sink."""
        if self.outbox is not None and self.waiting.get(sink.name):
            error = f"{self.waiting[sink.name]} earlier deliveries wait in the outbox"
            kept = self._keep(sink, decision, line, Attempt(outcome(decision, sink, error=error)))
            return self._told(kept)
        self.busy = True
        try:
            attempt = deliver(self.stream, sink, decision, line, self.retries, self.log)
        finally:
            self.busy = False
        if self.outbox is None or not attempt.retry or attempt.outcome.ok:
            return self._told(attempt.outcome)
        self.due[sink.name] = time.monotonic() + self.backoffs[sink.name].failed(
            attempt.outcome.error, attempt.wait
        )
        return self._told(self._keep(sink, decision, line, attempt))

    def _told(self, done: Outcome) -> Outcome:
        """Tell every sink how a delivery went (most do not listen); return it, for the stream."""
        for sink in self.sinks:
            try:
                sink.on_outcome(done)
            except Exception as e:  # counting a delivery is never worth stopping the stream for
                self.log.warning("sink_failed", sink=sink.name, id=done.id, error=_error(e, sink))
        return done

    def _keep(self, sink: Sink, decision: Decision, line: bytes, attempt: Attempt) -> Outcome:
        assert self.outbox is not None
        failed, tried = attempt.outcome, attempt.tried
        entry = Entry(decision.id, sink.name, line.rstrip(b"\n"), time.time(), tried, failed.error)
        if not self.outbox.keep(entry):  # it came again while its first delivery waits
            failed.detail = f"attempts: {tried}; waiting in the outbox already"
            return failed
        self.waiting[sink.name] = self.waiting.get(sink.name, 0) + 1
        until = local_time(entry.queued + self.keep, "%Y-%m-%d %H:%M")
        failed.detail = f"attempts: {tried}; kept in the outbox, tried until {until}"
        waiting = self.waiting[sink.name]
        self.log.info("outbox_kept", sink=sink.name, id=decision.id, waiting=waiting)
        return failed

    # -- later: from the stream's tick ----------------------------------------------------------

    def tick(self) -> None:
        """Try again what waits for each sink whose backoff is over; let each sink do its
        background work. Never while a delivery is under way (its backoff's sleep ticks)."""
        if self.busy:
            return
        self.busy = True
        try:
            for sink in self.sinks:
                _tick(sink, self.log)
                if self.waiting.get(sink.name) and time.monotonic() >= self.due[sink.name]:
                    self._retry(sink)
        finally:
            self.busy = False

    def _retry(self, sink: Sink) -> None:
        """The sink's entries in order, until one fails again (then the sink's backoff)."""
        assert self.outbox is not None
        for entry in self.outbox.waiting(sink.name, BATCH):
            if self.stream.stopping:
                return
            decision = _decision(entry)
            if decision is None or time.time() - entry.queued >= self.keep:
                self._give_up(sink, entry, decision)
                continue
            attempt = deliver(
                self.stream, sink, decision, entry.line + b"\n", 0, self.log, entry.attempts
            )
            entry.attempts += 1
            if attempt.outcome.ok:
                self._delivered(sink, entry, decision, attempt.outcome)
                continue
            entry.error = attempt.outcome.error
            if not attempt.retry:  # refused now: trying again cannot help
                self._give_up(sink, entry, decision)
                continue
            self.outbox.tried(entry)
            wait = self.backoffs[sink.name].failed(entry.error, attempt.wait)
            self.due[sink.name] = time.monotonic() + wait
            return
        self.backoffs[sink.name].succeeded()

    def _delivered(self, sink: Sink, entry: Entry, decision: Decision, done: Outcome) -> None:
        self._forget(entry)
        took = _took(time.time() - entry.queued)
        done.detail += f"; from the outbox, after {entry.attempts} attempts in {took}"
        self.stream.emit_raw(decision, entry.line)  # for kiri-feedback: the decision again
        self.stream.emit(self._told(done))
        self.log.info("outbox_delivered", sink=sink.name, id=entry.id, attempts=entry.attempts)

    def _give_up(self, sink: Sink, entry: Entry, decision: Decision | None) -> None:
        self._forget(entry)
        took = _took(time.time() - entry.queued)
        detail = f"given up after {entry.attempts} attempts in {took}"
        self.log.warning(
            "outbox_given_up", sink=sink.name, id=entry.id, detail=detail, error=entry.error
        )
        if decision is not None:
            failed = outcome(decision, sink, ok=False, error=entry.error, detail=detail)
            self.stream.emit(self._told(failed))

    def _forget(self, entry: Entry) -> None:
        assert self.outbox is not None
        self.outbox.remove(entry)
        self.waiting[entry.sink] -= 1

    def _expire(self) -> None:
        """Drop what waits, longer than it would have been tried, for sinks not used here."""
        assert self.outbox is not None
        gone = self.outbox.expire(time.time() - self.keep, list(self.due))
        if gone:
            self.log.warning(
                "outbox_expired",
                entries=len(gone),
                sinks=sorted({e.sink for e in gone}),
                reason="kept longer than --outbox-keep for sinks this kiri-act does not have",
            )


def outcome(
    decision: Decision, sink: Sink, *, ok: bool = False, error: str = "", detail: str = ""
) -> Outcome:
    return Outcome(
        ts=time.time(),
        id=decision.id,
        action=decision.action,
        sink=sink.name,
        ok=ok,
        error=error,
        detail=detail,
    )


def observe(sink: Sink, decision: Decision, log: Log) -> None:
    """Show a sink a decision it does not deliver; a failure there is logged, nothing more."""
    try:
        sink.observe(decision)
    except Exception as e:  # showing a status is never worth stopping the stream for
        log.warning("sink_failed", sink=sink.name, id=decision.id, error=_error(e, sink))


def _tick(sink: Sink, log: Log) -> None:
    try:
        sink.tick()
    except Exception as e:  # background work is never worth stopping the stream for
        log.warning("sink_failed", sink=sink.name, error=_error(e, sink))


def _decision(entry: Entry) -> Decision | None:
    """The entry's decision; None for a line that is none (the store was edited by hand)."""
    try:
        return msgspec.json.decode(entry.line, type=Decision)
    except UNDECODABLE:
        return None


def _took(seconds: float) -> str:
    """A wait as people say it: 40 s, 12 min, 3.5 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _error(e: Exception, sink: Sink) -> str:
    """One line for an outcome: a SinkError's own words, anything else with its type; never
    the sink's secrets."""
    text = str(e) if isinstance(e, SinkError) else f"{type(e).__name__}: {e}"
    return " ".join(redact(text, sink.secrets).split())


def _traceback(e: Exception, sink: Sink) -> dict[str, str]:
    """The log's `exception` for a failure the sink did not expect (a SinkError's own words
    say all there is), without the sink's secrets."""
    if isinstance(e, SinkError):
        return {}
    return {"exception": redact("".join(traceback.format_exception(e)), sink.secrets)}
