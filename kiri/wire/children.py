"""The one child-process runner: a command that runs to its end within a timeout.

The command (an argv, never a shell string) starts in its own session, so its process group is
everything it started: on a timeout, a stop or too much output the whole group is killed, so a
command that forks cannot outlive them. Its stdout is captured up to a limit (or discarded)
and the tail of its stderr is kept to say why it failed. A child it leaves behind after a clean
exit may keep the pipes open; the run ends with the command, taking what it wrote by then.

Every failure is a ChildError whose message says why, in the same words for every caller:
"cannot run X: …" (CannotRunError, or NotFoundError when there is no such program), "timed out
after N s" (TimedOutError), "stopped" (StoppedError), "printed more than N bytes", or "exit
status N" or "killed by SIGNAL" then the last line of its stderr (ExitError).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kiri.wire.errors import KiriError

MAX_OUTPUT = 1 << 20  # bytes of stdout kept unless a caller says otherwise
STDERR_KEPT = 4096  # bytes of stderr's tail kept to quote its last line in a failure
CHECK_STOP = 0.1  # seconds between checks of stopping() while a command runs
CHUNK = 1 << 16


class ChildError(KiriError):
    """A run that gave no result; the message says why."""


class CannotRunError(ChildError):
    """The command did not start; the message names it and says why."""


class NotFoundError(CannotRunError):
    """There is no such program: on PATH, or at the path given."""


class TimedOutError(ChildError):
    """No end within the timeout; the command's process group was killed."""


class StoppedError(ChildError):
    """stopping() turned true during the run; the command's process group was killed."""


class ExitError(ChildError):
    """The command ended with a non-zero status (or a signal); `finished` holds its output."""

    def __init__(self, finished: Finished) -> None:
        super().__init__(finished.reason())
        self.finished = finished


@dataclass(frozen=True)
class Finished:
    """A command that has exited: its status (negative: the signal that killed it), its stdout
    (b"" when discarded) and the tail of its stderr."""

    status: int
    stdout: bytes
    stderr: bytes

    def said(self) -> str:
        """The last non-empty line of stderr: usually the one that says why."""
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1].strip()[:200] if lines else ""

    def reason(self) -> str:
        """Words for the status, with what the command said last."""
        if self.status < 0:
            how = f"killed by {signal.Signals(-self.status).name}"
        else:
            how = f"exit status {self.status}"
        said = self.said()
        return f"{how}: {said}" if said else how


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    stopping: Callable[[], bool] | None = None,
    limit: int = MAX_OUTPUT,
    keep_stdout: bool = True,
    check: bool = True,
) -> Finished:
    """Run argv to its end with `input` on stdin (else none), within `timeout` seconds, in `env`
    (else this process's environment); stopping(), polled meanwhile, ends the run early.
    ExitError for a non-zero status unless check is false; other ChildErrors as above."""
    proc = _start(argv, input, env, keep_stdout)
    try:
        pipes = _Pipes(proc, input, limit)
        _wait(proc, pipes, time.monotonic() + timeout, timeout, stopping)
    finally:
        _end(proc)
    finished = Finished(proc.returncode, bytes(pipes.out), bytes(pipes.err))
    if check and finished.status:
        raise ExitError(finished)
    return finished


def _start(
    argv: Sequence[str], input: bytes | None, env: Mapping[str, str] | None, keep_stdout: bool
) -> subprocess.Popen[bytes]:
    try:  # its own session, so that killing its group kills whatever it started too
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise NotFoundError(f"cannot run {argv[0]}: {e.strerror}") from None
    except OSError as e:
        raise CannotRunError(f"cannot run {argv[0]}: {e.strerror}") from None


class _Pipes:
    """The command's stdin, stdout and stderr, moved without blocking."""

    def __init__(self, proc: subprocess.Popen[bytes], input: bytes | None, limit: int) -> None:
        self.out, self.err = bytearray(), bytearray()
        self.limit = limit
        self.readers: dict[int, bytearray] = {}
        for pipe, buf in ((proc.stdout, self.out), (proc.stderr, self.err)):
            if pipe is not None:
                self.readers[pipe.fileno()] = buf
        self.todo = memoryview(input or b"")
        self.stdin = proc.stdin
        self.writer: int | None = None
        if self.stdin is not None:
            self.writer = self.stdin.fileno()
            os.set_blocking(self.writer, False)
            if not self.todo:
                self._close_writer()

    @property
    def open(self) -> bool:
        return bool(self.readers) or self.writer is not None

    def step(self, wait: float) -> bool:
        """Move what can be moved within `wait` seconds; False if nothing could."""
        writers = [] if self.writer is None else [self.writer]
        readable, writable, _ = select.select(list(self.readers), writers, [], wait)
        for fd in readable:
            self._read(fd)
        if writable:
            self._write()
        return bool(readable or writable)

    def _read(self, fd: int) -> None:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            del self.readers[fd]
            return
        buf = self.readers[fd]
        buf += chunk
        if buf is self.err:
            del buf[:-STDERR_KEPT]  # only its last line is ever quoted
        elif len(buf) > self.limit:
            raise ChildError(f"printed more than {self.limit} bytes")

    def _write(self) -> None:
        assert self.writer is not None  # step() asks only while there is one
        try:
            self.todo = self.todo[os.write(self.writer, self.todo[:CHUNK]) :]
        except BlockingIOError:
            return
        except BrokenPipeError:  # it has closed its stdin: the rest is not wanted
            self.todo = memoryview(b"")
        if not self.todo:
            self._close_writer()

    def _close_writer(self) -> None:
        assert self.stdin is not None
        self.stdin.close()  # nothing to flush: _write writes to its fd
        self.writer = None


def _wait(
    proc: subprocess.Popen[bytes],
    pipes: _Pipes,
    deadline: float,
    timeout: float,
    stopping: Callable[[], bool] | None,
) -> None:
    """Move the pipes until the command has exited and nothing more is there to read."""
    while True:
        exited = proc.poll() is not None
        if stopping is not None and stopping():
            raise StoppedError("stopped")
        left = deadline - time.monotonic()
        if left <= 0:
            if exited:  # in time: what a child it left keeps writing is not its output
                return
            raise TimedOutError(f"timed out after {timeout:g} s")
        if not pipes.open:
            if exited:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(min(left, CHECK_STOP))
        elif not pipes.step(0 if exited else min(left, CHECK_STOP)) and exited:
            return  # all it wrote is read: a child it left may hold the pipes, not the run


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command's process group unless it has already exited, and close its pipes."""
    if proc.poll() is None:  # not reaped yet, so its group id cannot have been reused
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
