"""kiri-collect exec, and atoms defined in config.toml: custom atoms without code."""

import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest
from conftest import FIXTURES, log_events, measured, run, stage_cmd

from kiri.wire.records import Obs, Score

METRICS = str(FIXTURES / "exec" / "metrics.py")
decode_obs = msgspec.json.Decoder(Obs).decode
decode_score = msgspec.json.Decoder(Score).decode


def exec_cmd(*args: str, command: tuple[str, ...] = ()) -> list[str]:
    return stage_cmd(
        "kiri.collect.stage",
        "exec",
        *args,
        *(("--", sys.executable, METRICS, *command) if command else ()),
    )


def collect(*args: str, command: tuple[str, ...] = (), timeout: float = 30):
    return subprocess.run(
        exec_cmd(*args, command=command), capture_output=True, timeout=timeout, check=False
    )


def failures(stderr: bytes) -> list[str]:
    return [e["reason"] for e in log_events(stderr) if e["event"] == "run_failed"]


def write_config(home, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def gpu_config(fields: str, interval: float = 0.05) -> str:
    command = json.dumps([sys.executable, METRICS, "gpu"])
    return f"[atoms.gpu]\ncommand = {command}\ninterval = {interval}\n[atoms.gpu.fields]\n{fields}"


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# -- kiri-collect exec ----------------------------------------------------------------------


def test_each_run_of_the_command_is_one_observation(kiri_home):
    out = collect(
        "--atom", "gpu", "--interval", "0.05", "--count", "3", "--host", "rig", command=("gpu",)
    )
    assert out.returncode == 0, out.stderr
    records = [decode_obs(line) for line in out.stdout.splitlines()]
    assert len(records) == 3
    for obs in records:
        assert (obs.atom, obs.host) == ("gpu", "rig")
        values = measured(obs.values)
        assert set(values) == {"temp", "util", "fans"} and values["fans"] == 2.0
        assert 20 <= values["util"] <= 60
    assert records[0].ts < records[1].ts < records[2].ts
    assert failures(out.stderr) == []


def test_bad_runs_are_logged_with_their_reason_and_the_collector_goes_on(kiri_home, tmp_path):
    modes = ("gpu", "text", "string", "null", "array", "empty", "fail", "flood", "gpu")
    out = collect(
        "--interval",
        "0.01",
        "--count",
        str(len(modes)),
        command=("cycle", str(tmp_path / "runs"), *modes),
    )
    assert out.returncode == 0, out.stderr
    assert [decode_obs(line).atom for line in out.stdout.splitlines()] == ["exec", "exec"]
    reasons = failures(out.stderr)
    assert len(reasons) == 7
    assert reasons[0].startswith("printed something that is not JSON (")
    assert reasons[0].endswith("): temp=41.5 fans=2")
    assert reasons[1:6] == [
        "value of 'temp' is not a number: \"hot\"",
        "value of 'fans' is not a number: null",
        "printed JSON that is not an object of numbers: [41.5, 2]",
        "printed nothing (expected a JSON object of numbers)",
        "exit status 3: sensor offline",
    ]
    assert reasons[6] == "printed more than 65536 bytes"
    assert {e["command"] for e in log_events(out.stderr) if e["event"] == "run_failed"} == {
        sys.executable
    }


def test_a_command_that_overruns_is_killed_with_its_children(kiri_home, tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    out = collect(
        "--timeout", "1", "--count", "1", "--interval", "0.1", command=("hang", str(pidfile))
    )
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 10
    assert out.stdout == b"" and failures(out.stderr) == ["timed out after 1 s"]
    assert gone(int(pidfile.read_text()))


def test_a_missing_command_means_the_source_is_absent(kiri_home):
    out = subprocess.run(
        stage_cmd("kiri.collect.stage", "exec", "--", "kiri-no-such-sensor"),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 125  # NOT_RESTARTED: the supervisor leaves it stopped
    assert out.stderr.decode().strip() == "Error: command not found: kiri-no-such-sensor"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--atom", "gpu"), "Error: no command to run: give one after --"),
        (("--atom", "GPU!", "--", "true"), "Error: invalid atom name 'GPU!'"),
        (("--timeout", "0", "--", "true"), "Error: --timeout must be greater than 0"),
    ],
)
def test_usage_mistakes_are_one_line_errors(kiri_home, args, message):
    out = subprocess.run(
        stage_cmd("kiri.collect.stage", "exec", *args),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.decode().startswith(message) and out.stderr.count(b"\n") == 1


def test_sigterm_while_the_command_runs_stops_it_and_exits(kiri_home, tmp_path):
    pidfile = tmp_path / "child.pid"
    proc = subprocess.Popen(
        exec_cmd("--timeout", "60", command=("hang", str(pidfile))),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and out == b""
    assert b"Traceback" not in err and failures(err) == []
    assert gone(int(pidfile.read_text()))


def test_sigterm_between_runs_ends_the_stream_cleanly(kiri_home):
    proc = subprocess.Popen(
        exec_cmd("--interval", "60", command=("gpu",)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = decode_obs(proc.stdout.readline())  # the first run comes after at most a second
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and out == b""
    assert first.values["fans"] == 2.0 and b"Traceback" not in err


def test_a_closed_reader_ends_the_collector_quietly(kiri_home):
    collector = subprocess.Popen(
        exec_cmd("--interval", "0.05", command=("gpu",)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert collector.stdout is not None and collector.stderr is not None
    head = subprocess.run(
        ["head", "-n", "1"], stdin=collector.stdout, capture_output=True, check=False
    )
    collector.stdout.close()
    err = collector.stderr.read()
    assert collector.wait(10) == 0
    assert decode_obs(head.stdout).atom == "exec" and b"Traceback" not in err


# -- atoms defined in config.toml ----------------------------------------------------------


def test_a_config_atom_collects_trains_and_scores(kiri_home, tmp_path):
    write_config(
        kiri_home,
        gpu_config('temp = { lo = 20, hi = 100, levels = 8, unit = "C" }\nutil = "auto"\n'),
    )
    info = run("kiri.cli", "info", "gpu")
    assert info.returncode == 0, info.stderr
    lines = info.stdout.decode().splitlines()
    assert lines[0].startswith("atom gpu: not trained yet")
    assert lines[1].split(",")[0].split() == ["temp:0-temp:7", "temp", "(temp)"]
    assert "20..100" in lines[1] and "util:0-util:17" in lines[2]
    assert "gpu" in run("kiri.score.stage", "--help").stdout.decode()

    collected = collect("--atom", "gpu", "--count", "60")  # the configured command
    assert collected.returncode == 0, collected.stderr
    data = tmp_path / "gpu.ndjson"
    data.write_bytes(collected.stdout)
    assert len(collected.stdout.splitlines()) == 60
    trained = run("kiri.cli", "train", "gpu", "--from", str(data), "--steps", "300", timeout=60)
    assert trained.returncode == 0, trained.stderr
    assert run("kiri.cli", "info", "gpu").stdout.decode().startswith("atom gpu: weights ")

    calm = Obs(ts=1.0, atom="gpu", host="rig", values={"temp": 45.0, "util": 40.0, "fans": 2})
    hot = Obs(ts=2.0, atom="gpu", host="rig", values={"temp": 95.0, "util": 40.0, "fans": 2})
    lines = b"".join(msgspec.json.encode(o) + b"\n" for o in (calm, hot))
    scored = run("kiri.score.stage", "gpu", input=lines)
    assert scored.returncode == 0, scored.stderr
    usual, odd = [decode_score(line) for line in scored.stdout.splitlines()]
    assert odd.tokens[0] == "temp:7" and usual.tokens[0] == "temp:2"  # (45-20)/80*8
    assert usual.surprise < usual.threshold < odd.surprise


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            "temp = { lo = 100, hi = 20 }",
            "atoms.gpu.fields.temp: lo and hi must be numbers, lo < hi",
        ),
        ("temp = { lo = 0, hi = 1, levels = 0 }", "atoms.gpu.fields.temp: levels must be a whole"),
        ("temp = { lo = 0, hi = 1, step = 2 }", "atoms.gpu.fields.temp: unknown key 'step'\n"),
        (
            "temp = { lo = 0, hi = 1, levles = 2 }",
            "atoms.gpu.fields.temp: unknown key 'levles' (did you mean 'levels'?)\n",
        ),
        ('temp = "automatic"', 'atoms.gpu.fields.temp: expected "auto" or a table like'),
        ('"core temp" = "auto"', "[atoms.gpu] fields: 'core temp' is not a field name"),
        ("temp = { lo = 0, hi = 1, context = true }", "[atoms.gpu] fields: every field is context"),
    ],
)
def test_a_bad_field_spec_is_a_clear_config_error(kiri_home, fields, message):
    write_config(kiri_home, gpu_config(fields + "\n"))
    for out in (
        run("kiri.cli", "info", "gpu"),
        run("kiri.score.stage", "gpu"),
        collect("--atom", "gpu", "--count", "1"),
    ):
        assert out.returncode == 2 and out.stdout == b""
        assert out.stderr.decode().startswith(f"Error: config.toml: {message}"), out.stderr
        assert out.stderr.count(b"\n") == 1


def test_a_configured_interval_must_be_seconds_above_0(kiri_home):
    write_config(kiri_home, gpu_config('temp = "auto"\n', interval=0))
    out = collect("--atom", "gpu", "--count", "1")
    assert out.returncode == 2
    assert out.stderr.decode() == (
        "Error: config.toml: [atoms.gpu] interval must be a number of seconds above 0, not 0\n"
    )


def test_a_config_atom_needs_every_field_of_its_schema(kiri_home):
    write_config(kiri_home, gpu_config('temp = "auto"\npower = "auto"\n'))
    out = collect("--atom", "gpu", "--count", "1")
    assert out.returncode == 0 and out.stdout == b""
    assert failures(out.stderr) == ["no value for 'power', which the atom's schema needs"]


def test_a_config_atom_reads_its_clock_fields_from_the_time_not_the_command(kiri_home):
    clock = 'clock = ["hour", "weekday"]\n[atoms.gpu.fields]'
    write_config(kiri_home, gpu_config('temp = "auto"\n').replace("[atoms.gpu.fields]", clock))
    out = collect("--atom", "gpu", "--count", "1")
    assert out.returncode == 0 and failures(out.stderr) == [], out.stderr
    [obs] = [decode_obs(line) for line in out.stdout.splitlines()]
    assert obs.atom == "gpu" and "hour" not in obs.values and obs.values["fans"] == 2


def test_a_built_in_atom_needs_every_field_of_its_schema(kiri_home):
    out = collect("--atom", "pulse", "--count", "1", command=("gpu",))
    assert out.returncode == 0 and out.stdout == b""
    assert failures(out.stderr) == [
        "no value for 'cpu', 'mem', 'disk', 'swap', 'load', 'net', which the atom's schema needs"
    ]
