"""Nerve's examples: a host's state when something was decided (each atom's surprise over its
threshold, and the hour) and the action taken or wanted, as an observation of the nerve atom.
kiri-decide records the policy's, kiri-feedback people's; neither needs the model for it."""

from __future__ import annotations

import time
from collections.abc import Mapping

from kiri.home.paths import data_dir
from kiri.wire.records import Obs

ATOMS = ("pulse", "rhythm", "drift", "mikrotik")  # each has its own field; the rest share OTHER
OTHER = "other"
ACTIONS = ("ok", "alert", "suppress", "retrain")


def state_values(state: Mapping[str, float], ts: float) -> dict[str, float | None]:
    """The schema's values for a host's state (atom -> surprise / threshold) at time ts."""
    values: dict[str, float | None] = {a: float(state.get(a, 0.0)) for a in ATOMS}
    others = [r for a, r in state.items() if a not in ATOMS]
    values[OTHER] = float(max(others, default=0.0))
    values["hour"] = float(time.localtime(ts).tm_hour)
    return values


def example(
    state: Mapping[str, float], ts: float, host: str, action: str, source: str, alert: str
) -> Obs:
    """A labelled example: the state, and the action that was (or should have been) taken."""
    values = state_values(state, ts)
    values["action"] = float(ACTIONS.index(action))
    return Obs(
        ts=ts,
        atom="nerve",
        host=host,
        values=values,
        meta={"label": action, "source": source, "alert": alert},
    )


def verdicts_recorded() -> int:
    """How many verdict examples Nerve has to learn from."""
    return sum(
        line.count(b'"source":"verdict"')
        for path in data_dir("nerve").glob("*.ndjson")
        for line in [path.read_bytes()]
    )
