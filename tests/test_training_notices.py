"""A training that kiri-feedback or kiri-act started and that failed is logged as a notice, with
the end of its output, for kiri-supervise to send on (tests/test_supervisor.py follows one there);
without a supervisor it stays in the stage's log."""

import json
import os
import select
import subprocess
import time

from conftest import fixture_bytes, stage_cmd

from kiri.home.store import Store
from kiri.wire.records import Decision

RETRAIN = fixture_bytes("decisions.ndjson").splitlines()[8]
TOO_FEW = "Error: atom pulse needs at least 10 observations to train, found 0"


def wait_for_event(proc: subprocess.Popen, name: str, timeout: float = 30) -> dict:
    """Read the stage's stderr until it logs the event `name`."""
    assert proc.stderr is not None
    fd, pending = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.startswith(b"{") and (event := json.loads(line))["event"] == name:
                return event
        left = deadline - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], f"no {name} in time"
        chunk = os.read(fd, 65536)
        assert chunk, f"the stage ended without {name}"
        pending += chunk


def running(module: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        stage_cmd(module, *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=os.environ,
    )


def assert_notice(event: dict) -> None:
    assert event["level"] == "error" and event["atom"] == "pulse"
    assert event["notify"].startswith(f"training pulse failed (exit status 1: {TOO_FEW}")
    assert TOO_FEW in event["detail"].splitlines()[-1]


def test_a_new_normal_whose_training_fails_is_a_notice_of_kiri_feedback(kiri_home):
    with Store() as store:
        alert = Decision(ts=1000.0, id="a0", atom="pulse", host="vm", action="alert")
        store.record_alert(alert, "C9")
        store.add_verdict("a0", "dismiss", normal=True)
    proc = running("kiri.feedback.stage", "--poll", "0.05")
    try:
        assert_notice(wait_for_event(proc, "training_failed"))
    finally:
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_a_retrain_decision_whose_training_fails_is_a_notice_of_kiri_act(kiri_home):
    proc = running("kiri.act.stage", "--sink", "log")
    assert proc.stdin is not None
    proc.stdin.write(RETRAIN + b"\n")
    proc.stdin.flush()  # and no decision after it: the tick tells of the run's end
    try:
        assert_notice(wait_for_event(proc, "training_failed"))
    finally:
        proc.communicate(timeout=10)
    assert proc.returncode == 0
