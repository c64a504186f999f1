"""The exec sink: run a command of the user's for each alert and resolve, the decision on stdin.

The command is an argv, never a shell string, so nothing in a record is ever interpreted by a
shell. It gets the decision's JSON line on stdin; its stdout is discarded (kiri-act's stdout
carries records only) and the tail of its stderr explains a failure. It runs in its own
process group, so a timeout kills the command and anything it started. Its environment is
kiri-act's without the secrets: the variables config.toml names as holding one (`NAME_env`)
and any KIRI_..._TOKEN, _SECRET, _PASSWORD or _KEY (or such a name ending in _FILE).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from typing import IO

from kiri.act.sinks import Sink, SinkError
from kiri.home.config import load_config, secret_variables
from kiri.wire.records import Decision
from kiri.wire.stream import Log

STDERR_TAIL = 4096  # bytes of the command's stderr kept to explain a failure
SECRET_NAME = re.compile(r"^KIRI_\w+_(TOKEN|SECRET|PASSWORD|KEY)(_FILE)?$")


class ExecSink(Sink):
    name = "exec"

    def __init__(self, argv: list[str], timeout: float, environ: Mapping[str, str]) -> None:
        self.argv = argv
        self.timeout = timeout
        named = secret_variables(load_config())
        hidden = {k for k in environ if k in named or SECRET_NAME.match(k)}
        self.env = {k: v for k, v in environ.items() if k not in hidden}
        self.secrets = tuple(environ[k] for k in sorted(hidden))  # should the command echo one

    def deliver(self, decision: Decision, line: bytes) -> str:
        # stderr goes to a file, not a pipe: only its tail is read into memory, and a process
        # the command left behind cannot keep us waiting for a pipe to close.
        with tempfile.TemporaryFile() as err:
            status = self._run(line, err)
            if status == 0:
                return "exit status 0"
            reason = _exit_reason(status)
            last = _last_line(err)
            raise SinkError(f"{reason}: {last}" if last else reason)

    def _run(self, line: bytes, err: IO[bytes]) -> int:
        """Run the command on `line` within the timeout; its exit status."""
        try:
            proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        except OSError as e:
            raise SinkError(f"cannot run {self.argv[0]}: {e.strerror}") from e
        try:
            proc.communicate(line, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise SinkError(f"timed out after {self.timeout:g} s") from None
        return proc.returncode


def _exit_reason(status: int) -> str:
    """Words for a non-zero status; Popen gives a signal as a negative number."""
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


def _last_line(err: IO[bytes]) -> str:
    """The last non-empty line the command wrote on stderr: usually the one that says why."""
    size = err.seek(0, os.SEEK_END)
    err.seek(max(0, size - STDERR_TAIL))
    lines = err.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


HELP = "the command after --, with the decision's JSON line on stdin"


def open_sink(args: argparse.Namespace, log: Log) -> ExecSink:
    return ExecSink(args.command, args.exec_timeout, os.environ)
