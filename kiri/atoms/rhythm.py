"""Rhythm: a person's work patterns (sampled by kiri/collect/rhythm.py). How long since they last
touched the keyboard or mouse, how many commits they made in the last hour, and how long their
current focus block has lasted, all conditioned on the hour of the day and the day of the week, so
that a burst of work at 3 a.m. on a Sunday is surprising for a person whose history says they
sleep then.

Where no idle source answers (a headless server, a desktop that keeps no idle hint), idle is
*unknown*: `idle_known` is 0 and `idle` and `streak` hold the placeholder 0. Unknown is its own
token, K0, which the model reads before the idle and streak tokens, so an unknown idle is never
taken for "idle", nor silently for "active".
"""

from __future__ import annotations

from kiri.atoms.registry import AtomSpec
from kiri.atoms.schema import Field, Schema

# H0–H23 W0–W6 (context) K0–K1 I0–I5 G0–G5 F0–F5: 51 tokens + BOS.
SCHEMA = Schema(
    [
        Field("hour", "H", 24, 0, 24, context=True, label="hour"),
        Field("weekday", "W", 7, 0, 7, context=True, label="weekday"),  # Monday 0 … Sunday 6
        # 1 when an idle source answered; 0: idle unknown, and idle and streak read 0
        Field("idle_known", "K", 2, 0, 2, label="idle known"),
        # minutes since the last input, 5-minute buckets: I0 at the keyboard, I5 away 25+ min
        Field("idle", "I", 6, 0, 30, label="idle", unit=" min"),
        Field("commits", "G", 6, 0, 6, label="commits in the last hour"),  # G5: 5 or more
        # minutes since the last break, half-hour buckets: F5 is 2.5 hours or more
        Field("streak", "F", 6, 0, 180, label="focus streak", unit=" min"),
    ]
)
SPEC = AtomSpec("rhythm", SCHEMA, n_layer=2, n_embd=32, n_head=4, block_size=8)
