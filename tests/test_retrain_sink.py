"""The retrain sink: trainings capped and coalesced, never waited for; unknown atoms refused."""

import json
import subprocess

import msgspec
import pytest
from conftest import stage_cmd

from kiri.act.retrain import RetrainSink
from kiri.act.sinks import SinkError
from kiri.atoms import training_jobs
from kiri.atoms.training_jobs import MAX_RUNNING, train_log
from kiri.wire import log as kiri_log
from kiri.wire.records import Decision


def retrain(atom: str, n: int = 0) -> Decision:
    return Decision(
        ts=1795285811.6 + n, id=f"d-{n}", atom=atom, host="vm", action="retrain", summary="retrain"
    )


class Run:
    """A stand-in for a training process, which the test ends when it likes."""

    def __init__(self, atom: str, pid: int) -> None:
        self.atom, self.pid, self.status = atom, pid, None

    def poll(self):
        return self.status


@pytest.fixture
def started(kiri_home, monkeypatch) -> list[Run]:
    runs: list[Run] = []

    def start_training(atom: str) -> Run:
        runs.append(Run(atom, 1000 + len(runs)))
        return runs[-1]

    monkeypatch.setattr(training_jobs, "start_training", start_training)
    return runs


def test_thirty_requests_start_one_run_per_atom_and_one_follow_up_each(started):
    sink = RetrainSink(kiri_log.get_logger())
    details = [
        sink.deliver(retrain(atom, n), b"")
        for n in range(10)
        for atom in ("pulse", "drift", "rhythm")
    ]
    assert [r.atom for r in started] == ["pulse", "drift"]  # the cap: rhythm waits
    assert details[:3] == [
        f"training pulse (pid 1000, log {train_log('pulse')})",
        f"training drift (pid 1001, log {train_log('drift')})",
        f"waiting: {MAX_RUNNING} trainings are running, the most at once",
    ]
    assert details[3] == "already training pulse (pid 1000): one more run follows it"
    while alive := [r for r in started if r.status is None]:
        alive[0].status = 0  # the oldest run ends
        sink.observe(msgspec.structs.replace(retrain("pulse"), action="ok"))
        assert sum(r.status is None for r in started) <= MAX_RUNNING
    # rhythm's run, then one follow-up for each atom asked again while it trained
    assert [r.atom for r in started] == ["pulse", "drift", "rhythm", "pulse", "drift"]


def test_an_unknown_atom_is_refused_at_once_and_not_retried(started):
    sink = RetrainSink(kiri_log.get_logger())
    with pytest.raises(SinkError, match="no atom nosuch: it is not built in") as refused:
        sink.deliver(retrain("nosuch"), b"")
    assert not refused.value.retry and started == []


def kiri_act(*decisions: dict) -> list[dict]:
    """The retrain sink's outcomes for these decisions, through the real kiri-act, which
    creates files as under a usual umask."""
    lines = b"".join(msgspec.json.encode(retrain(**d)) + b"\n" for d in decisions)
    out = subprocess.run(
        stage_cmd("kiri.act.stage"),
        input=lines,
        capture_output=True,
        timeout=30,
        check=False,
        umask=0o022,
    )
    assert out.returncode == 0, out.stderr
    records = map(json.loads, out.stdout.splitlines())
    return [r for r in records if r["kind"] == "outcome" and r["sink"] == "retrain"]


def test_kiri_act_refuses_a_retrain_for_an_atom_that_does_not_exist_in_one_attempt(kiri_home):
    got = kiri_act({"atom": "../evil", "n": 1}, {"atom": "nosuch", "n": 2})
    assert [(o["id"], o["ok"], o["detail"]) for o in got] == [
        ("d-1", False, "attempts: 1"),
        ("d-2", False, "attempts: 1"),
    ]
    assert got[0]["error"].startswith("cannot train '../evil': invalid atom name '../evil'")
    assert got[1]["error"].startswith("cannot train 'nosuch': no atom nosuch: it is not built in")
    assert not (kiri_home / "logs" / "train-nosuch.log").exists()  # no run was started
