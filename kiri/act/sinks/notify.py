"""The notify sink: a desktop notification for each alert and resolve.

On Linux it runs `notify-send` (urgency critical for a critical alert, normal for a warning, low
for a resolve); on macOS `osascript`. The notifier is found on PATH once, at start: the
platform's own first, then the other. Where neither exists, one log line says so at start and
every delivery succeeds with the detail "skipped: no notifier", so outcomes show that nobody was
notified without a failure being retried again and again.

Record text reaches the notifier only as argv items, never through a shell. osascript gets a
fixed script whose `run` handler reads the title and message from its arguments, so the text is
never AppleScript source and needs no quoting. notify-send gets `--` before the text, so a title
cannot pass for an option, and the message escaped for the markup notification servers read.
"""

from __future__ import annotations

import argparse
import html
import shutil
import sys

from kiri.act.sinks import Sink, SinkError
from kiri.wire.children import CannotRunError, ChildError, run
from kiri.wire.log import Log
from kiri.wire.records import Decision
from kiri.wire.render import alert_text, printable, short_id

TIMEOUT = 10.0  # seconds a notifier may take; they return at once when a desktop is there
APPLESCRIPT = [
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
]
URGENCY = {"critical": "critical", "warning": "normal", "info": "low"}
SKIPPED = "skipped: no notifier"


class NotifySink(Sink):
    name = "notify"

    def __init__(self, notifier: str | None) -> None:
        self.notifier = notifier  # the path of notify-send or osascript, or None

    def deliver(self, decision: Decision, line: bytes) -> str:
        if self.notifier is None:
            return SKIPPED
        title, message = _title(decision), _message(decision)
        if self.notifier.endswith("osascript"):
            argv = [self.notifier, *(a for s in APPLESCRIPT for a in ("-e", s)), title, message]
        else:
            argv = [
                self.notifier,
                "--app-name=KIRI",
                f"--urgency={_urgency(decision)}",
                "--",
                title,
                html.escape(message, quote=False),
            ]
        _run(argv)
        return f"{argv[0]}: {title}"


def _run(argv: list[str]) -> None:
    try:
        run(argv, timeout=TIMEOUT, keep_stdout=False)
    except CannotRunError as e:  # names the program already
        raise SinkError(str(e)) from None
    except ChildError as e:
        raise SinkError(f"{argv[0]}: {e}") from None


def _urgency(d: Decision) -> str:
    return URGENCY.get(d.severity, "normal") if d.action == "alert" else "low"


def _title(d: Decision) -> str:
    atoms = ", ".join(d.atoms or [d.atom])
    kiri = f"KIRI {short_id(d.id)}"
    if d.action == "resolve":
        return printable(f"{kiri}: {atoms} back to normal on {d.host}")
    severity = f" ({d.severity})" if d.severity else ""
    return printable(f"{kiri}: {atoms} unusual on {d.host}{severity}")


def _message(d: Decision) -> str:
    """The alert as every sink tells it (kiri.wire.render.alert_text)."""
    return alert_text(d)


def find_notifier() -> str | None:
    """notify-send or osascript from PATH, the platform's own first; None without either."""
    names = ["notify-send", "osascript"]
    if sys.platform == "darwin":
        names.reverse()
    return next((path for path in map(shutil.which, names) if path), None)


HELP = "a desktop notification (notify-send on Linux, osascript on macOS)"


def open_sink(args: argparse.Namespace, log: Log) -> NotifySink:
    notifier = find_notifier()
    if notifier is None:
        log.warning(
            "notify_unavailable",
            reason="neither notify-send nor osascript is on PATH: "
            "alerts are not shown on the desktop",
        )
    return NotifySink(notifier)
