"""One line of text per record, for people reading a stage's output on a terminal."""

from __future__ import annotations

import time
from typing import Any

from kiri.records import Decision, Obs, Outcome, Rule, Score, Verdict


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "--:--:--"


def _number(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.3g}"


def render(rec: Any) -> str:
    """Render any record kind as one human line."""
    head = f"{_clock(rec.ts)} {type(rec).__struct_config__.tag:<8}"
    if isinstance(rec, Obs):
        values = " ".join(f"{k}={_number(v)}" for k, v in rec.values.items())
        return f"{head} {rec.atom}@{rec.host} {values}"
    if isinstance(rec, Score):
        return (
            f"{head} {rec.atom}@{rec.host} surprise {rec.surprise:.2f} "
            f"(threshold {rec.threshold:.2f}) {' '.join(rec.tokens)}"
        )
    if isinstance(rec, Decision):
        return f"{head} {rec.action.upper():<8} {rec.atom}@{rec.host} {rec.summary}".rstrip()
    if isinstance(rec, Outcome):
        status = "ok" if rec.ok else f"FAILED: {rec.error}"
        return f"{head} {rec.action} via {rec.sink}: {status}"
    if isinstance(rec, Verdict):
        return f"{head} {rec.verdict} alert {rec.alert} by {rec.by or rec.source} {rec.note}".rstrip()
    if isinstance(rec, Rule):
        return f"{head} {rec.action} {rec.atom} when {' '.join(rec.match)}: {rec.reason}"
    raise TypeError(f"cannot render {type(rec).__name__}")
