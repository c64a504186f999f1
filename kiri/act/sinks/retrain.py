"""The retrain sink: carries out `retrain` decisions by training the atom in the background.

Trainings never pile up and kiri-act never waits for one: at most one run per atom at a time,
and at most MAX_RUNNING at once. A request for an atom already training, or already waiting,
is coalesced into one follow-up run after it, which learns from the same recordings and
whatever came since; a request beyond the cap waits likewise. A waiting run starts once a slot
is free, as the sink sees the next decision (kiri-decide sends one for every score). A request
for an atom that does not exist is refused at once, and not retried. kiri-atom reloads the
weights by itself.
"""

from __future__ import annotations

import subprocess

from kiri.act.sinks import Sink, SinkError
from kiri.atoms.training_jobs import missing_atom, start_training, train_log
from kiri.wire.records import Decision
from kiri.wire.stream import Log

MAX_RUNNING = 2  # a training takes a core and tens of MiB; the pipeline keeps the rest


class RetrainSink(Sink):
    name = "retrain"

    def __init__(self, log: Log) -> None:
        self.log = log
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.waiting: dict[str, None] = {}  # atoms due a run, in the order asked (an ordered set)

    def accepts(self, decision: Decision) -> bool:
        return decision.action == "retrain"

    def deliver(self, decision: Decision, line: bytes) -> str:
        atom = decision.atom
        if problem := missing_atom(atom):
            raise SinkError(f"cannot train {atom!r}: {problem}", retry=False)
        self._start_waiting()
        if proc := self.running.get(atom):
            self.waiting[atom] = None
            return f"already training {atom} (pid {proc.pid}): one more run follows it"
        if len(self.running) >= MAX_RUNNING:
            self.waiting[atom] = None
            return f"waiting: {MAX_RUNNING} trainings are running, the most at once"
        try:
            proc = self._start(atom)
        except (OSError, ValueError) as e:
            raise SinkError(f"cannot start training {atom}: {e}") from e
        return f"training {atom} (pid {proc.pid}, log {train_log(atom)})"

    def observe(self, decision: Decision) -> None:
        self._start_waiting()

    def _start(self, atom: str) -> subprocess.Popen[bytes]:
        proc = self.running[atom] = start_training(atom)
        return proc

    def _start_waiting(self) -> None:
        """Forget the runs that have ended; start waiting ones while there is room."""
        for atom, proc in list(self.running.items()):
            if proc.poll() is not None:
                del self.running[atom]
        for atom in [a for a in self.waiting if a not in self.running]:
            if len(self.running) >= MAX_RUNNING:
                return
            del self.waiting[atom]
            try:
                proc = self._start(atom)
            except (OSError, ValueError) as e:
                self.log.error("training_not_started", atom=atom, error=str(e))
                continue
            self.log.info("training_started", atom=atom, pid=proc.pid, log=str(train_log(atom)))

    def close(self) -> None:
        # A run under way finishes on its own (under kiri-supervise, it ends with kiri-act's
        # process group); its weights land atomically. Runs still waiting are not started.
        if self.waiting:
            self.log.warning("trainings_not_started", atoms=list(self.waiting))
        self.running.clear()
