"""The drift atom: the task log (`kiri task`), its windows, kiri-collect drift, and detection."""

import datetime as dt
import random
import re
import signal
import sqlite3
import subprocess
import time

import msgspec
import pytest
from conftest import log_events, measured, run, stage_cmd

from kiri.collect import drift
from kiri.home.store import Store, db_path
from kiri.wire.records import Obs, Score

decode_obs = msgspec.json.Decoder(Obs).decode
decode_score = msgspec.json.Decoder(Score).decode
HISTORY_DAYS = 14
WORK_HOURS = range(9, 18)


def kiri(*args: str) -> subprocess.CompletedProcess:
    return run("kiri.cli", *args)


def collect(*args: str, timeout: float = 30) -> list[Obs]:
    out = run("kiri.collect.stage", "drift", *args, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return [decode_obs(line) for line in out.stdout.splitlines()]


def local(day: dt.date, hour: int = 0) -> float:
    return dt.datetime.combine(day, dt.time(hour)).timestamp()


# -- kiri task ------------------------------------------------------------------------------


def test_tasks_are_added_to_the_current_project_done_and_listed(kiri_home):
    assert kiri("task", "add", "untriaged").stdout == b"1\n"  # the id alone
    assert kiri("task", "switch", "kiri").stdout == b"switched to project kiri\n"
    assert kiri("task", "add", "  write the drift atom ").stdout == b"2\n"
    assert kiri("task", "add", "renew passport", "--project", "home").stdout == b"3\n"
    assert kiri("task", "switch", "kiri").stdout == b"already on project kiri\n"  # not counted
    assert kiri("task", "done", "2").stdout == b"task 2 done: write the drift atom\n"

    listed = kiri("task", "list").stdout.decode().splitlines()
    assert listed[0].split() == ["id", "age", "project", "title"]
    rows = [line.split(None, 3) for line in listed[1:]]
    assert [(r[0], r[2], r[3]) for r in rows] == [
        ("1", "-", "untriaged"),
        ("3", "home", "renew passport"),
    ]
    assert all(re.fullmatch(r"\d+s", r[1]) for r in rows)  # seconds old
    every = kiri("task", "list", "--all").stdout.decode().splitlines()
    assert every[0].split() == ["id", "age", "done", "project", "title"]
    assert re.fullmatch(r"\s+2\s+\d+s\s+\d+s ago\s+kiri\s+write the drift atom", every[2])
    assert [every[1].split()[2], every[3].split()[2]] == ["open", "open"]
    with Store() as store:
        created, done, switches = store.task_times()
    assert len(created) == 3 and len(done) == 1 and len(switches) == 1


def test_task_mistakes_are_clear_errors(kiri_home):
    kiri("task", "add", "one")
    kiri("task", "done", "1")
    for args, message in [
        (("task", "done", "1"), "Error: task 1 is already done (since "),
        (("task", "done", "7"), "Error: no task with id 7 (see `kiri task list`)"),
        (("task", "add", "   "), "Error: a task needs a title"),
        (("task", "switch", ""), "Error: name the project to switch to"),
    ]:
        out = kiri(*args)
        assert out.returncode == 1 and out.stdout == b""
        assert out.stderr.decode().startswith(message), out.stderr
    out = kiri("task", "done", "seven")  # argparse refuses it, in argparse's words
    assert out.returncode == 2 and out.stdout == b"" and out.stderr.strip()
    assert kiri("task", "list").stdout == b"no open tasks\n"


# -- windows --------------------------------------------------------------------------------


def test_windows_follow_the_local_clock_from_midnight():
    day = dt.date(2025, 3, 12)
    at = local(day, 9) + 25 * 60  # 09:25
    assert drift.window_of(at, 3600) == (local(day, 9), local(day, 10))
    assert drift.window_of(at, 1800) == (local(day, 9), local(day, 9) + 1800)
    assert drift.window_of(at, 7200) == (local(day, 8), local(day, 10))
    assert drift.window_of(at, 86400) == (local(day), local(day + dt.timedelta(days=1)))
    assert drift.window_of(local(day, 10), 3600)[0] == local(day, 10)  # an end starts the next
    spans = list(drift.windows(at, local(day, 12) + 59, 3600))
    assert spans == [(local(day, h), local(day, h + 1)) for h in (9, 10, 11)]  # whole ones only
    for seconds in (1800, 3600, 7200, 86400, 2):
        assert drift.check_window(seconds) == seconds
    for uneven in (0, 0.5, 7 * 60, 5 * 3600, 2 * 86400):
        with pytest.raises(ValueError, match="must divide the day evenly"):
            drift.check_window(uneven)


def test_window_and_time_options_are_checked(kiri_home):
    for args, message in [
        (("--window", "7m"), "must divide the day evenly"),
        (("--window", "soon"), "not a duration: 'soon'"),
        (("--since", "last tuesday"), "not a time: 'last tuesday'"),
    ]:
        out = run("kiri.collect.stage", "drift", *args)
        assert out.returncode == 2 and message in out.stderr.decode(), out.stderr


def test_a_store_newer_than_kiri_is_a_one_line_error(kiri_home):
    Store().close()
    with sqlite3.connect(db_path()) as db:
        db.execute("PRAGMA user_version = 99")
    out = run("kiri.collect.stage", "drift", "--backfill")
    assert out.returncode == 1
    assert out.stderr.decode().startswith("Error: ") and b"Traceback" not in out.stderr


# -- kiri-collect drift ---------------------------------------------------------------------


def test_backfill_counts_each_window_of_the_log(kiri_home):
    day = dt.date.today() - dt.timedelta(days=2)
    with Store() as store:
        first = store.add_task("a", "p", ts=local(day, 9) + 60)
        store.add_task("b", "p", ts=local(day, 9) + 120)
        store.add_switch("q", ts=local(day, 9) + 300)
        store.finish_task(first, ts=local(day, 10) + 10)
        store.add_task("c", "q", ts=local(day, 11) + 5)
    obs = collect("--backfill", "--until", f"{day}T12:00", "--host", "laptop")
    assert [o.ts for o in obs] == [local(day, h) for h in (10, 11, 12)]  # stamped at the end
    fields = ("hour", "added", "done", "switches", "backlog")
    assert [tuple(o.values[f] for f in fields) for o in obs] == [
        (9, 2, 0, 1, 2),
        (10, 0, 1, 0, 1),
        (11, 1, 0, 0, 2),
    ]
    assert all(set(o.values) == set(fields) for o in obs)
    assert {(o.atom, o.host, o.meta["window"]) for o in obs} == {("drift", "laptop", "3600")}
    recorded = run(
        "kiri.collect.stage", "drift", "--backfill", "--until", f"{day}T12:00", "--record"
    )
    [path] = (kiri_home / "data" / "drift").glob("*.ndjson")  # what `kiri train drift` reads
    assert path.read_bytes() == recorded.stdout and len(recorded.stdout.splitlines()) == 3
    days = collect(
        "--since", str(day), "--until", str(day + dt.timedelta(days=1)), "--window", "1d"
    )
    assert [(o.values["added"], o.values["done"], o.values["backlog"]) for o in days] == [
        (3.0, 1.0, 2.0)
    ]


def test_backfill_of_an_empty_log_says_so(kiri_home):
    out = run("kiri.collect.stage", "drift", "--backfill")
    assert out.returncode == 0 and out.stdout == b""
    assert [e["event"] for e in log_events(out.stderr)] == ["empty_task_log"]


def test_live_emits_each_window_as_it_ends(kiri_home):
    proc = subprocess.Popen(
        stage_cmd("kiri.collect.stage", "drift", "--window", "2s", "--count", "3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = decode_obs(proc.stdout.readline())
    assert 0 < time.time() - first.ts < 1.5  # just after its window ended
    with Store() as store:
        store.add_task("late idea", "")
        store.add_task("another", "")
    rest = [decode_obs(line) for line in proc.stdout]
    assert proc.wait(10) == 0
    assert [o.ts for o in rest] == [first.ts + 2, first.ts + 4]  # one per window, none skipped
    assert sum(measured(o.values)["added"] for o in rest) == 2 and rest[-1].values["backlog"] == 2


def test_live_stops_at_once_on_sigterm_while_waiting(kiri_home):
    proc = subprocess.Popen(
        stage_cmd("kiri.collect.stage", "drift"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0 and out == b""
    assert b"Traceback" not in err


def test_backfill_into_a_closed_reader_ends_quietly(kiri_home):
    with Store() as store:
        store.add_task("long ago", "", ts=time.time() - 60 * 86400)
    collector = subprocess.Popen(
        stage_cmd("kiri.collect.stage", "drift", "--backfill", "--window", "15m"),
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
    assert decode_obs(head.stdout).values["backlog"] == 1
    assert b"Traceback" not in err


# -- detection ------------------------------------------------------------------------------


def write_history(first_day: dt.date, days: int, seed: int = 7) -> None:
    """Working days of 1-3 tasks added and 1-3 done per hour, 0-1 project switches, and a
    backlog of a few tasks; quiet nights."""
    r = random.Random(seed)
    projects = ["kiri", "home", "blog"]
    with Store() as store:
        open_tasks: list[int] = []
        for d in range(days):
            day = first_day + dt.timedelta(days=d)
            for hour in WORK_HOURS:
                start = local(day, hour)
                for _ in range(r.randint(1, 3)):
                    open_tasks.append(store.add_task("t", "", ts=start + r.uniform(0, 1800)))
                n_done = min(len(open_tasks), max(r.randint(1, 3), len(open_tasks) - 6))
                for _ in range(n_done):
                    store.finish_task(open_tasks.pop(0), ts=start + r.uniform(1800, 3599))
                if r.random() < 0.5:
                    store.add_switch(r.choice(projects), ts=start + r.uniform(0, 3599))


def write_burst(day: dt.date, hour: int) -> None:
    """8 tasks added, none done, 5 project switches, within one hour."""
    start = local(day, hour)
    with Store() as store:
        for i in range(8):
            store.add_task(f"scope creep {i}", "", ts=start + 60 + 400 * i)
        for i in range(5):
            store.add_switch(f"project {i}", ts=start + 90 + 600 * i)


def score(observations: list[Obs]) -> list[Score]:
    lines = b"".join(msgspec.json.encode(o) + b"\n" for o in observations)
    out = run("kiri.score.stage", "drift", input=lines)
    assert out.returncode == 0, out.stderr
    return [decode_score(line) for line in out.stdout.splitlines()]


def test_a_burst_of_new_tasks_and_switches_is_an_anomaly(kiri_home, tmp_path):
    today = dt.date.today()
    first_day = today - dt.timedelta(days=HISTORY_DAYS + 1)
    burst_day = today - dt.timedelta(days=1)
    write_history(first_day, HISTORY_DAYS)
    history = tmp_path / "drift-history.ndjson"
    backfilled = run("kiri.collect.stage", "drift", "--backfill", "--until", str(burst_day))
    assert backfilled.returncode == 0, backfilled.stderr
    history.write_bytes(backfilled.stdout)
    obs = [decode_obs(line) for line in backfilled.stdout.splitlines()]
    assert len(obs) == 24 * HISTORY_DAYS - WORK_HOURS.start  # from the first task on

    trained = kiri("train", "drift", "--from", str(history), "--steps", "400")
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.decode().startswith(f"loaded {len(obs)} observations from 1 files")

    write_burst(burst_day, 10)
    [burst] = collect("--since", f"{burst_day}T10:00", "--until", f"{burst_day}T11:00")
    assert (burst.values["added"], burst.values["done"], burst.values["switches"]) == (8, 0, 5)
    typical = [
        o
        for o in obs
        if dt.date.fromtimestamp(o.ts - 1)
        in (first_day + dt.timedelta(days=3), burst_day - dt.timedelta(days=1))
    ]
    scores = score([burst, *typical])
    odd, usual = scores[0], scores[1:]
    ratios = sorted(s.surprise / s.threshold for s in usual)
    print(
        f"\nburst: surprise {odd.surprise:.2f}, threshold {odd.threshold:.2f} "
        f"({odd.surprise / odd.threshold:.2f}x), tokens {' '.join(odd.tokens)}; "
        f"{len(usual)} typical windows: surprise/threshold median {ratios[len(ratios) // 2]:.2f}"
        f", max {ratios[-1]:.2f}"
    )
    assert odd.surprise / odd.threshold >= 2
    assert odd.tokens[:3] == ["A8", "D0", "S5"]
    assert ratios[-1] < 1
