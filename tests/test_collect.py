"""kiri-collect: the real pulse collector and file replay."""

import importlib
import os
import signal
import subprocess
import time

import msgspec
import pytest
from conftest import fixture_bytes, log_events, measured, run, stage_cmd

from kiri.wire.records import Obs

decode = msgspec.json.Decoder(Obs).decode
GOOD = fixture_bytes("pulse.ndjson").splitlines()


def test_pulse_reads_this_host_into_obs_records():
    out = run("kiri.collect.stage", "pulse", "--count", "3", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    records = [decode(line) for line in out.stdout.splitlines()]
    assert len(records) == 3
    for obs in records:
        assert obs.atom == "pulse" and obs.host
        values = measured(obs.values)
        assert set(values) == {"cpu", "mem", "disk", "swap", "load", "net"}
        for field in ("cpu", "mem", "disk", "swap"):
            assert 0.0 <= values[field] <= 100.0
        assert values["mem"] > 0 and values["disk"] > 0
        assert values["load"] >= 0 and values["net"] in (0.0, 1.0)
    assert records[0].ts < records[1].ts < records[2].ts


def test_pulse_sees_a_busy_cpu():
    burner = subprocess.Popen(["python3", "-c", "while True: pass"])
    try:
        out = run("kiri.collect.stage", "pulse", "--count", "2", "--interval", "0.5")
    finally:
        burner.kill()
    cpu = [measured(decode(line).values)["cpu"] for line in out.stdout.splitlines()]
    assert max(cpu) >= 40.0  # one of two cores spinning


def test_pulse_record_appends_to_the_days_file_privately(kiri_home):
    out = run("kiri.collect.stage", "pulse", "--count", "2", "--interval", "0.1", "--record")
    assert out.returncode == 0
    [path] = (kiri_home / "data" / "pulse").glob("*.ndjson")
    assert path.name == time.strftime("%Y-%m-%d") + ".ndjson"
    assert path.read_bytes() == out.stdout
    assert path.stat().st_mode & 0o777 == 0o600
    for d in (kiri_home, kiri_home / "data", kiri_home / "data" / "pulse"):
        assert d.stat().st_mode & 0o777 == 0o700


def test_pulse_duration_bounds_the_run():
    t = time.monotonic()
    out = run("kiri.collect.stage", "pulse", "--interval", "0.2", "--duration", "1")
    assert out.returncode == 0
    assert 3 <= len(out.stdout.splitlines()) <= 6
    assert time.monotonic() - t < 10


def test_pulse_stops_on_sigterm_while_waiting():
    proc = subprocess.Popen(
        stage_cmd("kiri.collect.stage", "pulse", "--interval", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first observation comes after at most a second
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert decode(first).atom == "pulse" and out == b""
    assert b"Traceback" not in err


def test_pulse_rejects_a_zero_interval():
    out = run("kiri.collect.stage", "pulse", "--interval", "0")
    assert out.returncode == 1
    assert (
        out.stderr.decode().strip().splitlines()[-1] == "Error: --interval must be greater than 0"
    )


def test_replay_concatenates_files_and_stdin_in_order(tmp_path):
    a, b = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    a.write_bytes(b"\n".join(GOOD[:3]) + b"\n")
    b.write_bytes(b"\n".join(GOOD[3:5]) + b"\n")
    stdin = b"\n".join(GOOD[5:7]) + b"\n"
    out = run("kiri.collect.stage", "replay", str(a), "-", str(b), input=stdin)
    assert out.returncode == 0
    assert out.stdout.splitlines() == GOOD[:3] + GOOD[5:7] + GOOD[3:5]


def test_replay_names_the_file_and_line_of_a_bad_record(tmp_path):
    f = tmp_path / "day.ndjson"
    f.write_bytes(GOOD[0] + b"\n{oops\n" + GOOD[1] + b"\n")
    out = run("kiri.collect.stage", "replay", str(f))
    assert out.stdout.splitlines() == GOOD[:2]
    [bad] = [e for e in log_events(out.stderr) if e["event"] == "bad_record"]
    assert bad["source"] == str(f) and bad["line"] == 2


def test_replay_at_speed_follows_the_record_timestamps(tmp_path):
    lines = [msgspec.json.encode(Obs(ts=1000.0 + i, atom="pulse")) for i in range(4)]
    f = tmp_path / "s.ndjson"
    f.write_bytes(b"\n".join(lines) + b"\n")
    t = time.monotonic()
    out = run("kiri.collect.stage", "replay", "--speed", "10", str(f))
    elapsed = time.monotonic() - t
    assert out.stdout.splitlines() == lines
    assert elapsed >= 0.3  # 3 s of record time at 10x


def test_replay_as_fast_as_possible_by_default(tmp_path):
    lines = [msgspec.json.encode(Obs(ts=1000.0 + 3600 * i, atom="pulse")) for i in range(3)]
    f = tmp_path / "h.ndjson"
    f.write_bytes(b"\n".join(lines) + b"\n")
    out = run("kiri.collect.stage", "replay", str(f), timeout=20)
    assert out.stdout.splitlines() == lines


def test_replay_of_a_missing_file_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope.ndjson"
    out = run("kiri.collect.stage", "replay", str(missing))
    assert out.returncode == 1 and out.stdout == b""
    [line] = out.stderr.decode().splitlines()
    # KIRI's prefix and the file; why it cannot be read is the system's wording (strerror).
    assert line.startswith(f"Error: cannot read {missing}: ")
    assert line.removeprefix(f"Error: cannot read {missing}: ").strip()


def test_an_unknown_source_is_a_usage_error():
    out = run("kiri.collect.stage", "router9000")
    # argparse words the refusal; the exit status and that nothing was collected are KIRI's.
    assert out.returncode == 2 and out.stdout == b"" and out.stderr.strip()


def test_kiri_home_defaults_to_dot_kiri_created_private(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "KIRI_HOME"}
    env["HOME"] = str(tmp_path)
    subprocess.run(
        stage_cmd("kiri.collect.stage", "pulse", "--count", "1", "--interval", "0.1", "--record"),
        env=env,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert (tmp_path / ".kiri").stat().st_mode & 0o777 == 0o700
    assert list((tmp_path / ".kiri" / "data" / "pulse").glob("*.ndjson"))


@pytest.mark.parametrize(
    "module",
    [
        "kiri.collect.stage",
        "kiri.score.stage",
        "kiri.decide.stage",
        "kiri.act.stage",
        "kiri.feedback.stage",
        "kiri.supervise.supervisor",
        "kiri.cli",
    ],
)
def test_module_runs_with_python_dash_m(module):
    out = run(module, "--help")
    assert out.returncode == 0 and b"usage:" in out.stdout


def test_kiri_runs_a_stage_by_name():
    out = run("kiri.cli", "collect", "replay", "-", input=GOOD[0] + b"\n")
    assert out.returncode == 0 and out.stdout == GOOD[0] + b"\n"


def test_console_scripts_point_at_real_mains():
    import tomllib

    from conftest import ROOT

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {
        "kiri",
        "kiri-collect",
        "kiri-atom",
        "kiri-decide",
        "kiri-act",
        "kiri-feedback",
        "kiri-supervise",
    }
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
