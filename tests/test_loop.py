"""The feedback loop, end to end, through real processes under kiri-supervise:
a person's verdicts change what KIRI does next, and survive restarts."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import FIXTURES, log_events, loop_pipeline, run, stage_cmd

from kiri.home.store import Store

NORMAL = json.loads(FIXTURES.joinpath("pulse-normal.ndjson").read_text().splitlines()[-1])
STRESS = json.loads(FIXTURES.joinpath("pulse-stress.ndjson").read_text().splitlines()[-1])
DISK_FULL = {**NORMAL, "values": {**NORMAL["values"], "disk": 97.0}}
BIG_MEMORY = {**NORMAL, "values": {**NORMAL["values"], "mem": 63.0}}


def wait_for(what, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Loop:
    """A supervised pipeline whose source the test writes into, observation by observation."""

    def __init__(self, home, tmp_path):
        self.source = tmp_path / "source.fifo"
        if not self.source.exists():
            os.mkfifo(self.source)
        self.logs = home / "logs"
        self.file = tmp_path / "loop.toml"
        self.file.write_text(loop_pipeline(f'["kiri-collect", "replay", "{self.source}"]'))
        self.ts = time.time() - 100_000
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self):
        self.proc = subprocess.Popen(
            stage_cmd("kiri.supervise.supervisor", str(self.file)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # opening waits for the replay stage; the FIFO stays open until stop()
        self.writer = open(self.source, "wb", buffering=0)  # noqa: SIM115

    def feed(self, obs, n):
        lines = []
        for _ in range(n):
            self.ts += 5
            lines.append(json.dumps({**obs, "ts": self.ts}).encode() + b"\n")
        self.writer.write(b"".join(lines))

    def occurrence(self, obs):
        """An anomaly held for five observations, then six calm ones so it resolves."""
        self.feed(obs, 5)
        self.feed(NORMAL, 6)

    def said(self, stage, event, count=1):
        """Wait until STAGE has logged EVENT COUNT times, in its log under $KIRI_HOME/logs."""
        log = self.logs / f"{stage}.log"

        def events():
            text = log.read_bytes() if log.exists() else b""
            whole = log_events(text[: text.rfind(b"\n") + 1])  # the last line may be unfinished
            return sum(e["event"] == event for e in whole) >= count

        wait_for(f"{stage} to log {event} {count} times", events)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        assert self.proc is not None, "not started"
        self.writer.close()
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err.decode()[-2000:]


def recorded():
    """What kiri-feedback recorded as delivered, oldest first, without resolutions."""
    with Store() as store:
        return [r for r in reversed(store.alerts(1000, everything=True)) if r.action != "resolve"]


def newest_alert(n):
    rows = wait_for(f"{n} alerts", lambda: (r := recorded()) and len(r) >= n and r)
    return rows[n - 1]


@pytest.fixture
def loop(installed_pulse, kiri_home, tmp_path):
    # what the collector would have recorded, so a retrain has data to learn from
    data = kiri_home / "data" / "pulse"
    data.mkdir(parents=True)
    shutil.copy(FIXTURES / "pulse-normal.ndjson", data / "2026-11-20.ndjson")
    loop = Loop(kiri_home, tmp_path)
    loop.start()
    yield loop
    if loop.running():
        loop.stop()


def test_dismissed_twice_is_suppressed_and_confirmed_keeps_alerting(loop):
    for n in range(2):
        loop.occurrence(STRESS)
        first = newest_alert(1 + 2 * n)
        assert first.action == "alert"
        assert run("kiri.cli", "feedback", "dismiss", first.id).returncode == 0
        loop.occurrence(DISK_FULL)
        other = newest_alert(2 + 2 * n)
        assert other.action == "alert" and "D9" in other.pattern
        assert run("kiri.cli", "feedback", "confirm", other.id).returncode == 0
    with Store() as store:
        wait_for("a suppression rule", store.active_rules)
    loop.said("decide", "rule_added")  # the rule travelled the FIFO to kiri-decide
    for n in range(2):
        loop.occurrence(STRESS)
        assert newest_alert(5 + 2 * n).action == "suppress"
        loop.occurrence(DISK_FULL)
        assert newest_alert(6 + 2 * n).action == "alert"  # confirmed: still alerts
    assert [r.action for r in recorded()] == ["alert"] * 4 + ["suppress", "alert"] * 2


def test_rules_and_verdicts_survive_a_restart_of_every_stage(loop, kiri_home, tmp_path):
    for n in range(2):
        loop.occurrence(STRESS)
        run("kiri.cli", "feedback", "dismiss", newest_alert(n + 1).id)
    with Store() as store:
        wait_for("a suppression rule", store.active_rules)
    loop.stop()
    loop.start()  # every stage starts afresh: rules come from the store
    loop.occurrence(STRESS)
    assert newest_alert(3).action == "suppress"
    with Store() as store:
        alerts = [r for r in store.alerts() if r.action == "alert"]
    assert [r.verdict for r in alerts] == ["dismiss", "dismiss"]


def test_a_new_normal_dismissal_retrains_until_the_observation_is_normal(loop, installed_pulse):
    values = ",".join(f"{k}={v}" for k, v in BIG_MEMORY["values"].items())
    before = run("kiri.cli", "score", "pulse", "--values", values, "--meta", "cpus=2")
    assert before.stdout.decode().splitlines()[0].endswith(": unusual")
    old = installed_pulse.stat().st_mtime_ns
    loop.occurrence(BIG_MEMORY)
    alert = newest_alert(1)
    assert "M6" in alert.pattern
    assert run("kiri.cli", "feedback", "dismiss", alert.id, "--normal").returncode == 0
    wait_for("new weights", lambda: installed_pulse.stat().st_mtime_ns != old, timeout=60)
    after = run("kiri.cli", "score", "pulse", "--values", values, "--meta", "cpus=2")
    assert after.stdout.decode().splitlines()[0].endswith(": normal"), after.stdout.decode()
    loop.said("feedback", "retrain_requested")  # kiri-feedback ran the training itself
    with Store() as store:
        assert not any(
            r.action == "retrain" for r in store.alerts(100, everything=True)
        )  # a retrain is no alert
    loop.feed(NORMAL, 1)  # kiri-atom looks at its weights file when observations come
    loop.said("atom", "weights_loaded", 2)
    loop.occurrence(BIG_MEMORY)
    loop.occurrence(DISK_FULL)  # its alert comes after every decision on BIG_MEMORY
    wait_for("the disk alert", lambda: any("D9" in r.pattern for r in recorded()))
    alerts = [r.pattern for r in recorded() if r.action == "alert"]
    assert ["D9" in p for p in alerts] == [False, True]  # no second memory alert


def rules_standing():
    with Store() as store:
        return store.active_rules()


def test_a_deleted_rule_stops_suppressing_in_the_running_pipeline(loop):
    n = 0
    while not rules_standing():  # as many dismissals as the pattern asks for
        assert n < 3, "three dismissals made no rule"
        loop.occurrence(STRESS)
        n += 1
        assert run("kiri.cli", "feedback", "dismiss", newest_alert(n).id).returncode == 0
    [rule] = rules_standing()
    loop.said("decide", "rule_added")
    loop.occurrence(STRESS)
    assert newest_alert(n + 1).action == "suppress"
    out = run("kiri.cli", "rules", "delete", rule.id)
    assert out.returncode == 0, out.stderr
    loop.said("decide", "rule_removed")  # the deletion travelled the FIFO to kiri-decide
    loop.occurrence(STRESS)
    assert newest_alert(n + 2).action == "alert"
