"""Nerve: the meta-atom that learns from the other atoms and from people's verdicts what to do.

An observation is the joint state of one host when something was decided: each atom's surprise
relative to its threshold (1.0 is at the threshold), bucketed, with the hour of day as context,
and last the action token, the target: ok, alert, suppress or retrain. Examples come from two
places: kiri-feedback writes one per verdict (what the person said KIRI should have done), and
kiri-decide writes the default policy's decisions, which teach the rest where nobody said
anything (kiri/atoms/nerve_examples.py makes both). Once trained, kiri-decide asks Nerve for
p(action | state, hour) before it notifies (kiri/decide/nerve.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from kiri.atoms.nerve_examples import ACTIONS, ATOMS, OTHER, state_values
from kiri.atoms.registry import AtomSpec
from kiri.atoms.schema import Field, Schema
from kiri.wire.records import Obs

if TYPE_CHECKING:
    from kiri.atoms.detector import Detector

RATIO_TOP = 4.0  # ratios from 4x the threshold up share the last bucket

SCHEMA = Schema(
    [
        Field("hour", "H", 24, 0, 24, context=True, label="hour"),
        *(Field(a, f"{a}:", 8, 0, RATIO_TOP, label=a) for a in (*ATOMS, OTHER)),
        Field("action", "A", len(ACTIONS), 0, len(ACTIONS), label="action"),
    ]
)


def training_set(observations: Sequence[Obs]) -> list[Obs]:
    """Verdict examples, plus the policy's decisions on alerts nobody gave a verdict on."""
    judged = {o.meta.get("alert") for o in observations if o.meta.get("source") == "verdict"}
    return [
        o
        for o in observations
        if o.meta.get("source") == "verdict" or o.meta.get("alert") not in judged
    ]


SPEC = AtomSpec(
    "nerve",
    SCHEMA,
    n_layer=1,
    n_embd=16,
    n_head=4,
    block_size=8,
    steps=500,
    training_set=training_set,
)


def advise(detector: Detector, state: Mapping[str, float], ts: float) -> dict[str, float]:
    """p(action | state, hour) from a trained Nerve detector."""
    values = state_values(state, ts)
    values["action"] = 0.0  # a placeholder: only the tokens before it are read
    ids = detector.schema.encode(values, {})
    logits = detector.engine.next_logits(ids[:-2])  # the position that predicts the action
    p = np.exp(logits - logits.max())
    p /= p.sum()
    first = detector.schema.groups[-2].start
    return {a: float(p[first + i]) for i, a in enumerate(ACTIONS)}
