"""The supervisor's plumbing: whole lines from stage stdouts into stage stdins, and stderr into
rotated log files.

The supervisor holds every pipe. An `Outlet` is the read end of one process's stdout: it cuts
each read at its last newline and keeps the unfinished line back, so only whole lines move on.
An `Inbox` is a stage's stdin: whole lines from any number of producers queue in it and are
written in order, so fan-in never interleaves two records, whatever their size. The inbox
outlives the stage's processes: a restarted consumer gets a fresh pipe and the lines waiting.
No line is ever decoded or split here; the only per-chunk work is finding its last newline.
"""

from __future__ import annotations

import os
from pathlib import Path

READ_SIZE = 1 << 16  # a pipe's capacity on Linux: one read empties a full pipe
HIGH_WATER = 1 << 20  # a producer waits while any of its consumers has this much queued
MAX_LINE = 16 << 20  # stages take lines up to 1 MiB; a longer one is dropped, not held
FIFO_LIMIT = 16 << 20  # the feedback FIFO's queue: past this, lines are dropped
NEWLINE = ord("\n")


class Outlet:
    """The read end of one process's stdout; it yields whole lines only."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.partial = bytearray()
        self.skipping = False  # inside a line over MAX_LINE: dropping it up to its end
        self.at_eof = False
        self.dropped = 0  # lines dropped: over MAX_LINE, or left unfinished by the process

    def read(self) -> bytes | None:
        """The whole lines one read completes (maybe none); None when nothing is left now."""
        try:
            chunk = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        if not chunk:
            self.at_eof = True
            return None
        return self._split(chunk)

    def _split(self, chunk: bytes) -> bytes:
        end = chunk.rfind(b"\n") + 1
        if not end:
            self._hold(chunk)
            return b""
        if self.skipping:
            lines = chunk[chunk.find(b"\n") + 1 : end]
            self.skipping = False
        elif self.partial:
            self.partial += chunk[:end]
            lines = bytes(self.partial)
            self.partial.clear()
        else:
            lines = chunk[:end]
        self._hold(chunk[end:])
        return lines

    def _hold(self, part: bytes) -> None:
        if self.skipping or not part:
            return
        self.partial += part
        if len(self.partial) > MAX_LINE:
            self.partial.clear()
            self.skipping = True
            self.dropped += 1

    def close(self) -> int:
        """Close the pipe; return how many lines were dropped (an unfinished one counts)."""
        os.close(self.fd)
        if self.partial and not self.skipping:
            self.dropped += 1
        self.partial.clear()
        return self.dropped


class Inbox:
    """A stage's stdin as the supervisor holds it: the pipe's write end and the lines queued.

    Bounded inboxes hold their producers back when full (`full`). The feedback FIFO's inbox is
    not bounded: holding back the end of a loop could deadlock the loop, so past FIFO_LIMIT it
    drops lines instead.
    """

    def __init__(self, *, bounded: bool = True) -> None:
        self.fd: int | None = None
        self.queued = bytearray()
        self.bounded = bounded
        self.mid_line = False  # the last write ended inside a line
        self.discarding = ""  # why, once its stage will not run again

    def put(self, lines: bytes) -> int:
        """Queue whole lines; return how many were dropped instead (`drop_reason` says why)."""
        if self.discarding or (not self.bounded and len(self.queued) > FIFO_LIMIT):
            return lines.count(b"\n")
        self.queued += lines
        return 0

    @property
    def drop_reason(self) -> str:
        return self.discarding or "nothing reads the feedback FIFO"

    @property
    def full(self) -> bool:
        return self.bounded and len(self.queued) >= HIGH_WATER

    def attach(self, fd: int) -> int:
        """Start writing into a new pipe from the first whole line queued; return 1 if the rest
        of a line the previous reader had started was dropped, else 0."""
        self.fd = fd
        if not self.mid_line:
            return 0
        del self.queued[: self.queued.find(b"\n") + 1]
        self.mid_line = False
        return 1

    def write(self) -> None:
        """Write what the pipe takes now; a reader that is gone detaches the pipe."""
        assert self.fd is not None
        try:
            n = os.write(self.fd, self.queued)
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.detach()
            return
        if n:
            self.mid_line = self.queued[n - 1] != NEWLINE
            del self.queued[:n]

    def detach(self) -> None:
        """Close the pipe: its reader sees the end of its input."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self, reason: str) -> int:
        """Its stage will not run again, for `reason`: drop what is queued and what comes.
        Return how many lines were queued."""
        self.detach()
        self.discarding = reason
        count = self.queued.count(b"\n")
        self.queued.clear()
        return count


class RotatingLog:
    """A stage's stderr, appended to PATH and rotated by size to PATH.1 … PATH.keep."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.fd = self.size = 0
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, chunk: bytes) -> None:
        """Append, rotating first whenever the next whole lines would not fit."""
        while self.size + len(chunk) > self.max_bytes:
            cut = chunk.rfind(b"\n", 0, self.max_bytes - self.size) + 1  # whole lines that fit
            if not cut and not self.size:  # one line longer than a file: it gets a file
                cut = chunk.find(b"\n") + 1 or len(chunk)
            self._write(chunk[:cut])
            self._rotate()
            chunk = chunk[cut:]
        self._write(chunk)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def _rotate(self) -> None:
        os.close(self.fd)
        for n in range(self.keep, 0, -1):
            older = self.path if n == 1 else self._numbered(n - 1)
            if older.exists():
                os.replace(older, self._numbered(n))
        self._open()

    def _numbered(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def close(self) -> None:
        os.close(self.fd)
