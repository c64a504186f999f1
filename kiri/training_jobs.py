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


def start_training(atom: str, out: Path | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "kiri.cli", "train", valid_name(atom)]
    if out:
        cmd += ["--out", str(out)]
    with open(train_log(atom), "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=lambda: os.nice(10),  # training must not starve the pipeline
        )
