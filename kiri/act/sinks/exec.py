"""The exec sink: run a command of the user's for each alert and resolve, the decision on stdin.

The command is an argv, never a shell string, so nothing in a record is ever interpreted by a
shell. It gets the decision's JSON line on stdin, and the alert as people read it (as every
sink tells it) in KIRI_ALERT_TEXT and its short id in KIRI_ALERT_ID; its stdout is discarded
(kiri-act's stdout carries records only) and the tail of its stderr explains a failure. It runs
in its own process group, so a timeout kills the command and anything it started. Its environment is
kiri-act's without the secrets: the variables config.toml names as holding one (`NAME_env`)
and any KIRI_..._TOKEN, _SECRET, _PASSWORD or _KEY (or such a name ending in _FILE).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from kiri.act.sinks import Sink, SinkError
from kiri.home.config import secret_names
from kiri.wire.children import ChildError, run
from kiri.wire.log import Log
from kiri.wire.records import Decision
from kiri.wire.render import alert_text, short_id


class ExecSink(Sink):
    name = "exec"

    def __init__(self, argv: list[str], timeout: float, environ: Mapping[str, str]) -> None:
        self.argv = argv
        self.timeout = timeout
        hidden = secret_names(environ)
        self.env = {k: v for k, v in environ.items() if k not in hidden}
        self.secrets = tuple(environ[k] for k in sorted(hidden))  # should the command echo one

    def deliver(self, decision: Decision, line: bytes) -> str:
        env = {**self.env, **text_variables(decision)}
        try:
            run(self.argv, timeout=self.timeout, input=line, env=env, keep_stdout=False)
        except ChildError as e:
            raise SinkError(str(e)) from None
        return "exit status 0"


def text_variables(decision: Decision) -> dict[str, str]:
    """The alert as people read it, for a command that only passes it on: KIRI_ALERT_TEXT (as
    every sink tells it, kiri.wire.render.alert_text) and KIRI_ALERT_ID (its short id)."""
    return {"KIRI_ALERT_TEXT": alert_text(decision), "KIRI_ALERT_ID": short_id(decision.id)}


HELP = "the command after --, with the decision's JSON line on stdin"


def open_sink(args: argparse.Namespace, log: Log) -> ExecSink:
    return ExecSink(args.command, args.exec_timeout, os.environ)
