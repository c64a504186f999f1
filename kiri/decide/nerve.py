"""kiri-decide's side of Nerve: asking the trained meta-atom what to do about a host's state,
and recording the default policy's decisions as its examples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from kiri.atoms.nerve_examples import ACTIONS, example, verdicts_recorded
from kiri.wire.log import Log
from kiri.wire.records import Decision

if TYPE_CHECKING:
    from kiri.atoms.detector import Detector


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
        from kiri.atoms.nerve import advise

        p = advise(detector, state, ts)
        action = max(p, key=p.__getitem__)
        self.log.info("nerve_advised", p={a: round(x, 3) for a, x in p.items()}, state=dict(state))
        return action if p[action] >= self.confidence else None

    def _load(self) -> Detector | None:
        from kiri.atoms.detector import Detector  # numpy: only once Nerve is trained
        from kiri.home.paths import weights_path
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
