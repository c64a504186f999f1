"""The log sink: every non-`ok` decision, appended to $KIRI_HOME/logs/alerts.ndjson.

This is the record of what KIRI decided, so it takes every action, suppressed ones included
(they are logged, not notified). The file is private (0600, in a 0700 directory), opened once
with O_APPEND, and each decision is one write of one line, so lines from several kiri-act
processes never interleave. Each delivery is also logged as a JSON line on stderr. `kiri prune`
rewrites the file without its old lines (kiri/home/retention.py) under an exclusive lock on it;
each write takes that lock and, when the file it has open is no longer the one at the path,
opens the new one first.
"""

from __future__ import annotations

import argparse
import fcntl
import os

from kiri.act.sinks import Sink, SinkError
from kiri.home.paths import alert_log_path, private_dir
from kiri.wire.log import Log
from kiri.wire.records import Decision
from kiri.wire.render import alert_text, short_id

TOLD = frozenset({"alert", "resolve", "suppress"})  # the actions a person reads the text of


class LogSink(Sink):
    name = "log"

    def __init__(self, log: Log) -> None:
        self.log = log
        self.path = alert_log_path()
        self.fd = self._open()

    def _open(self) -> int:
        try:
            private_dir(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            raise SinkError(f"cannot open {e.filename}: {e.strerror}") from e
        os.fchmod(fd, 0o600)  # an older file may have been created with a wider mode
        return fd

    def _current(self) -> None:
        """Hold the lock on the file at the path, reopening it if pruning replaced it."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            replaced = os.stat(self.path).st_ino != os.fstat(self.fd).st_ino
        except FileNotFoundError:
            replaced = True
        if replaced:
            os.close(self.fd)
            self.fd = -1  # until the new one is open
            self.fd = self._open()
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def accepts(self, decision: Decision) -> bool:
        return True

    def deliver(self, decision: Decision, line: bytes) -> str:
        try:
            self._current()
            try:
                written = os.write(self.fd, line)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError as e:
            raise SinkError(f"cannot write {self.path}: {e.strerror}") from e
        if written != len(line):
            raise SinkError(f"short write to {self.path} ({written} of {len(line)} bytes)")
        level = self.log.warning if decision.action == "alert" else self.log.info
        level(
            decision.action,
            id=decision.id,
            atom=decision.atom,
            host=decision.host,
            severity=decision.severity,
            summary=decision.summary,
            text=alert_text(decision) if decision.action in TOLD else "",
            short=short_id(decision.id),
        )
        return str(self.path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


HELP = "$KIRI_HOME/logs/alerts.ndjson, every action"


def open_sink(args: argparse.Namespace, log: Log) -> LogSink:
    return LogSink(log)
