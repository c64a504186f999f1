"""Text for people: one line per record for a stage's output on a terminal, and the parts of
an alert that every sink shows (its summary and its top culprits)."""

from __future__ import annotations

import time

from kiri.wire.records import Decision, Obs, Outcome, Record, Rule, Score, Verdict

TOP_CULPRITS = 3  # culprits shown with an alert
SHORT_ID = 6  # hex digits of an alert's id that people see and type (1 in 16 million collide)


def printable(text: str) -> str:
    """Text from a record with every control character (escapes, newlines) shown as `?`."""
    return "".join(c if c.isprintable() else "?" for c in text)


def short_id(alert_id: str) -> str:
    """The part of an alert's id shown to people; `kiri feedback` takes it, or any longer prefix."""
    return alert_id[:SHORT_ID]


def summary(d: Decision) -> str:
    """A decision's summary, or its figures when it has none."""
    return d.summary or f"surprise {d.surprise:.1f}, threshold {d.threshold:.1f}"


def top_culprits(d: Decision) -> str:
    """`M9 (12.1), C9 (9.4), S2 (3.1)`: the most surprising tokens, each with its z."""
    return ", ".join(f"{token} ({z:.1f})" for token, z in d.culprits[:TOP_CULPRITS])


def local_time(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A record's time on this machine's clock; `?` for one no calendar holds (a store written
    before records' times were checked may hold one)."""
    try:
        return time.strftime(fmt, time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return "?"


def describe(label: str, unit: str, value: float | None) -> str:
    """`CPU 97%`: a field as a person names it, with its raw value."""
    if value is None:
        return label
    shown = f"{value:.0f}" if abs(value) >= 10 or float(value).is_integer() else f"{value:.2f}"
    return f"{label} {shown}{unit}"


def _clock(ts: float) -> str:
    return local_time(ts, "%H:%M:%S") if ts else "--:--:--"


def _number(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.3g}"


def render(rec: Record) -> str:
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
        return (
            f"{head} {rec.verdict} alert {rec.alert} by {rec.by or rec.source} {rec.note}".rstrip()
        )
    if isinstance(rec, Rule):
        return f"{head} {rec.action} {rec.atom} when {' '.join(rec.match)}: {rec.reason}"
    raise TypeError(f"cannot render {type(rec).__name__}")
