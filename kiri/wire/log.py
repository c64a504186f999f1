"""Structured log lines on stderr: one JSON object per event, or a readable line on a terminal.

Every stage logs this way and kiri-supervise relays the lines. An event with `notify` (a
summary) and `detail` (the last lines of some error output, see `Log.notify`) is one the person
should hear of: kiri-supervise sends it as an alert to the pipeline's alerts stage; without a
supervisor it stays in the log. A stage is a small process that starts often, so the logger is
kept to what the stages use (bind, four levels, a bound stage name) and costs no import beyond
msgspec; a general logging library brought asyncio into every stage, some 7 MB and 35 ms each.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO, TypeAlias

import msgspec

Event: TypeAlias = dict[str, object]
"""One logged event: the bound context, the keywords, then event and level."""

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
TAIL_LINES = 10  # lines of error output a notice carries
TAIL_WIDTH = 300  # characters of each
_encode = msgspec.json.Encoder(enc_hook=str).encode  # a Path or an exception is logged as text
_captured: list[list[Event]] = []  # the open capture() blocks, innermost last


class Log:
    """A logger with context: each event is written with the bound keys first."""

    def __init__(self, stream: TextIO, level: int, context: Event) -> None:
        self._stream = stream
        self._level = level
        self._context = context
        self._pretty = stream.isatty()

    def bind(self, **context: object) -> Log:
        return Log(self._stream, self._level, {**self._context, **context})

    def debug(self, event: str, **kw: object) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: object) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: object) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: object) -> None:
        self._emit("error", event, kw)

    def notify(self, event: str, summary: str, detail: str = "", **kw: object) -> None:
        """An error the person should hear of, not only the log: `summary` says what went
        wrong in a line, `detail` holds the error output behind it (its tail is kept)."""
        self._emit("error", event, {**kw, "notify": summary, "detail": tail(detail)})

    def _emit(self, level: str, event: str, kw: Event) -> None:
        if LEVELS[level] < self._level:
            return
        entry = {**self._context, **kw, "event": event, "level": level}
        if _captured:
            _captured[-1].append(entry)
            return
        entry["timestamp"] = _now()
        line = _pretty(entry) if self._pretty else _json(entry)
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: the event is lost, the stage goes on


def get_logger(stage: str | None = None, stream: TextIO | None = None) -> Log:
    """A logger at KIRI_LOG_LEVEL (default info) writing to stream (default stderr)."""
    name = os.environ.get("KIRI_LOG_LEVEL", "info").lower()
    context: Event = {"stage": stage} if stage else {}
    return Log(stream or sys.stderr, LEVELS.get(name, LEVELS["info"]), context)


@contextlib.contextmanager
def capture() -> Iterator[list[Event]]:
    """Collect the events logged inside the block instead of writing them (for tests)."""
    events: list[Event] = []
    _captured.append(events)
    try:
        yield events
    finally:
        _captured.remove(events)


def tail(text: str, lines: int = TAIL_LINES, width: int = TAIL_WIDTH) -> str:
    """The last non-blank lines of some output, each cut to `width` characters: what of it
    fits in a notice."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in kept)


# Characters JSON leaves as they are but that readers of lines (Python's splitlines, editors)
# take for line breaks: escaped, so one event stays one line whatever a record held.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json(entry: Event) -> str:
    text = _encode(entry).decode()
    return text if text.isascii() else text.translate(_LINE_BREAKS)


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _pretty(entry: Event) -> str:
    rest = " ".join(
        f"{k}={v!r}" for k, v in entry.items() if k not in ("timestamp", "level", "event")
    )
    return f"{entry['timestamp']} [{entry['level']:<7}] {entry['event']:<24} {rest}"
