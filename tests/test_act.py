"""kiri-act, run as the real executable on fixture streams: outcomes, the three sinks, faults."""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from typing import cast

import pytest
from conftest import fixture_bytes, log_events, stage_cmd

from kiri.act.delivery import deliver
from kiri.act.sinks import Sink, SinkError
from kiri.act.stage import parse_args
from kiri.wire.log import Log as KiriLog
from kiri.wire.records import Decision
from kiri.wire.stream import Stream

ACT = "kiri.act.stage"
LINES = fixture_bytes("decisions.ndjson").splitlines()
OBS, OK0, SCORE, ALERT, OK2, SUPPRESS, VERDICT, RESOLVE, RETRAIN, RULE = LINES
STREAM = b"\n".join(LINES) + b"\n"
ALERT_TEXT = (
    "18:28:56 d-1 WARNING pulse@vm: CPU 97% (C9) and memory 95% (M9) are unusual for this host "
    "(surprise 4.3, threshold 3.2)"
)
# a decision from before alerts explained their culprits: its named tokens, each with its z
# (S2 and L4 are below the threshold: not named)
CULPRIT_LINES = ["         d-1   M9 (z 12.1)", "         d-1   C9 (z 9.4)"]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # the terminal sink prints clock times


def ndjson(*lines: bytes) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def act(*args: str, input: bytes = STREAM) -> tuple[subprocess.CompletedProcess, list]:
    """Run kiri-act without a controlling terminal; return it and its output (see `records`)."""
    started = time.time()
    out = subprocess.run(
        stage_cmd(ACT, *args),
        input=input,
        capture_output=True,
        timeout=30,
        start_new_session=True,
        check=False,
    )
    return out, records(out.stdout, started, time.time())


def records(stdout: bytes, started: float, ended: float) -> list:
    """Output lines: pass-through records as raw bytes, outcomes as dicts without their ts
    (checked to be a time during the run)."""
    result = []
    for line in stdout.splitlines():
        record = json.loads(line)
        if record["kind"] != "outcome":
            result.append(line)
            continue
        assert started <= record.pop("ts") <= ended
        if record["sink"] == "retrain":  # a real training run was started: its pid varies
            assert record["detail"].startswith("training pulse (pid ")
            record["detail"] = "training"
        result.append(record)
    return result


def outcome(decision: bytes, sink: str, **fields) -> dict:
    d = json.loads(decision)
    return {
        "kind": "outcome",
        "id": d["id"],
        "action": d["action"],
        "sink": sink,
        "ok": True,
        "error": "",
        "detail": "",
        **fields,
    }


def retrained() -> dict:
    """The retrain sink's outcome for the fixture's retrain decision: a training run started."""
    return outcome(RETRAIN, "retrain", detail="training")


def logged_stream(log: str) -> list[bytes | dict]:
    """The kinds fixture through kiri-act --sink log: every record on, in order, each decision
    followed by its outcome, and the retrain's own report."""
    return [
        OBS,
        SCORE,
        ALERT,
        outcome(ALERT, "log", detail=log),
        SUPPRESS,
        outcome(SUPPRESS, "log", detail=log),
        VERDICT,
        RESOLVE,
        outcome(RESOLVE, "log", detail=log),
        RETRAIN,
        outcome(RETRAIN, "log", detail=log),
        retrained(),
        RULE,
    ]


def notified(alert_outcome: dict, resolve_outcome: dict) -> list:
    """The output for the whole fixture when only a notifying sink (and retrain) delivers."""
    return [
        OBS,
        SCORE,
        ALERT,
        alert_outcome,
        SUPPRESS,
        VERDICT,
        RESOLVE,
        resolve_outcome,
        RETRAIN,
        retrained(),
        RULE,
    ]


def outcomes(got: list) -> list[dict]:
    return [r for r in got if isinstance(r, dict)]


def human_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if not line.startswith("{")]


def events(stderr: bytes, name: str) -> list[dict]:
    return [e for e in log_events(stderr) if e["event"] == name]


def exec_args(code: str, *args: str, retries: str = "0", keep: str = "0") -> list[str]:
    """The exec sink running Python `code`; without an outbox unless `keep` says how long."""
    return [
        "--sink",
        "exec",
        "--retries",
        retries,
        "--outbox-keep",
        keep,
        "--",
        sys.executable,
        "-c",
        code,
        *args,
    ]


# -- outcomes and the log sink ---------------------------------------------------------------


def test_each_decision_but_ok_becomes_an_outcome_and_other_kinds_pass_in_order(kiri_home):
    out, got = act()
    log = str(kiri_home / "logs" / "alerts.ndjson")
    assert out.returncode == 0
    # each decision goes on downstream, for kiri-feedback, followed by its outcomes
    assert got == logged_stream(log)
    logged = [e for e in log_events(out.stderr) if e["event"] != "stream_end"]
    assert [(e["event"], e["id"], e["level"]) for e in logged] == [
        ("alert", "d-1", "warning"),
        ("suppress", "d-3", "info"),
        ("resolve", "d-4", "info"),
        ("retrain", "d-5", "info"),
    ]
    assert logged[0]["atom"] == "pulse" and logged[0]["host"] == "vm"
    assert logged[0]["summary"] == json.loads(ALERT)["summary"]
    # the alert as every sink tells it, with its short id
    assert logged[0]["short"] == "d-1"
    assert logged[0]["text"].splitlines() == [ALERT_TEXT[9:], *(c.strip() for c in CULPRIT_LINES)]


def test_the_log_sink_appends_each_decision_to_a_private_file(kiri_home):
    path = kiri_home / "logs" / "alerts.ndjson"
    act()
    assert path.read_bytes() == ndjson(ALERT, SUPPRESS, RESOLVE, RETRAIN)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    path.chmod(0o644)
    out, _ = act("--sink", "log", input=ndjson(OK0, ALERT))
    assert out.returncode == 0
    assert path.read_bytes() == ndjson(ALERT, SUPPRESS, RESOLVE, RETRAIN, ALERT)
    assert path.stat().st_mode & 0o777 == 0o600


def test_sinks_report_in_the_order_given_and_only_for_the_actions_they_take(kiri_home):
    out, got = act("--sink", "terminal", "--sink", "log", "--sink", "terminal")
    log = str(kiri_home / "logs" / "alerts.ndjson")
    assert out.returncode == 0
    assert got == [
        OBS,
        SCORE,
        ALERT,
        outcome(ALERT, "terminal", detail="stderr"),
        outcome(ALERT, "log", detail=log),
        SUPPRESS,
        outcome(SUPPRESS, "log", detail=log),
        VERDICT,
        RESOLVE,
        outcome(RESOLVE, "terminal", detail="stderr"),
        outcome(RESOLVE, "log", detail=log),
        RETRAIN,
        outcome(RETRAIN, "log", detail=log),
        retrained(),
        RULE,
    ]


def test_a_log_that_cannot_be_opened_is_a_one_line_error(kiri_home):
    kiri_home.mkdir()
    (kiri_home / "logs").write_text("not a directory")
    out, got = act()
    assert out.returncode == 1 and got == []
    assert out.stderr.decode().splitlines()[-1].startswith("Error: cannot open ")


# -- the terminal sink -------------------------------------------------------------------------


def test_the_terminal_sink_writes_to_stderr_without_a_terminal():
    out, got = act("--sink", "terminal")
    assert out.returncode == 0
    assert got == notified(
        outcome(ALERT, "terminal", detail="stderr"), outcome(RESOLVE, "terminal", detail="stderr")
    )
    assert human_lines(out.stderr) == [
        ALERT_TEXT,
        *CULPRIT_LINES,
        "18:29:06 d-3 SUPPRESSED pulse@vm: CPU 96% (C9) matches rule r-1 (backup job)",
        "         d-3   C9 (z 9.1)",
        "18:30:06 d-4 RESOLVED pulse@vm: pulse is back to normal on vm after 70 s",
    ]


def test_on_a_terminal_ok_updates_a_status_line_that_an_alert_clears_first():
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        stage_cmd(ACT, "--sink", "terminal"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(ndjson(OK0, OK2, ALERT, OK0))
    proc.stdin.close()
    screen = b""
    while select.select([leader], [], [], 10)[0]:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        screen += chunk
    os.close(leader)
    assert proc.wait(10) == 0
    assert len(proc.stdout.read().splitlines()) == 2  # the alert, and its outcome
    clear = "\r\x1b[K"
    assert screen.decode() == (
        f"{clear}18:28:45 pulse@vm surprise 0.42 / threshold 1.00 normal"
        f"{clear}18:29:01 pulse@vm surprise 0.87 / threshold 3.20 normal"
        f"{clear}\x1b[1;31m{ALERT_TEXT}\x1b[0m\r\n{CULPRIT_LINES[0]}\r\n{CULPRIT_LINES[1]}\r\n"
        f"{clear}18:28:45 pulse@vm surprise 0.42 / threshold 1.00 normal\r\n"
    )


def test_control_characters_from_records_never_reach_the_terminal():
    evil = json.loads(ALERT) | {"host": "vm\x1b]0;owned\x07", "summary": "a\nb\rc"}
    out, _ = act("--sink", "terminal", input=json.dumps(evil).encode() + b"\n")
    assert human_lines(out.stderr)[0] == "18:28:56 d-1 WARNING pulse@vm?]0;owned?: a?b?c"


# -- the exec sink -----------------------------------------------------------------------------


def test_the_exec_sink_gets_the_decision_line_on_stdin_and_its_stdout_is_dropped(tmp_path):
    got_path = tmp_path / "got"
    code = "import sys; print('noise'); open(sys.argv[1], 'ab').write(sys.stdin.buffer.read())"
    out, got = act(*exec_args(code, str(got_path)))
    assert out.returncode == 0
    assert got == notified(
        outcome(ALERT, "exec", detail="exit status 0"),
        outcome(RESOLVE, "exec", detail="exit status 0"),
    )
    assert got_path.read_bytes() == ndjson(ALERT, RESOLVE)


def test_the_exec_sink_hands_the_command_the_alert_as_people_read_it(tmp_path):
    got_path = tmp_path / "got"
    code = (
        "import os, sys; open(sys.argv[1], 'a').write("
        "os.environ['KIRI_ALERT_ID'] + '|' + os.environ['KIRI_ALERT_TEXT'] + '\\n')"
    )
    out, _ = act(*exec_args(code, str(got_path)))
    assert out.returncode == 0
    alert = got_path.read_text().split("d-4|")[0]
    assert alert.splitlines() == [
        "d-1|" + ALERT_TEXT[9:],
        *(c.strip() for c in CULPRIT_LINES),
    ]


def test_a_failing_command_is_reported_with_its_last_stderr_line():
    code = "import sys; sys.stderr.write('starting\\npager unreachable\\n'); sys.exit(3)"
    out, got = act(*exec_args(code))
    failed = {"ok": False, "error": "exit status 3: pager unreachable", "detail": "attempts: 1"}
    assert out.returncode == 0
    assert got == notified(outcome(ALERT, "exec", **failed), outcome(RESOLVE, "exec", **failed))
    assert [(e["id"], e["attempt"]) for e in events(out.stderr, "sink_failed")] == [
        ("d-1", 1),
        ("d-4", 1),
    ]


def test_a_command_that_times_out_is_killed_with_what_it_started(tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    out, got = act(
        "--exec-timeout",
        "0.5",
        "--sink",
        "exec",
        "--retries",
        "0",
        "--outbox-keep",
        "0",
        "--",
        "sh",
        "-c",
        f"sleep 5 & echo $! > {pid_file}; wait",
        input=ndjson(ALERT, VERDICT, RULE),
    )
    assert time.monotonic() - started < 4
    assert out.returncode == 0
    assert got == [
        ALERT,
        outcome(ALERT, "exec", ok=False, error="timed out after 0.5 s", detail="attempts: 1"),
        VERDICT,
        RULE,
    ]
    assert not _running(int(pid_file.read_text()))


def _running(pid: int) -> bool:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # a killed orphan may wait a moment to be reaped
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.02)
    return True


def test_a_missing_program_is_reported_and_the_stream_goes_on():
    out, got = act(
        "--sink",
        "exec",
        "--retries",
        "0",
        "--outbox-keep",
        "0",
        "--",
        "/nonexistent/kiri-pager",
        input=ndjson(ALERT, VERDICT),
    )
    assert out.returncode == 0
    # KIRI names the program; why it could not run is the system's wording (strerror).
    error = got[1].pop("error")
    assert error.startswith("cannot run /nonexistent/kiri-pager: ")
    assert error.removeprefix("cannot run /nonexistent/kiri-pager: ").strip()
    got[1]["error"] = ""
    assert got == [ALERT, outcome(ALERT, "exec", ok=False, detail="attempts: 1"), VERDICT]


def test_a_failed_delivery_is_retried_after_a_backoff_until_it_works(tmp_path):
    tries = tmp_path / "tries"
    code = (
        "import sys; t = open(sys.argv[1], 'a+'); t.write('x'); t.seek(0); "
        "sys.exit(0 if len(t.read()) == 2 else 1)"
    )
    started = time.monotonic()
    out, got = act(*exec_args(code, str(tries), retries="2"), input=ndjson(ALERT))
    assert time.monotonic() - started >= 0.5
    assert outcomes(got) == [outcome(ALERT, "exec", detail="exit status 0")]
    assert tries.read_text() == "xx"
    assert [e["attempt"] for e in events(out.stderr, "sink_failed")] == [1]


def test_retries_back_off_twice_as_long_each_time_then_report_the_last_error(tmp_path):
    tries = tmp_path / "tries"
    code = "import sys; open(sys.argv[1], 'a').write('x'); sys.exit('still down')"
    started = time.monotonic()
    _, got = act(*exec_args(code, str(tries), retries="2"), input=ndjson(ALERT, RULE))
    assert time.monotonic() - started >= 1.5  # waited 0.5 s, then 1 s
    assert got == [
        ALERT,
        outcome(ALERT, "exec", ok=False, error="exit status 1: still down", detail="attempts: 3"),
        RULE,
    ]
    assert tries.read_text() == "xxx"


def test_sigterm_during_a_backoff_stops_at_once_and_reports_the_failure(tmp_path):
    marker = tmp_path / "ran"
    code = "import sys; open(sys.argv[1], 'w').close(); sys.exit(1)"
    proc = subprocess.Popen(
        stage_cmd(ACT, *exec_args(code, str(marker), retries="5")),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(ndjson(ALERT))
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - stopped < 1.5  # not the 15.5 s five retries would take
    assert proc.returncode == 0
    assert records(out, 0, time.time()) == [
        ALERT,
        outcome(ALERT, "exec", ok=False, error="exit status 1", detail="attempts: 1"),
    ]
    assert b"Traceback" not in err


# -- bad input, a closed reader, signals, usage ------------------------------------------------


def test_bad_lines_among_good_ones_are_reported_by_line_and_skipped(kiri_home):
    bad = b'{"kind":"decision","id":"d-9","surprise":"high"}'
    out, got = act(input=ndjson(OBS, b"not json", ALERT, bad, RESOLVE))
    log = str(kiri_home / "logs" / "alerts.ndjson")
    assert out.returncode == 0
    assert got == [
        OBS,
        ALERT,
        outcome(ALERT, "log", detail=log),
        RESOLVE,
        outcome(RESOLVE, "log", detail=log),
    ]
    rejected = events(out.stderr, "bad_record")
    assert [e["line"] for e in rejected] == [2, 4]
    # The reasons are msgspec's wording, passed through: that each has one is KIRI's part.
    assert all(isinstance(e["reason"], str) and e["reason"].strip() for e in rejected)


def test_closed_reader_exits_zero_without_traceback(tmp_path):
    big = tmp_path / "big.ndjson"
    big.write_bytes(STREAM * 2000)
    cmd = " ".join(stage_cmd(ACT))
    out = subprocess.run(
        ["bash", "-c", f'{cmd} < {big} | head -n 1; echo "status=${{PIPESTATUS[0]}}"'],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.stdout.splitlines() == [OBS, b"status=0"]
    assert b"Traceback" not in out.stderr and b"BrokenPipe" not in out.stderr


def test_sigterm_mid_stream_flushes_what_was_read_and_exits_zero(kiri_home):
    proc = subprocess.Popen(
        stage_cmd(ACT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(STREAM + ALERT[:40])  # ends mid-record
    proc.stdin.flush()
    got = b""
    while got.count(b"\n") < 13:
        assert select.select([proc.stdout], [], [], 10)[0], "no output while input was open"
        got += os.read(proc.stdout.fileno(), 1 << 16)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    log = str(kiri_home / "logs" / "alerts.ndjson")
    assert proc.returncode == 0
    assert records(got + out, 0, time.time()) == logged_stream(log)
    assert b"Traceback" not in err and events(err, "bad_record") == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sink", "exec"], "--sink exec needs a command: -- CMD [ARG ...]"),
        (["--sink", "exec", "--"], "--sink exec needs a command: -- CMD [ARG ...]"),
        (["--", "true"], "a command after -- is only used with --sink exec"),
        (["--retries", "-1"], "must be 0 or more, not -1"),
        (["--exec-timeout", "0"], "must be a number of seconds above 0, not 0"),
        # argparse's own refusals: their wording is argparse's, only the exit status is KIRI's.
        (["--sink", "pager"], None),
        (["extra"], None),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip()
    if message is not None:
        assert message in err


def test_the_real_command_exits_2_on_a_usage_error():
    out, got = act("--sink", "exec")
    assert out.returncode == 2 and got == []
    assert b"--sink exec needs a command" in out.stderr


def test_everything_after_the_separator_is_the_command_untouched():
    args = parse_args(["--sink", "exec", "--sink", "log", "--", "page", "--sink", "--", "x"])
    assert args.sink == ["exec", "log"] and args.command == ["page", "--sink", "--", "x"]


def test_a_refusal_is_not_retried_and_a_requested_wait_replaces_the_backoff():
    class Sleeps:
        def __init__(self):
            self.waits = []

        def flush(self):
            pass

        def sleep(self, seconds):
            self.waits.append(seconds)
            return True

    class Answers(Sink):
        name = "answers"

        def __init__(self, *errors):
            self.errors = list(errors)

        def deliver(self, decision, line):
            if self.errors:
                raise self.errors.pop(0)
            return "delivered"

    class Log:
        def warning(self, *args, **kwargs):
            pass

    decision = Decision(id="d-1", action="alert")
    sleeps = Sleeps()
    # stand-ins with only what deliver uses of a Stream and of a logger
    stream, log = cast(Stream, sleeps), cast(KiriLog, Log())
    out, _, retry, _ = deliver(stream, Answers(SinkError("no", retry=False)), decision, b"", 3, log)
    assert not retry
    assert (out.ok, out.detail, sleeps.waits) == (False, "attempts: 1", [])
    out, *_ = deliver(
        stream,
        Answers(SinkError("slow down", wait=7.0), SinkError("busy")),
        decision,
        b"",
        3,
        log,
    )
    assert out.ok and sleeps.waits == [7.0, 1.0]  # asked-for wait, then the usual backoff


def test_an_unexpected_error_of_a_sink_is_reported_and_logged_without_its_secrets():
    class Leaky(Sink):
        name = "leaky"
        secrets = ("hook/t0ken-s3cret",)

        def deliver(self, decision, line):
            raise ValueError("cannot POST to 'https://h.example/hook/t0ken-s3cret'")

    class Flushes:
        def flush(self):
            pass

    class Log:
        def __init__(self):
            self.events = []

        def warning(self, event, **fields):
            self.events.append(fields)

    log = Log()
    out, *_ = deliver(
        cast(Stream, Flushes()),
        Leaky(),
        Decision(id="d-1", action="alert"),
        b"",
        0,
        cast(KiriLog, log),
    )
    assert out.error == "ValueError: cannot POST to 'https://h.example/***'"
    [event] = log.events
    assert event["error"] == out.error and "ValueError" in event["exception"]
    assert "s3cret" not in event["exception"]
