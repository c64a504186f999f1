"""Background training: `kiri train ATOM` in its own low-priority process.

kiri-atom --learn starts one after its warm-up; kiri-act starts one for a `retrain` decision.
Either way kiri-atom picks up the new weights by itself when the file lands. The run's output
goes to $KIRI_HOME/logs/train-ATOM.log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kiri.home import kiri_home, private_dir, valid_name


def train_log(atom: str) -> Path:
    return private_dir(kiri_home() / "logs") / f"train-{valid_name(atom)}.log"


def start_training(atom: str, out: Path | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "kiri.training_jobs", valid_name(atom)]
    if out:
        cmd += ["--out", str(out)]
    with open(train_log(atom), "ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def main(argv: list[str] | None = None) -> int:
    """`kiri train ARG…` at a lower priority: training must not starve the pipeline.

    The run lowers its own priority. A preexec_fn would do it in the child between fork and
    exec, which is unsafe in a parent with threads, and kiri-atom has numpy's."""
    os.nice(10)
    from kiri.cli import main as kiri

    return kiri(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
