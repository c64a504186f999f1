"""The retrain sink: carries out `retrain` decisions (Nerve's choice) by training the atom in the
background, through kiri.atoms.training_jobs.Trainings: never piling up, never waited for, a
request for an atom that does not exist refused at once and not retried. kiri-atom reloads the
weights by itself."""

from __future__ import annotations

from kiri.act.sinks import Sink, SinkError
from kiri.atoms.training_jobs import Trainings
from kiri.wire.log import Log
from kiri.wire.records import Decision


class RetrainSink(Sink):
    name = "retrain"

    def __init__(self, log: Log) -> None:
        self.trainings = Trainings(log)

    def accepts(self, decision: Decision) -> bool:
        return decision.action == "retrain"

    def deliver(self, decision: Decision, line: bytes) -> str:
        try:
            return self.trainings.request(decision.atom)
        except ValueError as e:
            raise SinkError(str(e), retry=False) from None
        except OSError as e:
            raise SinkError(f"cannot start training {decision.atom}: {e}") from e

    def observe(self, decision: Decision) -> None:
        self.trainings.tick()  # kiri-decide sends a decision for every score

    def tick(self) -> None:
        self.trainings.tick()  # and when none come, a run that ended is still reported

    def close(self) -> None:
        self.trainings.close()
