"""KIRI_HOME: where KIRI keeps its state, and how it writes files that must survive a crash."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def valid_name(name: str, what: str = "atom") -> str:
    """Atom and pipeline names become path parts, so only plain lowercase names are allowed."""
    if not NAME.match(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use lowercase letters, digits, '-' and '_', "
            "starting with a letter"
        )
    return name


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents with mode 0700; return it."""
    if not path.is_dir():
        private_dir(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is masked by the umask
    return path


def kiri_home() -> Path:
    """$KIRI_HOME, default ~/.kiri. Not created here: a command that only reads (`kiri status`,
    `kiri alerts`, `--version`, `--dry-run`, …) leaves no trace, and whatever writes creates the
    directories it writes into with private_dir (mode 0700)."""
    return Path(os.environ.get("KIRI_HOME") or Path.home() / ".kiri").expanduser()


def data_dir(atom: str) -> Path:
    """Where an atom's recorded observations live: $KIRI_HOME/data/ATOM/."""
    return private_dir(kiri_home() / "data" / valid_name(atom))


def scores_dir(atom: str) -> Path:
    """Where an atom's recorded scores live (kiri-atom --learn or --record, read by `kiri
    dashboard`): $KIRI_HOME/data/ATOM/scores/, beside its observations, never trained on."""
    return private_dir(data_dir(atom) / "scores")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it (mode 0600).

    The temporary file is named `.NAME.PID.XXXXXXXX.tmp` after the writing process, so what a
    writer killed mid-write left behind can be told from a write under way."""
    prefix = f".{path.name}.{os.getpid()}."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def weights_path(atom: str) -> Path:
    """$KIRI_HOME/atoms/ATOM/weights.json"""
    return kiri_home() / "atoms" / valid_name(atom) / "weights.json"


def examples_path(atom: str) -> Path:
    """Observations people called "the new normal", as token documents, trained on every time."""
    return kiri_home() / "atoms" / valid_name(atom) / "normal.ndjson"


def alert_log_path() -> Path:
    """$KIRI_HOME/logs/alerts.ndjson: every non-ok decision, as the log sink writes them."""
    return kiri_home() / "logs" / "alerts.ndjson"
