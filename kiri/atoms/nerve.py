"""Nerve: the meta-atom that learns from the other atoms and from people's verdicts what to do.

An observation is the joint state of one host when something was decided: each atom's surprise
relative to its threshold (1.0 is at the threshold), bucketed, with the hour of day as context,
and last the action token, the target: ok, alert, suppress or retrain. Examples come from two
places: kiri-feedback writes one per verdict (what the person said KIRI should have done), and
kiri-decide writes the default policy's decisions, which teach the rest where nobody said
anything. Once trained, kiri-decide asks Nerve for p(action | state, hour) before it notifies.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from kiri.atoms import AtomSpec
from kiri.atoms.schema import Field, Schema
from kiri.wire.records import Decision, Obs
from kiri.wire.stream import Log

if TYPE_CHECKING:
    from kiri.atoms.detector import Detector

ATOMS = ("pulse", "rhythm", "drift", "mikrotik")  # each has its own field; the rest share OTHER
OTHER = "other"
ACTIONS = ("ok", "alert", "suppress", "retrain")
RATIO_TOP = 4.0  # ratios from 4x the threshold up share the last bucket

SCHEMA = Schema(
    [
        Field("hour", "H", 24, 0, 24, context=True, label="hour"),
        *(Field(a, f"{a}:", 8, 0, RATIO_TOP, label=a) for a in (*ATOMS, OTHER)),
        Field("action", "A", len(ACTIONS), 0, len(ACTIONS), label="action"),
    ]
)


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


def verdicts_recorded() -> int:
    """How many verdict examples Nerve has to learn from."""
    from kiri.home.paths import data_dir

    return sum(
        line.count(b'"source":"verdict"')
        for path in data_dir("nerve").glob("*.ndjson")
        for line in [path.read_bytes()]
    )


class NerveAdvisor:
    """kiri-decide's line to Nerve: the action it would take for a host's state, when it is
    trained on at least `minimum` verdicts and gives that action at least `confidence`.
    Its weights are loaded again whenever `kiri train nerve` replaces them."""

    def __init__(self, minimum: int, confidence: float, log: Log) -> None:
        self.minimum, self.confidence, self.log = minimum, confidence, log
        self._detector: Detector | None = None
        self._mtime = 0.0

    def __call__(self, state: Mapping[str, float], ts: float) -> str | None:
        detector = self._load()
        if detector is None:
            return None
        p = advise(detector, state, ts)
        action = max(p, key=p.__getitem__)
        self.log.info("nerve_advised", p={a: round(x, 3) for a, x in p.items()}, state=dict(state))
        return action if p[action] >= self.confidence else None

    def _load(self) -> Detector | None:
        from kiri.atoms import weights_path
        from kiri.atoms.detector import Detector
        from kiri.model.weights import WeightsError

        path = weights_path("nerve")
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime != self._mtime:
            self._mtime, self._detector = mtime, None
            verdicts = verdicts_recorded()
            if verdicts < self.minimum:
                self.log.info("nerve_not_yet", verdicts=verdicts, needed=self.minimum)
                return None
            try:
                self._detector = Detector.load(path)
                self.log.info("nerve_loaded", model=self._detector.id, verdicts=verdicts)
            except WeightsError as e:
                self.log.warning("nerve_unusable", reason=str(e))
        return self._detector


class PolicyExamples:
    """The default policy's decisions, recorded as Nerve's examples: every notable one, and the
    `ok`s that carry their host's state (one every few minutes, QUIET_STATE_EVERY in
    kiri.decide.policy), so Nerve also learns what needs no alert."""

    def __init__(self) -> None:
        from kiri.home.recordings import Recorder

        self.recorder = Recorder("nerve")
        self.encode = msgspec.json.Encoder().encode

    def __enter__(self) -> PolicyExamples:
        return self

    def __exit__(self, *exc: object) -> None:
        self.recorder.close()

    def add(self, decision: Decision) -> None:
        if decision.by != "policy" or decision.action not in ACTIONS or not decision.state:
            return
        if decision.action == "ok" and decision.incident:
            return  # an alert held or still open: not a state that needs nothing
        obs = example(
            decision.state, decision.ts, decision.host, decision.action, "policy", decision.id
        )
        self.recorder.append(obs.ts, self.encode(obs) + b"\n")
