"""kiri-supervise, run for real (python -m kiri.supervise.supervisor) on pipeline files written per
test, with stand-in stages from fixtures/supervise-helper.py and, for one test, the real stages."""

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import msgspec
import psutil
import pytest
from conftest import FIXTURES, ROOT, log_events, run, stage_cmd

from kiri.atoms.lifecycle import State, state_path
from kiri.supervise import supervisor
from kiri.supervise.supervisor import SAME_REQUEST
from kiri.wire.records import Decision

HELPER = FIXTURES / "supervise-helper.py"
FAST = {
    "stop_timeout": 5,
    "restart": {"delay": 0.1, "max_delay": 0.4, "healthy": 5, "fail_deaths": 3, "fail_window": 10},
}


def helper(*args: str) -> list[str]:
    return [sys.executable, str(HELPER), *args]


def toml_text(stages: list[dict], **top) -> str:
    """A pipeline file; JSON's strings, numbers and lists are also TOML's."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items() if not isinstance(v, dict)]
    for table, values in ((k, v) for k, v in top.items() if isinstance(v, dict)):
        lines += [f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    for stage in stages:
        lines += ["[[stage]]", *(f"{k} = {json.dumps(v)}" for k, v in stage.items())]
    return "\n".join(lines) + "\n"


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def wait_until(check, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class Supervised:
    """One kiri-supervise process on a pipeline file in tmp_path."""

    def __init__(self, tmp_path: Path, home: Path, stages: list[dict], **top) -> None:
        self.home, self.err = home, tmp_path / "supervise.err"
        self.file = tmp_path / "test.toml"
        self.file.write_text(toml_text(stages, **top))
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                stage_cmd("kiri.supervise.supervisor", str(self.file)),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def status(self) -> dict:
        try:
            return json.loads((self.home / "status.json").read_bytes())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def stage(self, name: str) -> dict:
        return next((s for s in self.status().get("stages", []) if s["name"] == name), {})

    def wait_state(self, name: str, state: str, **fields) -> dict:
        def reached():
            s = self.stage(name)
            return s if s.get("state") == state and fields.items() <= s.items() else None

        return wait_until(reached, what=f"{name} to be {state} {fields}")

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def events(self) -> list[dict]:
        return log_events(self.err.read_bytes())

    def cleanup(self) -> None:
        """Whatever a failed test left running: the supervisor, then its stages."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for s in self.status().get("stages", []):
            if s.get("pid"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(s["pid"], signal.SIGKILL)


@pytest.fixture
def supervise(tmp_path, kiri_home, monkeypatch):
    monkeypatch.setenv("EVENTS", str(tmp_path / "events"))
    started = []

    def start(stages: list[dict], **top) -> Supervised:
        started.append(Supervised(tmp_path, kiri_home, stages, **top))
        return started[-1]

    yield start
    for s in started:
        s.cleanup()


def events_file(tmp_path: Path) -> list[str]:
    path = tmp_path / "events"
    return path.read_text().splitlines() if path.exists() else []


# -- the pipeline file ---------------------------------------------------------------------

STAGE_A = '[[stage]]\nname = "a"\nargv = ["true"]\n'
# KIRI's own messages are matched whole. Where msgspec or tomllib words the problem, only what
# the README promises is checked: that the message names it (the key), or that there is one ("").
BAD = {
    "unknown top-level key": ('colour = "red"\n' + STAGE_A, "colour"),
    "unknown stage key": (STAGE_A + 'input = ["b"]\n', "input"),
    "unknown restart key": ("[restart]\ndelays = 2\n" + STAGE_A, "delays"),
    "unknown input": (
        STAGE_A + '[[stage]]\nname = "b"\nargv = ["true"]\ninputs = ["zz"]\n',
        "stage 'b': input 'zz' is not a stage",
    ),
    "duplicate name": (STAGE_A + STAGE_A, "stage name 'a' is used twice"),
    "cycle": (
        '[[stage]]\nname = "a"\nargv = ["true"]\ninputs = ["c"]\n'
        '[[stage]]\nname = "b"\nargv = ["true"]\ninputs = ["a"]\n'
        '[[stage]]\nname = "c"\nargv = ["true"]\ninputs = ["b"]\n',
        "stages form a cycle through inputs: a -> b -> c -> a",
    ),
    "stage feeding itself": (
        '[[stage]]\nname = "a"\nargv = ["true"]\ninputs = ["a"]\n',
        "stage 'a' lists itself as an input",
    ),
    "no stages": ('name = "empty"\n', "no stages: add at least one [[stage]]"),
    "empty argv": ('[[stage]]\nname = "a"\nargv = []\n', "stage 'a': argv is empty"),
    "invalid name": (
        '[[stage]]\nname = "../evil"\nargv = ["true"]\n',
        "invalid stage name '../evil'",
    ),
    "unknown alerts stage": ('alerts = "nope"\n' + STAGE_A, "alerts: 'nope' is not a stage"),
    "missing command": (
        '[[stage]]\nname = "a"\nargv = ["no-such-command-kiri"]\n',
        "stage 'a': command 'no-such-command-kiri' not found",
    ),
    "bad output": (STAGE_A + 'output = "stdout"\n', "output"),
    "zero delay": ("[restart]\ndelay = 0\n" + STAGE_A, "delay"),
    "not TOML": ("[[stage]\n", ""),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_pipeline_is_rejected_before_anything_starts(case, tmp_path, kiri_home):
    text, message = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = run("kiri.supervise.supervisor", str(path))
    assert out.returncode == 2
    errors = out.stderr.decode().splitlines()
    assert errors and all(e.startswith(f"Error: {path}: ") for e in errors)
    reasons = [e.removeprefix(f"Error: {path}: ") for e in errors]
    assert all(r.strip() for r in reasons) and any(message in r for r in reasons), errors
    assert not (kiri_home / "status.json").exists() and not (kiri_home / "logs").exists()


def test_a_missing_pipeline_file_is_a_usage_error(tmp_path):
    out = run("kiri.supervise.supervisor", str(tmp_path / "nope.toml"))
    assert out.returncode == 2
    assert out.stderr.decode().startswith(f"Error: cannot read {tmp_path / 'nope.toml'}: ")


def test_check_describes_the_default_pipeline(kiri_home):
    out = run("kiri.supervise.supervisor", "--check", str(ROOT / "pipelines" / "pulse.toml"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0].startswith("pipeline pulse (") and lines[0].endswith(
        "5 stages; alerts go to act"
    )
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert [(r[0], r[1], r[2]) for r in rows.values()] == [
        ("collect", "-", "pipe"),
        ("atom", "collect", "pipe"),
        ("decide", "atom", "pipe"),
        ("act", "decide", "pipe"),
        ("feedback", "act", "fifo"),
    ]
    bin_dir = Path(sys.executable).parent
    assert rows["decide"][3:] == [
        str(bin_dir / "kiri-decide"),
        "--feedback",
        str(kiri_home / "feedback.fifo"),
    ]
    assert rows["collect"][3:] == [
        str(bin_dir / "kiri-collect"),
        "pulse",
        "--warmup",
        "120",
    ]


def test_every_option_has_help():
    parser = supervisor.build_parser()
    assert [a.dest for a in parser._actions if not a.help] == []


# -- relaying ------------------------------------------------------------------------------


def test_a_replay_goes_through_the_real_stages_intact_and_in_order(
    supervise, tmp_path, installed_pulse, kiri_home
):
    fixture = FIXTURES / "pulse-normal.ndjson"
    recorded = [json.loads(line)["ts"] for line in fixture.read_bytes().splitlines()]
    replay = f"{sys.executable} -m kiri.collect.stage replay {fixture}; exit 125"
    sv = supervise(
        [
            {"name": "collect", "argv": ["sh", "-c", replay]},  # once: 125 is "do not restart me"
            {"name": "atom", "argv": ["kiri-atom", "pulse"], "inputs": ["collect"]},
            {"name": "decide", "argv": ["kiri-decide"], "inputs": ["atom"]},
            {
                "name": "decisions",
                "argv": helper("copy", "decisions", str(tmp_path / "decisions")),
                "inputs": ["decide"],
            },
            {
                "name": "raw",
                "argv": helper("copy", "raw", str(tmp_path / "raw")),
                "inputs": ["collect"],
            },
        ],
        **FAST,
    )
    wait_until(
        lambda: len(lines_of(tmp_path / "decisions")) >= len(recorded),
        timeout=60,
        what="a decision for every observation",
    )
    assert sv.wait_state("collect", "stopped")["exit_status"] == 125
    assert sv.stop() == 0
    assert (tmp_path / "raw").read_bytes() == fixture.read_bytes()
    decisions = [
        msgspec.json.decode(line, type=Decision) for line in lines_of(tmp_path / "decisions")
    ]
    assert [d.ts for d in decisions] == recorded
    status = sv.status()
    assert {(s["name"], s["state"], s["restarts"]) for s in status["stages"]} == {
        (name, "stopped", 0) for name in ("collect", "atom", "decide", "decisions", "raw")
    }
    assert status["atoms"]["pulse"]["ts"] == recorded[-1]  # the last score seen, sampled


def test_fan_in_never_interleaves_lines_longer_than_pipe_buf(supervise, tmp_path):
    size, count = 200_000, 30
    assert size > select.PIPE_BUF
    sv = supervise(
        [
            {"name": "a", "argv": helper("big", "A", str(count), str(size), "0.005")},
            {"name": "b", "argv": helper("big", "B", str(count), str(size), "0.005")},
            {
                "name": "sink",
                "argv": helper("copy", "sink", str(tmp_path / "out")),
                "inputs": ["a", "b"],
            },
        ],
        **FAST,
    )
    wait_until(
        lambda: sv.stage("a").get("state") == sv.stage("b").get("state") == "stopped",
        what="both producers to finish",
    )
    assert sv.stop() == 0
    lines = lines_of(tmp_path / "out")
    assert len(lines) == 2 * count
    for line in lines:
        char = line[:1]
        assert line == line[:7] + char * (size - 8) and char in (b"A", b"B")
    for char in (b"A", b"B"):
        assert [int(line[1:7]) for line in lines if line[:1] == char] == list(range(count))
    runs = sum(1 for prev, line in pairwise(lines) if prev[:1] != line[:1])
    assert runs >= 2  # both producers really wrote at the same time


def test_a_line_left_unfinished_by_a_producer_that_exits_is_dropped_and_counted(
    supervise, tmp_path
):
    sv = supervise(
        [
            {"name": "part", "argv": helper("partial")},
            {
                "name": "sink",
                "argv": helper("copy", "sink", str(tmp_path / "out")),
                "inputs": ["part"],
            },
        ],
        **FAST,
    )
    sv.wait_state("part", "stopped")
    assert sv.stop() == 0
    assert (tmp_path / "out").read_bytes() == b"one\ntwo\n"
    assert sv.stage("part")["dropped"] == 1
    assert [(e["name"], e["count"]) for e in sv.events() if e["event"] == "lines_dropped"] == [
        ("part", 1)
    ]


# -- restarts ------------------------------------------------------------------------------


def test_a_killed_middle_stage_is_restarted_and_the_stream_goes_on(supervise, tmp_path):
    out = tmp_path / "out"
    sv = supervise(
        [
            {"name": "tick", "argv": helper("tick", "0.01")},
            {"name": "middle", "argv": ["kiri-collect", "replay", "-"], "inputs": ["tick"]},
            {"name": "sink", "argv": helper("copy", "sink", str(out)), "inputs": ["middle"]},
        ],
        **FAST,
    )
    old = sv.wait_state("middle", "running")
    wait_until(lambda: len(lines_of(out)) >= 20, what="records through the middle stage")
    os.kill(old["pid"], signal.SIGKILL)
    new = sv.wait_state("middle", "running", restarts=1)
    assert new["pid"] != old["pid"] and new["exit_status"] == -9
    seen = len(lines_of(out))
    wait_until(lambda: len(lines_of(out)) >= seen + 20, what="records after the restart")
    assert sv.stop() == 0
    numbers = [json.loads(line)["values"]["n"] for line in lines_of(out)]
    assert numbers == sorted(set(numbers))  # whole records, in order, none twice
    assert numbers[-1] > numbers[seen - 1]
    died = [e for e in sv.events() if e["event"] == "stage_died"]
    assert [(e["name"], e["exit_status"]) for e in died] == [("middle", -9)]
    assert sv.stage("tick")["restarts"] == 0


CRASHER = "echo starting >&2; echo 'Error: no router at 10.9.9.9' >&2; exit 3"


def test_a_crash_looping_stage_fails_with_an_alert_and_the_rest_keeps_running(supervise, tmp_path):
    out = tmp_path / "out"
    sv = supervise(
        [
            {"name": "tick", "argv": helper("tick", "0.02")},
            {"name": "sink", "argv": helper("copy", "sink", str(out)), "inputs": ["tick"]},
            {"name": "crasher", "argv": ["sh", "-c", CRASHER]},
        ],
        alerts="sink",
        **FAST,
    )
    failed = sv.wait_state("crasher", "failed")
    assert (failed["restarts"], failed["exit_status"], failed["pid"]) == (2, 3, None)
    alerts = wait_until(
        lambda: [r for r in map(json.loads, lines_of(out)) if r["kind"] == "decision"],
        what="the alert",
    )
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["action"], alert["atom"], alert["severity"], alert["host"]) == (
        "alert",
        "supervisor",
        "critical",
        socket.gethostname(),
    )
    assert re.fullmatch(
        r"stage crasher failed: died 3 times in [0-9.]+ s "
        r"\(last exit status 3\); not restarting it. It said last: Error: no router at 10.9.9.9",
        alert["summary"],
    )
    assert alert["detail"].splitlines()[-2:] == ["starting", "Error: no router at 10.9.9.9"]
    errors = [e for e in sv.events() if e["level"] == "error"]
    assert [(e["event"], e["name"], e["deaths"], e["alerted"]) for e in errors] == [
        ("stage_failed", "crasher", 3, True)
    ]
    seen = len(lines_of(out))
    wait_until(lambda: len(lines_of(out)) >= seen + 10, what="the rest to keep running")
    sv.wait_state("tick", "running", restarts=0)
    assert sv.stage("crasher")["restarts"] == 2  # and it was not restarted since
    assert sv.stop() == 0


def decisions(path: Path) -> list[dict]:
    return [r for r in map(json.loads, lines_of(path)) if r["kind"] == "decision"]


def test_a_failed_training_of_kiri_feedback_reaches_the_sinks_through_kiri_act(
    supervise, tmp_path, kiri_home
):
    from kiri.home.store import Store

    with Store() as store:
        alert = Decision(ts=1000.0, id="a0", atom="pulse", host="vm", action="alert")
        store.record_alert(alert, "C9")
        store.add_verdict("a0", "dismiss", normal=True)  # and no recordings to learn it from
    out = tmp_path / "out"
    sv = supervise(
        [
            {"name": "tick", "argv": helper("tick", "0.5")},
            {"name": "feedback", "argv": stage_cmd("kiri.feedback.stage"), "inputs": ["tick"]},
            {"name": "act", "argv": stage_cmd("kiri.act.stage", "--sink", "log")},
            {"name": "sink", "argv": helper("copy", "sink", str(out)), "inputs": ["act"]},
        ],
        alerts="act",
        **FAST,
    )
    [alert] = wait_until(lambda: decisions(out), timeout=30, what="the training's alert")
    assert (alert["atom"], alert["severity"]) == ("supervisor", "warning")
    too_few = "Error: atom pulse needs at least 10 observations to train, found 0"
    assert alert["summary"].startswith(f"feedback: training pulse failed (exit status 1: {too_few}")
    assert too_few in alert["detail"].splitlines()[-1]
    outcome = wait_until(
        lambda: [r for r in map(json.loads, lines_of(out)) if r["kind"] == "outcome"],
        what="its delivery",
    )
    assert [(o["id"], o["sink"], o["ok"]) for o in outcome] == [(alert["id"], "log", True)]
    assert sv.stop() == 0


TOKEN = "s3cr3t-t0ken-9f2"
NOTICE = json.dumps({"event": "x", "notify": "disk 91% full", "detail": f"df says {TOKEN}"})


def test_the_same_notice_again_within_the_hour_is_only_logged(supervise, tmp_path, monkeypatch):
    monkeypatch.setenv("KIRI_PAGER_TOKEN", TOKEN)  # a secret by its name: redacted
    out = tmp_path / "out"
    code = f"import sys, time; [print({NOTICE!r}, file=sys.stderr) for _ in (1, 2)]; time.sleep(60)"
    sv = supervise(
        [
            {"name": "nagger", "argv": [sys.executable, "-c", code]},
            {"name": "sink", "argv": helper("copy", "sink", str(out))},
        ],
        alerts="sink",
        **FAST,
    )
    [alert] = wait_until(lambda: decisions(out), what="the notice")
    assert (alert["summary"], alert["detail"]) == ("nagger: disk 91% full", "df says ***")
    wait_until(
        lambda: [e for e in sv.events() if e["event"] == "stage_notice_repeated"],
        what="the repeat",
    )
    assert len(decisions(out)) == 1
    assert sv.stop() == 0


def test_exit_status_125_is_not_restarted_and_raises_no_alert(supervise, tmp_path):
    out = tmp_path / "out"
    sv = supervise(
        [
            {"name": "tick", "argv": helper("tick", "0.02")},
            {"name": "sink", "argv": helper("copy", "sink", str(out)), "inputs": ["tick"]},
            {"name": "quitter", "argv": helper("exit", "125")},
            {"name": "crasher", "argv": helper("exit", "1")},
        ],
        alerts="sink",
        **FAST,
    )
    sv.wait_state("crasher", "failed")  # several restart delays have passed by now
    quitter = sv.stage("quitter")
    assert (quitter["state"], quitter["restarts"], quitter["exit_status"]) == ("stopped", 0, 125)
    summaries = [json.loads(line)["summary"] for line in lines_of(out) if b'"decision"' in line]
    assert summaries and all("stage crasher failed" in s for s in summaries)
    assert not [e for e in sv.events() if e.get("name") == "quitter" and e["level"] != "info"]
    assert sv.stop() == 0


def test_the_restart_delay_doubles_up_to_its_cap_and_resets_after_a_healthy_run(supervise):
    sv = supervise(
        [
            {"name": "quick", "argv": helper("exit", "0")},  # a clean exit is restarted too
            {"name": "slow", "argv": helper("exit", "1", "0.4")},  # up longer than `healthy`
        ],
        restart={
            "delay": 0.05,
            "max_delay": 0.2,
            "healthy": 0.3,
            "fail_deaths": 6,
            "fail_window": 30,
        },
    )
    sv.wait_state("quick", "failed")
    sv.wait_state("slow", "backoff", restarts=2)
    assert sv.stop() == 0
    delays: dict[str, list[float]] = {}
    for e in sv.events():
        if e["event"] == "stage_died":
            delays.setdefault(e["name"], []).append(e["restart_in"])
    assert delays["quick"] == [0.05, 0.1, 0.2, 0.2, 0.2]  # the sixth death fails it
    assert delays["slow"][:3] == [0.05, 0.05, 0.05]


def test_a_pipeline_whose_stages_all_fail_exits_1(supervise, tmp_path):
    garbage = tmp_path / "not-a-program"
    garbage.write_bytes(b"\x00\x01 not an executable format")
    garbage.chmod(0o755)
    sv = supervise([{"name": "broken", "argv": [str(garbage)]}], **FAST)
    assert sv.wait() == 1
    assert sv.err.read_text().splitlines()[-1] == (
        "Error: every stage has ended, and these failed: broken"
    )
    events = sv.events()
    assert [e["event"] for e in events if e["level"] == "error"] == [
        "stage_exec_failed",
        "stage_exec_failed",
        "stage_exec_failed",
        "stage_failed",
    ]
    assert sv.stage("broken")["exit_status"] == 127


# -- stopping ------------------------------------------------------------------------------


def test_sigterm_stops_sources_first_and_the_rest_drains(supervise, tmp_path):
    out = tmp_path / "out"
    sv = supervise(
        [
            {"name": "tick", "argv": helper("tick", "0.001")},
            {"name": "slow", "argv": helper("copy", "slow", "", "0.002"), "inputs": ["tick"]},
            {"name": "sink", "argv": helper("copy", "sink", str(out)), "inputs": ["slow"]},
        ],
        **FAST,
    )
    wait_until(lambda: len(lines_of(out)) >= 100, what="records through the pipeline")
    assert sv.stop() == 0
    events = events_file(tmp_path)
    assert [e.split()[:2] for e in events] == [["tick", "TERM"], ["slow", "EOF"], ["sink", "EOF"]]
    produced = int(events[0].split()[2])
    numbers = [json.loads(line)["values"]["n"] for line in lines_of(out)]
    assert numbers == list(range(produced))  # everything the source wrote reached the end
    assert {s["state"] for s in sv.status()["stages"]} == {"stopped"}
    assert [e["event"] for e in sv.events()][-1] == "supervisor_done"


SLOW_RESTART = {  # a stage that dies waits a minute to be restarted
    "stop_timeout": 5,
    "restart": {"delay": 60, "max_delay": 60, "healthy": 5, "fail_deaths": 3, "fail_window": 10},
}


def after_backoff(tmp_path: Path, kiri_home: Path) -> list[str]:
    """A source that starts ticking once a stage is waiting to be restarted, so every line it
    writes is queued for that stage, none lost in the pipe of its dead process."""
    backoff = f'grep -q \'"state":"backoff"\' {kiri_home / "status.json"}'
    tick = " ".join(helper("tick", "0.005"))
    return ["sh", "-c", f"until {backoff} 2>/dev/null; do sleep 0.01; done; exec {tick}"]


def tick_lines(tmp_path: Path) -> int:
    """How many lines the tick source wrote before SIGTERM, as it said."""
    return int(next(e for e in events_file(tmp_path) if e.startswith("tick TERM")).split()[2])


def test_sigterm_while_a_stage_waits_to_restart_drains_what_is_queued_for_it(
    supervise, tmp_path, kiri_home
):
    out, raw, mark = tmp_path / "out", tmp_path / "raw", tmp_path / "died-once"
    once = f"[ -e {mark} ] && exec cat; touch {mark}; exit 1"  # dies, and copies when restarted
    sv = supervise(
        [
            {"name": "tick", "argv": after_backoff(tmp_path, kiri_home)},
            {"name": "raw", "argv": helper("copy", "raw", str(raw)), "inputs": ["tick"]},
            {"name": "flaky", "argv": ["sh", "-c", once], "inputs": ["tick"]},
            {"name": "sink", "argv": helper("copy", "sink", str(out)), "inputs": ["flaky"]},
        ],
        **SLOW_RESTART,
    )
    wait_until(lambda: len(lines_of(raw)) >= 50, what="lines queued for the waiting stage")
    assert sv.stage("flaky")["state"] == "backoff"
    assert sv.stop() == 0
    numbers = [json.loads(line)["values"]["n"] for line in lines_of(out)]
    assert numbers == list(range(tick_lines(tmp_path)))  # everything, through the restart
    assert sv.stage("flaky")["restarts"] == 1
    assert not [e for e in sv.events() if e["event"] == "lines_dropped"]


def test_what_a_stage_stopped_while_waiting_to_restart_cannot_take_is_counted(
    supervise, tmp_path, kiri_home
):
    raw, script = tmp_path / "raw", tmp_path / "vanishing"
    script.write_text('#!/bin/sh\nrm -- "$0"\nexit 1\n')  # its restart cannot start
    script.chmod(0o755)
    sv = supervise(
        [
            {"name": "tick", "argv": after_backoff(tmp_path, kiri_home)},
            {"name": "raw", "argv": helper("copy", "raw", str(raw)), "inputs": ["tick"]},
            {"name": "gone", "argv": [str(script)], "inputs": ["tick"]},
        ],
        **SLOW_RESTART,
    )
    wait_until(lambda: len(lines_of(raw)) >= 50, what="lines queued for the waiting stage")
    assert sv.stop() == 0
    dropped = [e for e in sv.events() if e["event"] == "lines_dropped"]
    assert sum(e["count"] for e in dropped) == tick_lines(tmp_path)  # every line, counted once
    assert dropped[0]["name"] == "gone"
    assert dropped[0]["reason"] == (
        "queued for it when stage gone is stopped and will not run again"
    )
    assert {e["reason"] for e in dropped[1:]} <= {"stage gone is stopped and will not run again"}


def test_what_ignores_the_stop_signal_is_killed_after_the_stop_timeout(supervise):
    sv = supervise(
        [{"name": "stubborn", "argv": helper("stubborn")}], **{**FAST, "stop_timeout": 0.5}
    )
    pid = sv.wait_state("stubborn", "running")["pid"]
    started = time.monotonic()
    sv.proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert sv.wait() == 0
    assert time.monotonic() - started >= 0.5
    assert not psutil.pid_exists(pid)
    events = sv.events()
    assert [e["signal"] for e in events if e["event"] == "stopping"] == ["SIGINT"]
    assert [(e["event"], e["pid"]) for e in events if e["level"] == "warning"] == [
        ("stage_killed", pid)
    ]
    assert sv.stage("stubborn")["exit_status"] == -signal.SIGKILL


def test_a_second_stop_signal_kills_at_once(supervise):
    sv = supervise(
        [{"name": "stubborn", "argv": helper("stubborn")}], **{**FAST, "stop_timeout": 60}
    )
    pid = sv.wait_state("stubborn", "running")["pid"]
    started = time.monotonic()
    sv.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: sv.stage("stubborn").get("state") == "stopping", what="stopping")
    time.sleep(SAME_REQUEST)  # a signal this soon after the first repeats it (below)
    assert sv.stop() == 0
    assert time.monotonic() - started < 10 and not psutil.pid_exists(pid)


def test_two_stop_signals_at_once_are_one_request(supervise):
    # as `timeout` sends them: to the supervisor, then to its process group
    sv = supervise(
        [{"name": "stubborn", "argv": helper("stubborn")}], **{**FAST, "stop_timeout": 0.5}
    )
    sv.wait_state("stubborn", "running")
    started = time.monotonic()
    sv.proc.send_signal(signal.SIGTERM)
    sv.proc.send_signal(signal.SIGTERM)
    assert sv.wait() == 0
    assert time.monotonic() - started >= 0.5  # it waited for the stage, as after one signal


# -- logs and status -----------------------------------------------------------------------


def test_each_stage_logs_to_its_own_rotated_file(supervise, kiri_home):
    sv = supervise(
        [
            {"name": "chatter", "argv": helper("chatter", "400")},
            {"name": "quiet", "argv": helper("exit", "125")},
        ],
        logs={"max_bytes": 4096, "keep": 2},
        **FAST,
    )
    assert sv.wait() == 0  # every stage has stopped: nothing is left to supervise
    logs = kiri_home / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "chatter.log",
        "chatter.log.1",
        "chatter.log.2",
        "quiet.log",
    ]
    kept = [logs / "chatter.log.2", logs / "chatter.log.1", logs / "chatter.log"]
    assert all(p.stat().st_mode & 0o777 == 0o600 and p.stat().st_size <= 4096 for p in kept)
    lines = [line for p in kept for line in p.read_bytes().splitlines()]
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 400))  # the newest, whole and in order
    assert all(len(line) == 99 for line in lines)
    assert (logs / "quiet.log").read_bytes() == b""


def test_kiri_status_shows_the_running_pipeline(supervise):
    sv = supervise(
        [
            {"name": "tick", "argv": helper("tick", "0.05")},
            {"name": "sink", "argv": helper("copy", "sink", os.devnull), "inputs": ["tick"]},
        ],
        **FAST,
    )
    tick = sv.wait_state("tick", "running")
    sv.wait_state("sink", "running")
    wait_until(lambda: "tick" in sv.status().get("atoms", {}), what="a sampled score")
    life = State(phase="scoring", model="m3", span=6 * 3600, threshold=7.2, updated=time.time())
    life.landed = [time.time()] * 3  # what kiri-atom --learn writes as its model grows
    state_path("tick").parent.mkdir(parents=True, exist_ok=True)
    state_path("tick").write_bytes(msgspec.json.encode(life))
    out = run("kiri.cli", "status")
    assert out.returncode == 0, out.stderr
    heading, stages, atoms = out.stdout.decode().strip().split("\n\n")
    assert heading.startswith(f"kiri-supervise {sv.proc.pid}: pipeline test ({sv.file}), up ")
    rows = [line.split() for line in stages.splitlines()]
    assert rows[0] == ["STAGE", "STATE", "PID", "RESTARTS", "UPTIME", "CPU%", "RSS", "LAST", "EXIT"]
    assert [r[:2] for r in rows[1:]] == [["tick", "running"], ["sink", "running"]]
    _, _, pid, restarts, uptime, cpu, rss, unit, last_exit = rows[1]
    assert (int(pid), restarts, unit, last_exit) == (tick["pid"], "0", "MiB", "-")
    assert re.fullmatch(r"\d+s", uptime) and float(cpu) >= 0 and float(rss) > 1
    rows = [line.split() for line in atoms.splitlines()]
    assert rows[0] == ["ATOM", "HOST", "SURPRISE", "THRESHOLD", "SEEN", "MODEL"]
    assert [r[:2] + r[3:4] for r in rows[1:]] == [["tick", "h", "1.500"]]
    assert atoms.splitlines()[1].endswith("model 3 of the day, trained on 6 h, threshold 7.2")
    assert float(rows[1][2]) > 0
    assert sv.stop() == 0


def test_kiri_status_says_when_no_supervisor_is_running(supervise, tmp_path):
    sv = supervise(
        [
            {"name": "part", "argv": helper("partial")},
            {
                "name": "sink",
                "argv": helper("copy", "sink", str(tmp_path / "out")),
                "inputs": ["part"],
            },
        ],
        **FAST,
    )
    sv.wait_state("sink", "running")
    assert sv.stop() == 0
    out = run("kiri.cli", "status")
    assert out.returncode == 1
    text = out.stdout.decode()
    assert text.startswith(f"kiri-supervise is not running: pid {sv.proc.pid} has ended.")
    rows = [line.split() for line in text.splitlines()[2:] if line]
    assert [r[:4] for r in rows[1:]] == [
        ["part", "stopped", "-", "0"],
        ["sink", "stopped", "-", "0"],
    ]


def test_kiri_status_without_a_status_file_is_an_error(kiri_home):
    out = run("kiri.cli", "status")
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode().startswith(
        f"Error: no status file at {kiri_home / 'status.json'}: kiri-supervise has not run"
    )


def test_a_second_supervisor_on_the_same_home_is_refused(supervise, tmp_path):
    sv = supervise([{"name": "tick", "argv": helper("tick", "0.05")}], **FAST)
    sv.wait_state("tick", "running")
    out = run("kiri.supervise.supervisor", str(sv.file))
    assert out.returncode == 1
    assert (
        out.stderr.decode()
        .splitlines()[-1]
        .startswith(f"Error: another kiri-supervise (pid {sv.proc.pid}) is running with KIRI_HOME")
    )
    assert sv.proc.poll() is None and sv.stage("tick")["restarts"] == 0
    assert sv.stop() == 0


def test_kiri_status_shows_the_cpu_each_stage_and_what_it_started_burns(supervise):
    burn = f"{sys.executable} -c 'while True: pass'; true"  # sh waits for it: its child burns
    sv = supervise(
        [{"name": "burn", "argv": ["sh", "-c", burn]}, {"name": "idle", "argv": ["sleep", "60"]}],
        **FAST,
    )
    wait_until(
        lambda: (sv.stage("burn").get("cpu") or 0) > 30, timeout=30, what="burn's CPU measured"
    )
    out = run("kiri.cli", "status", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["supervisor"]["pid"] == sv.proc.pid and doc["supervisor"]["alive"] is True
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["burn"]["cpu"] > 30 and stages["idle"]["cpu"] < 10
    assert stages["burn"]["rss"] > 1 << 20
    assert set(stages["burn"]) == {
        "name",
        "state",
        "pid",
        "restarts",
        "started",
        "exit_status",
        "dropped",
        "cpu",
        "rss",
    }
    rows = {
        line.split()[0]: line.split()
        for line in run("kiri.cli", "status").stdout.decode().split("\n\n")[1].splitlines()
    }
    assert float(rows["burn"][5]) > 30 and float(rows["idle"][5]) < 10
    assert sv.stop() == 0
    out = run("kiri.cli", "status", "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["supervisor"]["alive"] is False
    assert [(s["pid"], s["cpu"]) for s in doc["stages"]] == [(None, None), (None, None)]
