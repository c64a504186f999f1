"""The log sink: every non-`ok` decision, appended to $KIRI_HOME/logs/alerts.ndjson.

This is the record of what KIRI decided, so it takes every action, suppressed ones included
(they are logged, not notified). The file is private (0600, in a 0700 directory), opened once
with O_APPEND, and each decision is one write of one line, so lines from several kiri-act
processes never interleave. Each delivery is also logged as a JSON line on stderr.
"""

from __future__ import annotations

import argparse
import os

from kiri.act.sinks import Sink, SinkError
from kiri.home.paths import kiri_home, private_dir
from kiri.wire.log import Log
from kiri.wire.records import Decision
from kiri.wire.render import alert_text, short_id

TOLD = frozenset({"alert", "resolve", "suppress"})  # the actions a person reads the text of


class LogSink(Sink):
    name = "log"

    def __init__(self, log: Log) -> None:
        self.log = log
        try:
            self.path = private_dir(kiri_home() / "logs") / "alerts.ndjson"
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            raise SinkError(f"cannot open {e.filename}: {e.strerror}") from e
        os.fchmod(self.fd, 0o600)  # an older file may have been created with a wider mode

    def accepts(self, decision: Decision) -> bool:
        return True

    def deliver(self, decision: Decision, line: bytes) -> str:
        try:
            written = os.write(self.fd, line)
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
        os.close(self.fd)


HELP = "$KIRI_HOME/logs/alerts.ndjson, every action"


def open_sink(args: argparse.Namespace, log: Log) -> LogSink:
    return LogSink(log)
