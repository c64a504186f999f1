"""Drift: task scope drift, read from the task log kept with `kiri task` (kiri/home/tasks.py;
sampled by kiri/collect/drift.py).

One observation per window of the clock (an hour by default): the tasks added, the tasks
completed and the project switches within it, and the tasks still open at its end. The window's
local hour is context: a quiet 3 a.m. is not a quiet 11 a.m. An observation's time is its
window's end. (Not the weekday: each hour of each weekday comes once a week, and on a few weeks
of history the model learns those few windows by heart and finds every new week surprising.)

The counts get one token per value (A3 is three tasks added), clamped at the top (A15 is fifteen
or more): per hour they are small integers, and a quantile fit over values that are mostly 0, 1
and 2 would merge most of its buckets. How large a backlog is ordinary depends on the person, so
the backlog's buckets are fitted from their history, with tail tokens for one far beyond it.
"""

from __future__ import annotations

from kiri.atoms.registry import AUTO_LEVELS, AUTO_TAILS, AtomSpec
from kiri.atoms.schema import Field, Schema

# H0–H23 (context), A0–A15 D0–D15 S0–S9, B0–B17: 84 tokens + BOS
SCHEMA = Schema(
    [
        Field("hour", "H", 24, 0, 24, context=True, label="hour"),
        Field("added", "A", 16, 0, 16, label="tasks added"),
        Field("done", "D", 16, 0, 16, label="tasks done"),
        Field("switches", "S", 10, 0, 10, label="project switches"),
        Field(
            "backlog",
            "B",
            AUTO_LEVELS,
            auto=True,
            tails=AUTO_TAILS,
            label="open tasks",
            worse="high",
        ),
    ]
)
SPEC = AtomSpec("drift", SCHEMA, n_layer=1, n_embd=32, n_head=4, block_size=8)
