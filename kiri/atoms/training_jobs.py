"""Background training: `kiri train ATOM` in its own low-priority process.

kiri-atom --learn starts one after its warm-up and whenever its schedule says so
(kiri.atoms.lifecycle); kiri-act starts one for a `retrain` decision. One run at a time per
atom: a second one exits.
Either way kiri-atom picks up the new weights by itself when the file lands. The run's output
goes to $KIRI_HOME/logs/train-ATOM.log (mode 0600).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from kiri.home.paths import kiri_home, private_dir, valid_name


def train_log(atom: str) -> Path:
    return private_dir(kiri_home() / "logs") / f"train-{valid_name(atom)}.log"


BUSY = 75  # the exit status of a run that found another one training the same atom


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
