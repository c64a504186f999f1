"""The rhythm atom: idle sources parsed at the command boundary, their fallback order, commits in
real git repositories, the focus streak, hour and weekday as context, and `kiri-collect rhythm`
run for real, on Xvfb and through training and scoring."""

import os
import random
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest
from conftest import FIXTURES, log_events, run, stage_cmd

from kiri.atoms.rhythm import SCHEMA
from kiri.collect import rhythm
from kiri.collect.rhythm import NoAnswerError, UnparsableError
from kiri.wire import log as kiri_log
from kiri.wire.records import Obs, Score

decode = msgspec.json.Decoder(Obs).decode
encode = msgspec.json.Encoder().encode
OUTPUTS = FIXTURES / "rhythm"


def output(name: str) -> str:
    return (OUTPUTS / name).read_text()


# -- parsers, on recorded outputs -------------------------------------------------------------


def test_ioreg_hididletime_is_nanoseconds_in_a_long_tree():
    assert rhythm.parse_ioreg(output("ioreg-IOHIDSystem.txt")) == pytest.approx(93.417250125)


def test_ioreg_with_several_hid_systems_takes_the_latest_input():
    text = output("ioreg-IOHIDSystem.txt")
    second = '  | |   "HIDIdleTime" = 2500000000\n'
    assert rhythm.parse_ioreg(text + second) == pytest.approx(2.5)


def test_ioreg_without_hididletime_is_unparsable():
    tree = "".join(
        line
        for line in output("ioreg-IOHIDSystem.txt").splitlines(True)
        if '"HIDIdleTime"' not in line
    )
    with pytest.raises(UnparsableError, match="no HIDIdleTime"):
        rhythm.parse_ioreg(tree)


def test_xprintidle_prints_milliseconds():
    assert rhythm.parse_xprintidle(output("xprintidle.txt")) == pytest.approx(1.451)
    with pytest.raises(UnparsableError, match=r"couldn't open display.*, not milliseconds"):
        rhythm.parse_xprintidle("couldn't open display\n")


def test_logind_active_session_reads_zero_and_idle_one_counts_from_its_hint():
    assert rhythm.parse_logind(output("loginctl-show-session-active.txt"), now=1718620000.0) == 0.0
    idle = rhythm.parse_logind(output("loginctl-show-session-idle.txt"), now=1718613300.0 + 754)
    assert idle == pytest.approx(754.0)


def test_logind_cannot_tell_when_the_hint_was_never_set():
    with pytest.raises(NoAnswerError, match="never set its idle hint"):
        rhythm.parse_logind(output("loginctl-show-session-unset.txt"), now=1718620000.0)
    with pytest.raises(UnparsableError, match="IdleHint is None"):
        rhythm.parse_logind("Failed to get session: No session '9' known\n", now=1718620000.0)
    assert rhythm.parse_properties(output("loginctl-show-user.txt")) == {"Display": "2"}


def test_mutter_reply_is_milliseconds():
    assert rhythm.parse_mutter(output("gdbus-mutter-idletime.txt")) == pytest.approx(12.345)
    with pytest.raises(UnparsableError, match="not \\(uint64 MS,\\)"):
        rhythm.parse_mutter("(@t 12345,)\n")


# -- which source answers ---------------------------------------------------------------------


def fake_commands(bin_dir: Path, answers: dict[str, str | dict[str, str] | None]) -> Path:
    """Executables that log their argv and print a recorded output: one file, one per
    subcommand (loginctl show-user, show-session), or, for None, fail as on a headless host."""
    bin_dir.mkdir(exist_ok=True)
    calls = bin_dir / "calls.log"
    for name, fixture in answers.items():
        if fixture is None:
            body = f"echo '{name}: cannot answer here' >&2; exit 1"
        elif isinstance(fixture, dict):
            body = (
                "case $1 in\n"
                + "".join(f"  {sub}) cat '{OUTPUTS / f}' ;;\n" for sub, f in fixture.items())
                + "esac"
            )
        else:
            body = f"cat '{OUTPUTS / fixture}'"
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho \"{name} $*\" >> '{calls}'\n{body}\n")
        script.chmod(0o755)
    return calls


@pytest.fixture
def linux_desktop(tmp_path, monkeypatch):
    """A PATH where xprintidle, loginctl and gdbus are fakes the test sets up; a display."""
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("DISPLAY", ":99")
    for name in ("WAYLAND_DISPLAY", "XDG_SESSION_ID"):
        monkeypatch.delenv(name, raising=False)
    return lambda **answers: fake_commands(bin_dir, answers)


def collect_rhythm(*args: str) -> tuple[list[Obs], list[dict]]:
    out = run("kiri.collect.stage", "rhythm", "--interval", "0.01", *args)
    assert out.returncode == 0, out.stderr
    return [decode(line) for line in out.stdout.splitlines()], log_events(out.stderr)


RECORDED = {
    "xprintidle": "xprintidle.txt",
    "loginctl": {
        "show-user": "loginctl-show-user.txt",
        "show-session": "loginctl-show-session-active.txt",
    },
    "gdbus": "gdbus-mutter-idletime.txt",
}


@pytest.mark.parametrize(
    "answering, source, minutes",
    [
        (("xprintidle", "loginctl", "gdbus"), "x11", 1.451 / 60),
        (("loginctl", "gdbus"), "logind", 0.0),
        (("gdbus",), "mutter", 12.345 / 60),
    ],
    ids=["x11", "logind", "mutter"],
)
def test_the_first_source_that_answers_is_used(linux_desktop, answering, source, minutes):
    linux_desktop(**{name: RECORDED[name] if name in answering else None for name in RECORDED})
    [obs], logs = collect_rhythm("--count", "1")
    assert obs.meta["idle_source"] == source
    assert obs.values["idle_known"] == 1.0 and obs.values["idle"] == round(minutes, 2)
    [said] = [e for e in logs if e["event"] == "idle_source"]
    assert said["source"] == source and said["level"] == "info"
    assert (
        list(said["skipped"]) == ["x11", "logind", "mutter"][: list(RECORDED).index(answering[0])]
    )


def test_logind_asks_about_the_users_display_session(linux_desktop):
    calls = linux_desktop(
        xprintidle=None,
        gdbus="gdbus-mutter-idletime.txt",
        loginctl={
            "show-user": "loginctl-show-user.txt",
            "show-session": "loginctl-show-session-idle.txt",
        },
    )
    [obs], _ = collect_rhythm("--count", "1")
    assert calls.read_text().splitlines() == [
        "xprintidle ",
        f"loginctl show-user {os.getuid()} -p Display",
        "loginctl show-session 2 -p IdleHint -p IdleSinceHint -p IdleSinceHintMonotonic",
    ]
    assert obs.meta["idle_source"] == "logind"
    assert obs.values["idle"] == round((obs.ts - 1718613300) / 60, 2)  # idle since the hint
    assert SCHEMA.tokenize(obs.values, {})[2:4] == ["K1", "I5"]


def test_no_source_answering_is_unknown_said_once_never_idle(linux_desktop, monkeypatch):
    monkeypatch.delenv("DISPLAY")
    linux_desktop(xprintidle="xprintidle.txt", loginctl=None, gdbus=None)
    records, logs = collect_rhythm("--count", "3")
    for obs in records:
        assert obs.meta["idle_source"] == "none"
        assert obs.values["idle_known"] == 0.0  # K0: its own token …
        assert obs.values["idle"] == 0.0 and obs.values["streak"] == 0.0  # … then placeholders
    [unknown] = [e for e in logs if e["event"] == "idle_unknown"]
    assert unknown["level"] == "warning"
    assert unknown["reasons"] == {
        "x11": "DISPLAY is not set",
        "logind": "loginctl: exit status 1: loginctl: cannot answer here",
        "mutter": "gdbus: exit status 1: gdbus: cannot answer here",
    }
    assert SCHEMA.tokenize(records[0].values, {})[2:] == ["K0", "I0", "G0", "F0"]


def test_a_wayland_session_does_not_trust_xwayland(monkeypatch):
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("DISPLAY", ":0")
    with pytest.raises(NoAnswerError, match="Wayland"):
        rhythm.x11_idle()


def test_the_probe_speaks_when_the_source_changes_not_every_poll():
    display = {"up": False}

    def x11():
        if not display["up"]:
            raise NoAnswerError("DISPLAY is not set")
        return 3.0

    def broken():
        raise UnparsableError("garbage")

    with kiri_log.capture() as logs:
        probe = rhythm.IdleProbe(kiri_log.get_logger(), [("x11", x11), ("mutter", broken)])
        seen = [probe.seconds() for _ in range(3)]
        display["up"] = True
        seen += [probe.seconds() for _ in range(3)]
    assert seen == [(None, "none")] * 3 + [(3.0, "x11")] * 3
    assert [(e["event"], e.get("source")) for e in logs] == [
        ("idle_unparsable", "mutter"),
        ("idle_unknown", None),
        ("idle_source", "x11"),
    ]


# -- commits ----------------------------------------------------------------------------------

ME, TEAMMATE = "me@example.org", "ana@example.org"


def commit(repo: Path, ago: float, email: str = ME, branch: str | None = None) -> None:
    when = f"@{int(time.time() - ago)} +0000"
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "x",
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_NAME": "x",
        "GIT_COMMITTER_EMAIL": email,
        "GIT_COMMITTER_DATE": when,
    }
    git = ["git", "-C", str(repo)]
    if branch:
        subprocess.run([*git, "checkout", "-q", "-B", branch], env=env, check=True)
    subprocess.run(
        [*git, "commit", "-q", "--allow-empty", "-m", f"{ago:g} s ago"], env=env, check=True
    )


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with 3 commits of mine in the last hour (one on another branch), 2 older,
    and 1 of a teammate's fetched in the last hour."""
    path = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "config", "user.email", ME], check=True)
    commit(path, 3 * 3600)
    commit(path, 3700)
    commit(path, 1800)
    commit(path, 600, email=TEAMMATE)
    commit(path, 60, branch="idea")
    subprocess.run(["git", "-C", str(path), "checkout", "-q", "main"], check=True)
    commit(path, 10)
    return path


def test_commits_in_the_last_hour_across_branches_by_the_person(repo, tmp_path):
    records, logs = collect_rhythm(
        "--count",
        "2",
        "--repo",
        str(repo),
        "--repo",
        str(tmp_path / "gone"),
        "--repo",
        str(tmp_path),
    )
    assert [obs.values["commits"] for obs in records] == [3.0, 3.0]
    assert records[0].meta["repos"] == "1"
    skipped = [e for e in logs if e["event"] == "repo_skipped"]
    assert [e["repo"] for e in skipped] == [str(tmp_path / "gone"), str(tmp_path)]  # once each
    assert all(e["reason"].strip() for e in skipped)  # why is git's wording, passed through


def test_repositories_come_from_config_toml_with_home_expanded(repo, kiri_home, monkeypatch):
    monkeypatch.setenv("HOME", str(repo.parent))
    kiri_home.mkdir()
    (kiri_home / "config.toml").write_text('[rhythm]\nrepos = ["~/work"]\n')
    [obs], _ = collect_rhythm("--count", "1")
    assert obs.values["commits"] == 3.0 and obs.meta["repos"] == "1"


def test_a_malformed_repos_setting_is_a_one_line_error(kiri_home):
    kiri_home.mkdir()
    (kiri_home / "config.toml").write_text('[rhythm]\nrepos = "~/work"\n')
    out = run("kiri.collect.stage", "rhythm", "--count", "1")
    assert out.returncode == 2 and out.stdout == b""
    [line] = out.stderr.decode().splitlines()  # KIRI names the key; msgspec words the reason
    assert line.startswith("Error: config.toml: [rhythm] repos: ")
    assert line.removeprefix("Error: config.toml: [rhythm] repos: ").strip()


def test_commit_counting_holds_the_window_edge_and_rejects_garbage():
    log = f"1000 {ME}\n999 {ME}\n1500 {TEAMMATE.upper()}\n"
    assert rhythm.count_commits(log, since=1000) == 2
    assert rhythm.count_commits(log, since=1000, email=TEAMMATE) == 1
    with pytest.raises(UnparsableError):
        rhythm.count_commits("warning: refname 'x' is ambiguous\n", since=0)


# -- the focus streak --------------------------------------------------------------------------


def test_a_streak_grows_while_active_and_ends_with_a_break():
    streak, t = rhythm.Streak(), 10_000.0
    assert streak.update(t, 30.0) == pytest.approx(0.5)  # first seen: since the last input
    for _ in range(30):
        t += 60
        minutes = streak.update(t, 20.0)
    assert minutes == pytest.approx(30.5)
    assert streak.update(t + 60, 240.0) == pytest.approx(31.5)  # a pause under 5 minutes
    assert streak.update(t + 120, 301.0) == 0.0  # a break
    assert streak.update(t + 180, 5.0) == pytest.approx(5 / 60)  # a new block


def test_an_unseen_stretch_restarts_the_streak_and_unknown_idle_has_none():
    streak = rhythm.Streak()
    streak.update(0.0, 0.0)
    streak.update(60.0, 0.0)
    assert streak.update(60.0 + 8 * 3600, 3.0) == pytest.approx(3 / 60)  # woke from suspend
    assert streak.update(8 * 3600 + 120, None) == 0.0


# -- hour and weekday --------------------------------------------------------------------------


def test_hour_and_weekday_are_context_tokens_first_and_unscored():
    sunday_3am = time.mktime((2024, 6, 16, 3, 20, 0, 0, 0, -1))
    assert rhythm.clock(sunday_3am) == (3, 6)
    values = {
        "hour": 3.0,
        "weekday": 6.0,
        "idle_known": 1.0,
        "idle": 0.4,
        "commits": 3.0,
        "streak": 40.0,
    }
    assert SCHEMA.tokenize(values, {}) == ["H3", "W6", "K1", "I0", "G3", "F1"]
    assert SCHEMA.n_context == 2 and SCHEMA.scored == slice(3, 7)


def test_observations_carry_the_local_hour_and_weekday(linux_desktop, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kathmandu")  # UTC+5:45: a local clock, not UTC's
    linux_desktop(xprintidle="xprintidle.txt")
    [obs], _ = collect_rhythm("--count", "1")
    local = datetime.fromtimestamp(obs.ts, ZoneInfo("Asia/Kathmandu"))
    assert (obs.values["hour"], obs.values["weekday"]) == (local.hour, local.weekday())


# -- the real thing ----------------------------------------------------------------------------


@pytest.fixture
def xvfb(monkeypatch):
    """A real X server; DISPLAY points at it."""
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp"],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as f:
        display = f.readline().strip()  # written once the server accepts clients
    assert display, "Xvfb did not start"
    monkeypatch.setenv("DISPLAY", f":{display}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    yield
    server.terminate()
    server.wait(5)


def test_idle_time_from_a_real_x_server(xvfb):
    [obs], logs = collect_rhythm("--count", "1")
    assert obs.atom == "rhythm" and obs.meta["idle_source"] == "x11"
    idle = obs.values["idle"]  # the server started moments ago, with no input since
    assert obs.values["idle_known"] == 1.0
    assert idle is not None and 0.0 <= idle < 1.0
    assert [e["source"] for e in logs if e["event"] == "idle_source"] == ["x11"]


def test_sigterm_in_the_middle_of_a_stream_ends_it_cleanly(linux_desktop):
    linux_desktop(xprintidle="xprintidle.txt")
    proc = subprocess.Popen(
        stage_cmd("kiri.collect.stage", "rhythm", "--interval", "0.05"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = [proc.stdout.readline() for _ in range(3)]
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and b"Traceback" not in err
    lines = b"".join(first) + rest
    assert lines.endswith(b"\n")
    assert all(decode(line).values["idle_known"] == 1.0 for line in lines.splitlines())


def test_a_closed_reader_ends_it_quietly(linux_desktop):
    linux_desktop(xprintidle="xprintidle.txt")
    proc = subprocess.Popen(
        stage_cmd("kiri.collect.stage", "rhythm", "--interval", "0.05"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert decode(proc.stdout.readline()).atom == "rhythm"
    proc.stdout.close()  # `| head -n 1`
    assert proc.wait(10) == 0
    err = proc.stderr.read()
    proc.stderr.close()
    assert [e["event"] for e in log_events(err)] == ["no_repositories", "idle_source"]
    assert b"Traceback" not in err


# -- learning a person's week -------------------------------------------------------------------


def workday(ts: float, r: random.Random) -> dict[str, float | None]:
    """A person who works 9 to 18 on weekdays with an hour's lunch, and is away otherwise."""
    hour, weekday = rhythm.clock(ts)
    values: dict[str, float | None] = {
        "hour": float(hour),
        "weekday": float(weekday),
        "idle_known": 1.0,
    }
    if weekday < 5 and 9 <= hour < 18 and hour != 12:
        began = time.mktime((*time.localtime(ts)[:3], 13 if hour >= 13 else 9, 0, 0, 0, 0, -1))
        return values | {
            "idle": round(r.uniform(0, 4), 2),
            "commits": float(r.randint(0, 3)),
            "streak": round((ts - began) / 60, 1),
        }
    return values | {"idle": round(r.uniform(40, 600), 2), "commits": 0.0, "streak": 0.0}


def test_a_trained_rhythm_finds_3am_sunday_work_surprising(tmp_path):
    r = random.Random(7)
    start = time.mktime((2024, 6, 6, 0, 0, 0, 0, 0, -1))  # a Thursday: two weeks, ending midweek
    history = tmp_path / "rhythm.ndjson"
    history.write_bytes(
        b"".join(
            encode(
                Obs(
                    ts=ts,
                    atom="rhythm",
                    host="laptop",
                    values=workday(ts, r),
                    meta={"idle_source": "x11", "repos": "1"},
                )
            )
            + b"\n"
            for ts in (start + i * 1200 for i in range(14 * 24 * 3))
        )
    )
    out = run("kiri.cli", "train", "rhythm", "--from", str(history), "--steps", "100", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines()[0] == "loaded 1008 observations from 1 files"

    at_work = {"idle_known": 1.0, "idle": 0.5, "commits": 2.0, "streak": 120.0}
    wednesday_3pm = time.mktime((2024, 6, 19, 15, 0, 0, 0, 0, -1))
    sunday_3am = time.mktime((2024, 6, 23, 3, 0, 0, 0, 0, -1))
    lines = [
        encode(
            Obs(
                ts=ts,
                atom="rhythm",
                host="laptop",
                values={"hour": float(h), "weekday": float(w), **at_work},
            )
        )
        for ts, (h, w) in ((ts, rhythm.clock(ts)) for ts in (wednesday_3pm, sunday_3am))
    ]
    scored = run("kiri.score.stage", "rhythm", input=b"\n".join(lines) + b"\n")
    assert scored.returncode == 0, scored.stderr
    usual, burst = [msgspec.json.decode(line, type=Score) for line in scored.stdout.splitlines()]
    assert usual.tokens == burst.tokens == ["K1", "I0", "G2", "F4"]  # only the context differs
    assert usual.surprise < usual.threshold < burst.surprise
    # at the keyboard, when asleep is usual
    assert max(zip(burst.z, burst.tokens, strict=True))[1] == "I0"
