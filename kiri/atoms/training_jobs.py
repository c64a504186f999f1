"""Background training: `kiri train ATOM` in its own low-priority process.

kiri-atom --learn starts one after its warm-up and whenever its schedule says so
(kiri.atoms.lifecycle); kiri-feedback starts one for a "new normal" verdict and for Nerve, and
kiri-act for a `retrain` decision, both through Trainings. One run at a time per atom: a second
one exits. Either way kiri-atom picks up the new weights by itself when the file lands. The
run's output goes to $KIRI_HOME/logs/train-ATOM.log (mode 0600); a run of Trainings' that fails
is logged as a notice (`training_failed`, with the tail of its output), which kiri-supervise
sends on to the person as an alert.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from kiri.home.paths import kiri_home, private_dir, valid_name
from kiri.wire.log import Log, tail


def train_log(atom: str) -> Path:
    return private_dir(kiri_home() / "logs") / f"train-{valid_name(atom)}.log"


BUSY = 75  # the exit status of a run that found another one training the same atom
TAIL_BYTES = 1 << 16  # bytes of a failed run's output read for its last lines


def start_training(atom: str, out: Path | None = None, window: int = 0) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "kiri.atoms.training_jobs", valid_name(atom)]
    if out:
        cmd += ["--out", str(out)]
    if window:
        cmd += ["--window", str(window)]
    log = os.open(train_log(atom), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(log, 0o600)  # an older file may have been created with a wider mode
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        os.close(log)


MAX_RUNNING = 2  # a training takes a core and tens of MiB; the pipeline keeps the rest


class Trainings:
    """The runs one stage starts, which never pile up and are never waited for: at most one
    per atom at a time and MAX_RUNNING at once. A request for an atom already training, or
    already waiting, is coalesced into one follow-up run after it, which learns from the same
    recordings and whatever came since; a request beyond the cap waits likewise. Waiting runs
    start at the next tick() with a slot free. An atom that does not exist is refused at once."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.waiting: dict[str, None] = {}  # atoms due a run, in the order asked (an ordered set)
        self.output: dict[str, int] = {}  # where each run's output starts in its atom's log

    def request(self, atom: str) -> str:
        """Train the atom now or as soon as there is room: what happened, for people;
        ValueError when the atom cannot be trained at all."""
        if problem := missing_atom(atom):
            raise ValueError(f"cannot train {atom!r}: {problem}")
        self.tick()
        if proc := self.running.get(atom):
            self.waiting[atom] = None
            return f"already training {atom} (pid {proc.pid}): one more run follows it"
        if len(self.running) >= MAX_RUNNING:
            self.waiting[atom] = None
            return f"waiting: {MAX_RUNNING} trainings are running, the most at once"
        proc = self._start(atom)
        return f"training {atom} (pid {proc.pid}, log {train_log(atom)})"

    def _start(self, atom: str) -> subprocess.Popen[bytes]:
        path = train_log(atom)
        self.output[atom] = path.stat().st_size if path.exists() else 0
        proc = self.running[atom] = start_training(atom)
        return proc

    def tick(self) -> None:
        """Forget the runs that have ended, telling of those that failed; start waiting ones
        while there is room."""
        for atom, proc in list(self.running.items()):
            if (status := proc.poll()) is not None:
                del self.running[atom]
                if status not in (0, BUSY):
                    self._failed(atom, status)
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

    def _failed(self, atom: str, status: int) -> None:
        """A notice of a run that failed, with the end of what it wrote."""
        path = train_log(atom)
        try:
            with open(path, "rb") as f:
                start = max(self.output.get(atom, 0), f.seek(0, os.SEEK_END) - TAIL_BYTES)
                f.seek(start)
                output = tail(f.read().decode("utf-8", "replace"))
        except OSError as e:
            output = f"cannot read {path}: {e.strerror}"
        last = output.rpartition("\n")[2]
        reason = f"exit status {status}" + (f": {last}" if last else "")
        self.log.notify(
            "training_failed", f"training {atom} failed ({reason})", output, atom=atom, log=path
        )

    def close(self) -> None:
        # A run under way finishes on its own (under kiri-supervise, it ends with its stage's
        # process group); its weights land atomically. Runs still waiting are not started.
        if self.waiting:
            self.log.warning("trainings_not_started", atoms=list(self.waiting))
        self.running.clear()


def missing_atom(atom: str) -> str:
    """Why `kiri train ATOM` cannot train this atom at all, or "" when it may: a built-in
    atom, one config.toml defines, or one with weights or recordings to fit a schema from."""
    try:
        valid_name(atom)
    except ValueError as e:
        return str(e)
    from kiri.atoms.registry import known_atoms  # numpy, which kiri-act otherwise never needs
    from kiri.home.paths import weights_path

    home = kiri_home()
    if atom in known_atoms() or weights_path(atom).exists():
        return ""
    if any((home / "data" / atom).glob("*.ndjson")):
        return ""
    return (
        f"no atom {atom}: it is not built in, config.toml does not define it, and it has "
        f"no weights and no recordings in {home}"
    )


def main(argv: list[str] | None = None) -> int:  # noqa: RET503 (execv does not return)
    """`kiri train ATOM ARG…` at a lower priority, one run at a time per atom: training must
    not starve the pipeline, and two runs would only race to write the same weights.

    The run lowers its own priority. A preexec_fn would do it in the child between fork and
    exec, which is unsafe in a parent with threads, and kiri-atom has numpy's."""
    args = sys.argv[1:] if argv is None else argv
    os.nice(10)
    lock = private_dir(kiri_home() / "atoms" / valid_name(args[0])) / "training.lock"
    with open(lock, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"already training {args[0]}: this run is not needed", flush=True)
            return BUSY
        # `kiri train` in this process, holding the lock: the flock lives as long as the fd
        os.set_inheritable(held.fileno(), True)
        os.execv(sys.executable, [sys.executable, "-m", "kiri.cli", "train", *args])


if __name__ == "__main__":
    sys.exit(main())
