"""Text for people: a line per record for a stage's output on a terminal, and an alert as
every sink shows it (alert_text: a headline, then what each culprit did against its usual
range, every line with the alert's short id)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from kiri.wire.patterns import named_culprits
from kiri.wire.records import Culprit, Decision, Obs, Outcome, Record, Rule, Score, Verdict

DETAIL_LINES = 10  # of a decision's detail (a failed stage's last words) shown with it
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


# -- alerts -----------------------------------------------------------------------------------

HEADS = {"resolve": "RESOLVED", "suppress": "SUPPRESSED"}  # an alert's head is its severity


def alert_text(d: Decision) -> str:
    """An alert, resolve or suppressed alert as people read it, on every sink: alert_lines()."""
    return "\n".join(alert_lines(d))


def alert_lines(d: Decision) -> list[str]:
    """`a1b2c3 WARNING pulse@vm: load 0.31 per CPU (L1) is low for vm (surprise …)`, then
    for an alert one line per culprit it names, `a1b2c3   load 0.31 per CPU is low for vm
    (usually 0.9–1.4 per CPU)`, and the last lines of its detail (what a failed stage said).
    Every line starts with the short id that `kiri feedback` takes, and is stripped of control
    characters."""
    sid = short_id(d.id)
    atoms = ", ".join(d.atoms or [d.atom])
    lines = [f"{sid} {headword(d)} {atoms}@{d.host}: {summary(d)}"]
    if d.action in ("alert", "suppress"):
        lines += [f"{sid}   {line}" for line in culprit_lines(d)]
    lines += [f"{sid}   | {line}" for line in d.detail.splitlines()[-DETAIL_LINES:]]
    return [printable(line) for line in lines]


def headword(d: Decision) -> str:
    """`CRITICAL`, `WARNING` or `INFO` for an alert, `RESOLVED`, `SUPPRESSED`, …"""
    if d.action == "alert":
        return (d.severity or "alert").upper()
    return HEADS.get(d.action, d.action.upper())


def culprit_lines(d: Decision) -> list[str]:
    """One line per culprit the alert names, explained (with the atom's name when the alert is
    several atoms'); an alert from before decisions explained theirs, its named tokens and z."""
    if d.explained:
        several = len({c.atom for c in d.explained}) > 1
        return [(f"{c.atom}: " if several else "") + culprit_text(c, d.host) for c in d.explained]
    return [
        f"{t} (z {z:.1f})" for t, z in d.culprits if t in named_culprits(d.culprits, d.threshold)
    ]


def culprit_text(c: Culprit, host: str = "") -> str:
    """`load 0.31 per CPU is low for vm (usually 0.9–1.4 per CPU)`: the value, which way it
    moved against training, and its usual range there, as far as they are known."""
    where = f" for {host}" if host else ""
    text = f"{describe(c.label or c.token, c.unit, c.value)} is {c.direction or 'unusual'}{where}"
    if c.low is not None and c.high is not None:
        text += f" (usually {usual_range(c.low, c.high, c.unit)})"
    return text


def culprits_said(named: Sequence[Culprit]) -> str:
    """`CPU 97% (C9) and memory 95% (M9) are high and load 0.2 per CPU (L0) is low`: an alert's
    culprits in its summary, those that moved the same way together."""
    groups: dict[str, list[str]] = {}
    for c in named:
        what = f"{describe(c.label, c.unit, c.value)} ({c.token})" if c.label else c.token
        groups.setdefault(c.direction or "unusual", []).append(what)
    return joined(
        [f"{joined(w)} {'is' if len(w) == 1 else 'are'} {how}" for how, w in groups.items()]
    )


def usual_range(low: float, high: float, unit: str) -> str:
    """`0.9–1.4 per CPU`; `0%` for a field that sat still."""
    lo, hi = amount(low), amount(high)
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def joined(parts: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


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
    return f"{label} {amount(value)}{unit}"


def amount(x: float) -> str:
    """`97`, `1.97`, `0.31`, `0.0012`: a value as people read it, to about two decimals."""
    if abs(x) >= 10 or float(x).is_integer():
        return f"{x:.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}".rstrip("0").rstrip(".")
    return f"{x:.2g}"


def _clock(ts: float) -> str:
    return local_time(ts, "%H:%M:%S") if ts else "--:--:--"


def _number(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:.3g}"


def _decision_line(head: str, d: Decision) -> str:
    """An alert, resolve or suppressed alert as every sink tells it; any other decision in one
    line."""
    if d.action in ("alert", "resolve", "suppress"):
        return f"{head} " + ("\n" + " " * (len(head) + 1)).join(alert_lines(d))
    return f"{head} {d.action.upper():<8} {d.atom}@{d.host} {d.summary}".rstrip()


def render(rec: Record) -> str:
    """Render any record kind as one human line (an alert, resolve or suppressed alert as its
    lines on every sink)."""
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
        return _decision_line(head, rec)
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
