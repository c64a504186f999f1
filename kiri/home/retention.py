"""What KIRI keeps, and for how long: [retention] in config.toml, 30 days of each by default.

    [retention]
    recordings = 30   # days of $KIRI_HOME/data/ATOM/YYYY-MM-DD.ndjson and of the atom's
                      # scores in data/ATOM/scores/ (Nerve's examples stay)
    alert_log = 30    # days of $KIRI_HOME/logs/alerts.ndjson
    store = 30        # days of alerts and their verdicts in kiri.db; ended rules too

0 keeps everything of that kind. `kiri prune` prunes now (`--dry-run`: only says what it would
remove), and kiri-feedback does it once a day. A recording is removed a whole day at a time, once
the newest of its day is older than the limit; the alert log is rewritten without its older
lines, atomically and under the lock the log sink writes under (kiri/act/sinks/log.py).
"""

from __future__ import annotations

import fcntl
import os
import time

import msgspec

from kiri.home.config import load_config
from kiri.home.paths import alert_log_path, atomic_write, kiri_home
from kiri.home.store import Pruned, Store

DAY = 86400.0
KEPT = ("nerve",)  # Nerve's examples are people's verdicts: few, and what it learns from


class Removed(msgspec.Struct):
    """What pruning removed (or, in a dry run, would remove)."""

    recordings: list[str] = []  # as ATOM/YYYY-MM-DD
    alert_log_lines: int = 0
    store: Pruned = msgspec.field(default_factory=Pruned)

    def any(self) -> bool:
        return bool(self.recordings or self.alert_log_lines or any(self.counts().values()))

    def counts(self) -> dict[str, int]:
        return {
            "recordings": len(self.recordings),
            "alert_log_lines": self.alert_log_lines,
            **msgspec.structs.asdict(self.store),
        }


def prune(store: Store | None, now: float, dry_run: bool = False) -> Removed:
    """Remove what [retention] no longer keeps; with no store (none made yet), only files."""
    keep = load_config().retention
    removed = Removed()
    if keep.recordings:
        removed.recordings = prune_recordings(now - keep.recordings * DAY, dry_run)
    if keep.alert_log:
        removed.alert_log_lines = prune_alert_log(now - keep.alert_log * DAY, dry_run)
    if keep.store and store is not None:
        removed.store = store.prune(now - keep.store * DAY, dry_run)
    return removed


def prune_recordings(before: float, dry_run: bool = False) -> list[str]:
    """Remove each atom's day files, of observations and of scores, whose whole day is older
    than `before`; named ATOM/YYYY-MM-DD and ATOM/scores/YYYY-MM-DD."""
    last_day = time.strftime("%Y-%m-%d", time.localtime(before))  # the first day kept
    data = kiri_home() / "data"
    removed = []
    for path in sorted([*data.glob("*/*.ndjson"), *data.glob("*/scores/*.ndjson")]):
        name = path.relative_to(data).with_suffix("").as_posix()
        atom, day = name.split("/")[0], path.stem
        if atom in KEPT or not _is_day(day) or day >= last_day:
            continue
        if not dry_run:
            path.unlink(missing_ok=True)
        removed.append(name)
    return removed


def prune_alert_log(before: float, dry_run: bool = False) -> int:
    """Drop the alert log's lines from before `before`; how many. Lines that are no record with
    a time stay: pruning never loses what it cannot read."""
    path = alert_log_path()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    with os.fdopen(fd, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # the log sink waits, then writes into the new file
        lines = f.read().splitlines(keepends=True)
        kept = [line for line in lines if not _older(line, before)]
        dropped = len(lines) - len(kept)
        if dropped and not dry_run:
            atomic_write(path, b"".join(kept))
    return dropped


class _Stamped(msgspec.Struct):
    ts: float | None = None


_stamp = msgspec.json.Decoder(_Stamped).decode


def _older(line: bytes, before: float) -> bool:
    try:
        ts = _stamp(line).ts
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return False
    return ts is not None and ts < before


def _is_day(name: str) -> bool:
    try:
        time.strptime(name, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def describe(removed: Removed, dry_run: bool) -> list[str]:
    """What `kiri prune` says: one line per kind of thing, what was removed from where."""
    verb = "would remove" if dry_run else "removed"
    home = kiri_home()
    lines = []
    if removed.recordings:
        first, last = removed.recordings[0], removed.recordings[-1]
        span = first if first == last else f"{first} … {last}"
        lines.append(
            f"{verb} {len(removed.recordings)} day(s) of recordings from {home / 'data'} ({span})"
        )
    if removed.alert_log_lines:
        lines.append(f"{verb} {removed.alert_log_lines} line(s) of {alert_log_path()}")
    rows = {k: v for k, v in msgspec.structs.asdict(removed.store).items() if v}
    if rows:
        what = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in rows.items())
        lines.append(f"{verb} {what} from {home / 'kiri.db'}")
    return lines or ["nothing to prune: everything is within [retention]"]
