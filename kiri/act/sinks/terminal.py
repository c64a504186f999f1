"""The terminal sink: alert and resolve lines for a person watching, and a live status line.

An alert is told as every sink tells it (kiri.wire.render.alert_lines), after the time: its
headline, then a line per culprit it names.

It writes to the controlling terminal (/dev/tty), so the lines reach the person even when stderr
goes to a log file; without one (a service, a test) it falls back to stderr. On a terminal, `ok`
decisions redraw one status line in place, and every other line first clears it so the two
never collide; elsewhere `ok` prints nothing. A suppressed decision gets a dim line but no
outcome: it is logged, not notified. Text from records is stripped of control characters, so a
host name or summary cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import TextIO

from kiri.act.sinks import Sink, SinkError
from kiri.wire.log import Log
from kiri.wire.records import Decision
from kiri.wire.render import alert_lines, printable

CLEAR = "\r\x1b[K"  # back to the first column, erase to the end of the line
RESET = "\x1b[0m"
STYLE = {"alert": "\x1b[1;31m", "resolve": "\x1b[32m", "suppress": "\x1b[2m"}


class TerminalSink(Sink):
    name = "terminal"

    def __init__(self) -> None:
        self.out, self.where = _open_terminal()
        self.live = self.out.isatty()
        self.status_shown = False

    def deliver(self, decision: Decision, line: bytes) -> str:
        self._write(self._lines(decision))
        return self.where

    def observe(self, decision: Decision) -> None:
        if decision.action == "suppress":
            self._write(self._lines(decision))
        elif decision.action == "ok" and self.live:
            self._status(decision)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.status_shown:
                self.out.write("\n")  # keep the last status, and leave the cursor below it
                self.out.flush()
            if self.out is not sys.stderr:
                self.out.close()

    def _lines(self, d: Decision) -> str:
        """The alert as every sink tells it (kiri.wire.render.alert_lines), after the time."""
        head, *culprits = alert_lines(d)
        line = f"{_clock(d.ts)} {head}"
        if self.live:
            line = STYLE[d.action] + line + RESET
        return "\n".join([line, *(f"{'':9}{c}" for c in culprits)])

    def _status(self, d: Decision) -> None:
        numbers = f"surprise {d.surprise:.2f} / threshold {d.threshold:.2f}"
        state = "unusual" if d.surprise > d.threshold else "normal"
        if d.incident:  # an alert is still open: say so, or "normal" would mislead
            state += ", incident open"
        self._put(f"{CLEAR}{_clock(d.ts)} {_who(d)} {numbers} {state}")
        self.status_shown = True

    def _write(self, text: str) -> None:
        self._put((CLEAR if self.status_shown else "") + text + "\n")
        self.status_shown = False

    def _put(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except OSError as e:
            raise SinkError(f"cannot write to {self.where}: {e.strerror}") from e


def _open_terminal() -> tuple[TextIO, str]:
    """The controlling terminal, else stderr; and the name outcomes give it."""
    try:
        return open("/dev/tty", "w", encoding="utf-8", errors="replace"), "/dev/tty"
    except OSError:  # no controlling terminal: a service, a pipeline under a supervisor, a test
        return sys.stderr, "stderr"


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def _who(d: Decision) -> str:
    return f"{printable(d.atom)}@{printable(d.host)}"


HELP = "this terminal (stderr), with a live status line"


def open_sink(args: argparse.Namespace, log: Log) -> TerminalSink:
    return TerminalSink()
