"""An atom's recorded observations: $KIRI_HOME/data/ATOM/YYYY-MM-DD.ndjson, one file a day."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kiri.home import data_dir


class Recorder:
    """Appends encoded records to the atom's file for the local date of each record."""

    def __init__(self, atom: str) -> None:
        self.dir: Path = data_dir(atom)
        self._day = ""
        self._fd = -1

    def append(self, ts: float, line: bytes) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(ts))
        if day != self._day:
            self.close()
            path = self.dir / f"{day}.ndjson"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._day = day
        os.write(self._fd, line)  # one O_APPEND write per record: whole lines only

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
