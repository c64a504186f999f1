"""Training progress: microgpt's step lines in a pipe or a file, a live bar on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports `step {s:4d} / {n:4d} | loss {x:.4f}` for step 1, every `every` steps and the
    last."""

    def __init__(self, steps: int, every: int, out: TextIO | None = None) -> None:
        self.steps, self.every = steps, max(every, 1)
        self.out = out or sys.stdout
        self.bar = self.out.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, step: int, loss: float) -> None:
        s = step + 1
        line = f"step {s:4d} / {self.steps:4d} | loss {loss:.4f}"
        if not self.bar:
            if s == 1 or s % self.every == 0 or s == self.steps:
                print(line, file=self.out)
            return
        now = time.monotonic()
        if s != self.steps and now - self._drawn < 0.05:
            return  # redraw at most 20 times a second
        self._drawn = now
        done = s / self.steps
        bar = "#" * int(30 * done)
        self.out.write(f"\r[{bar:<30}] {line} | {now - self._started:5.1f} s")
        if s == self.steps:
            self.out.write("\n")
        self.out.flush()
