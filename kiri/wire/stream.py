"""The one stage loop every KIRI stage uses, and the logging set-up.

A stage reads newline-delimited records, consumes its own kinds and passes every other kind
through byte for byte, kinds it does not know included (a newer stage may write them); a CR
before the newline is not part of a record. The loop owns everything around that:

* bad lines (malformed JSON, invalid UTF-8, wrong types, non-finite numbers, lines over 1 MiB)
  are reported on stderr with their line number and reason, counted, optionally appended to a
  dead-letter file, and skipped; the stream goes on;
* output is batched while input is waiting and flushed the moment input goes idle, so a backlog
  moves in large writes and a lone record is downstream within a millisecond;
* SIGTERM and SIGINT finish the records already read, flush, and end the stream with status 0;
* a closed reader (EPIPE) ends the stage quietly with status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import IO, TextIO, TypeAlias, TypeVar, final

import msgspec

from kiri.wire.log import Log, get_logger
from kiri.wire.records import KINDS, UNDECODABLE, Record

MAX_LINE = 1 << 20  # longer lines are rejected without being held in memory
READ_SIZE = 1 << 16
FLUSH_SIZE = 1 << 18  # flush mid-backlog once this much output is waiting

R = TypeVar("R", bound=Record)  # the record kinds a stage consumes
Check: TypeAlias = Callable[[R], str | None]


def setup_logging(stage: str, stream: TextIO | None = None) -> Log:
    """The stage's logger: JSON lines on stderr, readable lines on a terminal."""
    return get_logger(stage, stream)


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """The options every stage shares."""
    parser.add_argument(
        "--format",
        choices=("json", "pretty"),
        default=None,
        help="output NDJSON records (json) or lines for people (pretty); "
        "default: pretty on a terminal, json otherwise",
    )
    parser.add_argument(
        "--dead-letter",
        metavar="PATH",
        default=None,
        help="also append every rejected input line, with its reason, to this file",
    )


class Stream:
    """Reads records from file descriptors and writes records to stdout, for one stage."""

    def __init__(
        self,
        log: Log,
        *,
        fmt: str | None = None,
        dead_letter: str | None = None,
        out_fd: int = 1,
    ) -> None:
        self.log = log
        self.out_fd = out_fd
        self.pretty = (fmt or ("pretty" if os.isatty(out_fd) else "json")) == "pretty"
        self.decoder = msgspec.json.Decoder(Record)
        self.encoder = msgspec.json.Encoder()
        self.stopping = False
        self.lines = self.records_out = self.bad = 0
        self._out = bytearray()
        self._watched: dict[int, Callable[[], None]] = {}
        self._tick: tuple[float, Callable[[], None]] | None = None
        self._next_tick = 0.0
        self._dead_letter_path = dead_letter
        self._dead_letter: IO[bytes] | None = None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w)
        self._old_handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None or not issubclass(exc_type, BrokenPipeError):
                self.flush()
        finally:
            self.close()

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._dead_letter:
            self._dead_letter.close()
        # Quiet on a clean run; a run that dropped lines says how many.
        (self.log.warning if self.bad else self.log.debug)(
            "stream_end",
            lines=self.lines,
            written=self.records_out,
            bad=self.bad,
            stopped=self.stopping,
        )

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only set a flag: the wakeup fd interrupts any wait, and the loop finishes what it holds.
        self.stopping = True

    # -- output ----------------------------------------------------------------------------

    def emit(self, record: Record) -> None:
        """Queue one record for output."""
        if self.pretty:
            from kiri.wire.render import render

            self._out += render(record).encode() + b"\n"
        else:
            self.encoder.encode_into(record, self._out, -1)
            self._out += b"\n"
        self.records_out += 1
        if len(self._out) >= FLUSH_SIZE:
            self.flush()

    def emit_raw(self, record: Record, raw: bytes) -> None:
        """Queue a record that came in as `raw`, unchanged (rendered, when output is pretty)."""
        if self.pretty:
            self.emit(record)
            return
        self._out += raw
        self._out += b"\n"
        self.records_out += 1
        if len(self._out) >= FLUSH_SIZE:
            self.flush()

    def flush(self) -> None:
        view = memoryview(self._out)
        try:
            while view:
                view = view[os.write(self.out_fd, view) :]
        finally:
            view.release()
            self._out.clear()

    # -- waiting ---------------------------------------------------------------------------

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; False as soon as the stage is asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self._wait([], left)
        return False

    def watch(self, fd: int, on_ready: Callable[[], None]) -> None:
        """Call on_ready whenever fd has data, between batches and while input is idle.

        This is how a stage reads a side channel (kiri-decide's feedback FIFO) without ever
        blocking its main stream.
        """
        self._watched[fd] = on_ready

    def every(self, seconds: float, on_tick: Callable[[], None]) -> None:
        """Call on_tick at least every `seconds`, even while no input arrives."""
        self._tick = (seconds, on_tick)
        self._next_tick = time.monotonic() + seconds

    def _wait(self, fds: list[int], timeout: float | None) -> list[int]:
        if self._tick:
            left = max(0.0, self._next_tick - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        ready, _, _ = select.select([*fds, *self._watched, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        for fd in ready:
            if fd in self._watched:
                self._watched[fd]()
        if self._tick and time.monotonic() >= self._next_tick:
            self._next_tick = time.monotonic() + self._tick[0]
            self._tick[1]()
        return ready

    # -- input -----------------------------------------------------------------------------

    def _chunks(self, fd: int) -> Iterator[bytes]:
        """Raw reads from fd; flushes pending output whenever input is idle."""
        while not self.stopping:
            if fd not in self._wait([fd], 0):
                self.flush()
                if fd not in self._wait([fd], None):
                    self.flush()  # what watched fds and ticks emitted goes out at once
                    continue
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return
            yield chunk

    def _line_batches(self, fd: int) -> Iterator[list[bytes | _Dropped]]:
        """Split reads into lists of lines; a line over MAX_LINE becomes the reason (a str)."""
        pending = b""
        skipping = 0  # bytes of an over-long line seen so far, while skipping to its end
        for chunk in self._chunks(fd):
            batch: list[bytes | _Dropped] = []
            rest = chunk  # what is left of it once the end of a skipped line is cut off
            if skipping:
                end = chunk.find(b"\n")
                if end < 0:
                    skipping += len(chunk)
                    continue
                batch.append(_Dropped(_too_long(skipping + end)))
                skipping, rest = 0, chunk[end + 1 :]
            lines = (pending + rest).split(b"\n")
            pending = lines.pop()
            if b"\r" in chunk:  # CRLF line ends: the CR is not part of the record
                lines = [line.removesuffix(b"\r") for line in lines]
            batch += lines
            if len(pending) > MAX_LINE:
                skipping, pending = len(pending), b""
            yield batch
        if self.stopping:
            return  # what is left is part of a line the writer had not finished
        if skipping:
            yield [_Dropped(_too_long(skipping))]
        elif pending:
            yield [pending.removesuffix(b"\r")]

    def records(
        self,
        fd: int = 0,
        *,
        source: str = "-",
        consumes: tuple[type[R], ...] = (),
        check: Check[R] | None = None,
    ) -> Iterator[tuple[R, bytes]]:
        """Yield (record, raw line) for each valid record of a consumed kind.

        Records of other kinds go straight to the output, unchanged. `check` may reject a
        consumed record that decodes but makes no sense to this stage, by returning a reason.
        """
        for group in self.batches(fd, source=source, consumes=consumes, check=check):
            for record, raw, _lineno in group:
                yield record, raw

    def batches(  # noqa: PLR0912 (one loop kept inline: it is every stage's hot path)
        self,
        fd: int = 0,
        *,
        source: str = "-",
        consumes: tuple[type[R], ...] = (),
        check: Check[R] | None = None,
    ) -> Iterator[list[tuple[R, bytes, int]]]:
        """Like records(), but yields the consumed records in groups of (record, raw, line).

        A group holds what arrived together, so a stage can handle it in one vectorized step.
        Output order is kept: a group ends before any passed-through record that follows it,
        so the stage emits the group's results before that record goes out.
        """
        decode, out = self.decoder.decode, self._out
        group: list[tuple[R, bytes, int]] = []
        for batch in self._line_batches(fd):
            for line in batch:
                self.lines += 1
                if not line:
                    continue
                if type(line) is _Dropped or len(line) > MAX_LINE:
                    self._reject_long(source, line)
                    continue
                record: Record | None
                try:
                    record = decode(line)
                except UNDECODABLE as e:
                    if not _unknown_kind(line):
                        self.reject(source, self.lines, _reason(e), line)
                        continue
                    record = None  # a newer stage's kind: passed on as it is, even when pretty
                if record is None or not isinstance(record, consumes):
                    if group:
                        yield group
                        group = []
                    if self.pretty and record is not None:
                        self.emit(record)
                    else:  # the hot path of a pass-through, inlined
                        out += line
                        out += b"\n"
                        self.records_out += 1
                    continue
                reason = check(record) if check else None
                if reason:
                    self.reject(source, self.lines, reason, line)
                    continue
                group.append((record, line, self.lines))
            if group:
                yield group
                group = []
            if len(out) >= FLUSH_SIZE:
                self.flush()

    def _reject_long(self, source: str, line: bytes | _Dropped) -> None:
        """Reject the current line, too long to use: as it is, or dropped already (a reason)."""
        if type(line) is _Dropped:  # the reason an over-long line was dropped
            self.reject(source, self.lines, line, b"")
        else:
            self.reject(source, self.lines, _too_long(len(line)), line[:4096])

    def reject(self, source: str, lineno: int, reason: str, raw: bytes) -> None:
        """Report, count and dead-letter one bad input line."""
        self.bad += 1
        self.log.warning("bad_record", source=source, line=lineno, reason=reason)
        if self._dead_letter_path:
            if self._dead_letter is None:
                self._dead_letter = _open_private(self._dead_letter_path)
            entry = {
                "source": source,
                "line": lineno,
                "reason": reason,
                "raw": raw[:4096].decode("utf-8", "backslashreplace"),
            }
            self._dead_letter.write(msgspec.json.encode(entry) + b"\n")
            self._dead_letter.flush()


@final
class _Dropped(str):
    """The reason an over-long line was dropped, in its place among the lines. Final, so that
    the stage loop's `type(line) is _Dropped` (quicker than isinstance) leaves the others bytes."""


class _Tagged(msgspec.Struct):
    kind: str


_decode_tagged = msgspec.json.Decoder(_Tagged).decode


def _unknown_kind(line: bytes) -> bool:
    """Is this line a JSON object tagged with a kind no record here has?"""
    try:
        return _decode_tagged(line).kind not in KINDS
    except UNDECODABLE:
        return False


def _too_long(n: int) -> str:
    return f"line longer than {MAX_LINE} bytes ({n} bytes)"


def _reason(e: Exception) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"invalid UTF-8 in a string value ({e.reason})"
    return str(e)


def _open_private(path: str) -> IO[bytes]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "ab")
