"""An atom's model over its life: a warm-up, a first model, then retrains as its data grows.

kiri-atom --learn runs it. Every observation the atom sees is recorded for training. The first
model is trained after the warm-up, and after that whenever kiri.atoms.retraining's schedule says
so: each time the observations seen have doubled while the model is young, then every `every`, on
the most recent `window` of them. One run at a time, in a low-priority process
(kiri.atoms.training_jobs), while the current model goes on scoring; kiri-atom swaps the new one in
when its weights land. How far the atom has got survives a restart, and is written to
$KIRI_HOME/atoms/ATOM/lifecycle.json for `kiri status` to say.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from kiri.atoms.retraining import DEFAULT, Schedule
from kiri.atoms.training_jobs import BUSY, start_training, train_log
from kiri.home.paths import kiri_home, private_dir, valid_name
from kiri.home.recordings import Recorder
from kiri.wire.log import Log
from kiri.wire.records import Obs

if TYPE_CHECKING:  # kiri status reads the state without numpy
    from kiri.atoms.detector import Calibration

DAY = 86_400.0
SAVE_EVERY = 10.0  # seconds between writes of the state while nothing else changes


class State(msgspec.Struct):
    """What an atom's life cycle has done so far."""

    phase: str = "warming up"  # warming up, scoring or retraining
    seen: int = 0  # observations seen since the atom first learnt
    needed: int = 0  # observations the warm-up needs before the first model
    trained_at: int = 0  # `seen` when the current model's training started
    model: str = ""  # the current model's id
    trained_on: int = 0  # how many observations it learnt from
    span: float = 0.0  # and the seconds they covered
    threshold: float = 0.0
    early: bool = False
    landed: list[float] = []  # when each model of the last day landed (Unix time)
    updated: float = 0.0


def state_path(atom: str) -> Path:
    return kiri_home() / "atoms" / valid_name(atom) / "lifecycle.json"


def read_state(atom: str) -> State | None:
    """The atom's life cycle as its kiri-atom last wrote it; None if it never learnt."""
    try:
        return msgspec.json.decode(state_path(atom).read_bytes(), type=State)
    except (OSError, msgspec.MsgspecError):
        return None


def describe(state: State) -> str:
    """`warming up 47/120`, `model 3 of the day, trained on 6 h, threshold 7.2`, `retraining`."""
    if not state.model:
        return f"{state.phase} {min(state.seen, state.needed)}/{state.needed}"
    model = (
        f"model {len(state.landed)} of the day, trained on {_span(state.span)}, "
        f"threshold {state.threshold:.1f}" + (", early" if state.early else "")
    )
    return f"retraining ({model})" if state.phase == "retraining" else model


def _span(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


class LifeCycle:
    """--learn: records what the atom sees, and trains it when the schedule says so."""

    def __init__(
        self, atom: str, warmup: int, out: Path, log: Log, schedule: Schedule = DEFAULT
    ) -> None:
        self.atom, self.out, self.log, self.schedule = atom, out, log, schedule
        self.state = read_state(atom) or State(needed=warmup)
        self.state.needed = self.state.needed or warmup
        self.recorder = Recorder(atom)
        self.proc: subprocess.Popen[bytes] | None = None
        self._encode = msgspec.json.Encoder().encode

    def observe(self, obs: Obs) -> None:
        self.recorder.append(obs.ts, self._encode(obs) + b"\n")
        self.state.seen += 1
        self._check_run()
        if self.proc is None and self._due():
            self._start()
        elif not self.state.model and self.state.seen % max(1, self.state.needed // 10) == 0:
            self.log.info("warming_up", observations=self.state.seen, needed=self.state.needed)
            self._save()
        elif time.time() - self.state.updated >= SAVE_EVERY:
            self._save()

    def landed(self, model: str, calibration: Calibration) -> None:
        """A model is in use: the first one found at start, or one a retrain wrote."""
        s, cal = self.state, calibration
        if model == s.model:
            return
        if not s.trained_at:  # weights made elsewhere (`kiri train`): count from what they saw
            s.seen = s.trained_at = max(s.seen, cal.observations)
        now = time.time()
        s.landed = [t for t in s.landed if now - t < DAY] + [now]
        s.model, s.trained_on, s.span = model, cal.observations, cal.span
        s.threshold, s.early = cal.threshold, cal.early
        s.phase = "scoring"  # a run that wrote its weights is done, even before it exits
        self._save()

    def _due(self) -> bool:
        s = self.state
        if not s.model:
            return s.seen >= s.needed
        return self.schedule.due(s.seen, s.trained_at)

    def _start(self) -> None:
        s = self.state
        self.proc = start_training(self.atom, self.out, window=self.schedule.window)
        s.trained_at, s.phase = s.seen, "retraining"
        self.log.info(
            "training_started",
            observations=s.seen,
            window=self.schedule.window,
            pid=self.proc.pid,
            log=str(train_log(self.atom)),
        )
        self._save()

    def _check_run(self) -> None:
        """Notice a training run that has ended; a failed one is tried again later, after as
        many observations as the schedule would have waited."""
        if self.proc is None or self.proc.poll() is None:
            return
        status, self.proc = self.proc.returncode, None
        s = self.state
        s.phase = "scoring" if s.model else "warming up"
        if status == BUSY:
            self.log.info("training_busy", atom=self.atom)
        elif status:
            self.log.error("training_failed", status=status, log=str(train_log(self.atom)))
            if not s.model:
                s.needed = s.seen + s.needed  # another warm-up window's worth
        self._save()

    def _save(self) -> None:
        self.state.updated = time.time()
        path = state_path(self.atom)
        private_dir(path.parent)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(self.state))
        os.replace(tmp, path)  # whole or not at all, for `kiri status`

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
        self.recorder.close()
