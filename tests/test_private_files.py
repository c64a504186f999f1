"""Files that hold what a person said or what a training printed are private (mode 0600),
whatever the umask, as the README promises."""

import json
import stat
import subprocess

import msgspec
from conftest import stage_cmd
from test_feedback import alert

from kiri.home.store import Store
from kiri.wire.records import Decision


def run_stage(module: str, *records: msgspec.Struct) -> list[dict]:
    """The records a real stage writes for these, under a usual umask."""
    out = subprocess.run(
        stage_cmd(module),
        input=b"".join(msgspec.json.encode(r) + b"\n" for r in records),
        capture_output=True,
        timeout=30,
        check=False,
        umask=0o022,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_new_normal_examples_are_private(kiri_home):
    with Store() as store:
        store.record_alert(alert(0), "C9 L4")
        store.add_verdict("a0", "dismiss", normal=True)
    out = run_stage("kiri.feedback.stage")
    assert out == []  # the retrain is kiri-feedback's own: nothing goes to kiri-decide
    assert mode(kiri_home / "atoms" / "pulse" / "normal.ndjson") == 0o600


def test_the_train_log_is_private(kiri_home):
    retrain = Decision(ts=1.0, id="d-1", atom="pulse", host="vm", action="retrain", summary="")
    outcomes = [r for r in run_stage("kiri.act.stage", retrain) if r["kind"] == "outcome"]
    assert outcomes[-1]["sink"] == "retrain" and outcomes[-1]["ok"], outcomes
    assert mode(kiri_home / "logs" / "train-pulse.log") == 0o600
