"""What every command line shares: help on every option, `python -m`, and the `kiri` umbrella."""

import argparse
import os
import pty
import subprocess
import sys

import pytest
from conftest import FIXTURES, run

from kiri import cli
from kiri.act import stage as act
from kiri.collect import stage as collect
from kiri.decide import stage as decide
from kiri.feedback import stage as feedback
from kiri.score import stage as atom
from kiri.supervise import supervisor

PARSERS = {
    "kiri": cli.build_parser,
    "kiri-collect": collect.build_parser,
    "kiri-atom": atom.build_parser,
    "kiri-decide": decide.build_parser,
    "kiri-act": act.build_parser,
    "kiri-feedback": feedback.build_parser,
    "kiri-supervise": supervisor.build_parser,
}


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield parser.prog, action


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_has_help(name):
    missing = [f"{prog} {a.dest}" for prog, a in _options(PARSERS[name]()) if not a.help]
    assert missing == []


def test_train_shows_a_progress_bar_on_a_terminal(tmp_path):
    names = FIXTURES / "names.txt"
    cmd = [
        sys.executable,
        "-m",
        "kiri.cli",
        "train",
        "--text",
        str(names),
        "--steps",
        "300",
        "--samples",
        "0",
        "--out",
        str(tmp_path / "w.json"),
    ]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(30) == 0
    screen = b"".join(chunks).decode()
    assert "\r[" in screen and "step  300 /  300 | loss" in screen
    assert "\nstep  100 /  300" not in screen  # a bar, not progress lines


def test_kiri_without_a_command_is_a_usage_error():
    out = run("kiri.cli")  # argparse says so, in its own words
    assert out.returncode == 2 and out.stdout == b"" and out.stderr.strip()
