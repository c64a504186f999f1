"""The retrain sink: carries out `retrain` decisions by training the atom in the background.

At most one run per atom at a time; a request while one runs is reported, not queued, since the
run already under way trains on the same recordings. kiri-atom reloads the weights by itself.
"""

from __future__ import annotations

import subprocess

from kiri.records import Decision
from kiri.sinks import Sink, SinkError
from kiri.training_jobs import start_training, train_log


class RetrainSink(Sink):
    name = "retrain"

    def __init__(self) -> None:
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def accepts(self, decision: Decision) -> bool:
        return decision.action == "retrain"

    def deliver(self, decision: Decision, line: bytes) -> str:
        proc = self.running.get(decision.atom)
        if proc is not None and proc.poll() is None:
            return f"already training {decision.atom} (pid {proc.pid})"
        try:
            proc = start_training(decision.atom)
        except (OSError, ValueError) as e:
            raise SinkError(f"cannot start training {decision.atom}: {e}") from e
        self.running[decision.atom] = proc
        return f"training {decision.atom} (pid {proc.pid}, log {train_log(decision.atom)})"

    def close(self) -> None:
        # A run that is under way finishes on its own: its weights land atomically.
        self.running.clear()
