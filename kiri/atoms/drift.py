"""Drift: task scope drift, read from the task log kept with `kiri task` (kiri/home/tasks.py).

One observation per window of the clock (an hour by default): the tasks added, the tasks
completed and the project switches within it, and the tasks still open at its end. The window's
local hour is context: a quiet 3 a.m. is not a quiet 11 a.m. An observation's time is its
window's end. (Not the weekday: each hour of each weekday comes once a week, and on a few weeks
of history the model learns those few windows by heart and finds every new week surprising.)

Windows follow the local wall clock: they divide the day evenly and start at midnight, so the
window "09:00-10:00" means the same thing every day (on the days the clocks change, the window
around the change is an hour shorter or longer).

The counts get one token per value (A3 is three tasks added), clamped at the top (A15 is fifteen
or more): per hour they are small integers, and a quantile fit over values that are mostly 0, 1
and 2 would merge most of its buckets. How large a backlog is ordinary depends on the person, so
the backlog's buckets are fitted from their history, with tail tokens for one far beyond it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from kiri.atoms.registry import AUTO_LEVELS, AUTO_TAILS, AtomSpec
from kiri.atoms.schema import Field, Schema
from kiri.home.tasks import TaskHistory
from kiri.wire.records import Obs

DAY = 86400

# H0–H23 (context), A0–A15 D0–D15 S0–S9, B0–B17: 84 tokens + BOS
SCHEMA = Schema(
    [
        Field("hour", "H", 24, 0, 24, context=True, label="hour"),
        Field("added", "A", 16, 0, 16, label="tasks added"),
        Field("done", "D", 16, 0, 16, label="tasks done"),
        Field("switches", "S", 10, 0, 10, label="project switches"),
        Field("backlog", "B", AUTO_LEVELS, auto=True, tails=AUTO_TAILS, label="open tasks"),
    ]
)
SPEC = AtomSpec("drift", SCHEMA, n_layer=1, n_embd=32, n_head=4, block_size=8)


def check_window(seconds: float) -> float:
    """A window length that divides the day into whole seconds; ValueError otherwise."""
    if seconds < 1 or seconds > DAY or seconds != int(seconds) or DAY % seconds:
        raise ValueError(
            f"a window must divide the day evenly (30m, 1h, 2h, 1d…), not {seconds:g} s"
        )
    return seconds


def window_of(ts: float, seconds: float) -> tuple[float, float]:
    """The window holding time ts: its start and end, as Unix times."""
    wall = dt.datetime.fromtimestamp(ts)
    midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    k = int((wall - midnight).total_seconds() // seconds)
    start = midnight + dt.timedelta(seconds=k * seconds)
    return start.timestamp(), (start + dt.timedelta(seconds=seconds)).timestamp()


def windows(since: float, until: float, seconds: float) -> Iterator[tuple[float, float]]:
    """Every whole window from the one holding `since` to the last that ends by `until`."""
    start, end = window_of(since, seconds)
    while end <= until:
        yield start, end
        start, end = window_of(end, seconds)


def observation(history: TaskHistory, start: float, end: float, host: str) -> Obs:
    """The observation of one window of the task log."""
    values: dict[str, float | None] = {
        "hour": float(dt.datetime.fromtimestamp(start).hour),
        **history.window(start, end),
    }
    return Obs(ts=end, atom="drift", host=host, values=values, meta={"window": f"{end - start:g}"})
