"""kiri-feedback: delivered alerts into the store, verdicts out as rules and retrain requests."""

import json
import select
import signal
import subprocess
import time

import msgspec
import pytest
from conftest import log_events, run, stage_cmd

from kiri.home.store import Store
from kiri.wire.records import Decision, Outcome

encode = msgspec.json.Encoder().encode
CULPRITS = [("C9", 9.5), ("L4", 6.0), ("M1", 0.2), ("D2", 0.1), ("S0", 0.05), ("N1", 0.01)]


def alert(i, culprits=CULPRITS, action="alert"):
    return Decision(
        ts=1000.0 + i,
        id=f"a{i}",
        atom="pulse",
        host="vm",
        action=action,
        surprise=2.6,
        threshold=1.0,
        culprits=culprits,
        tokens=["C9", "M1", "D2", "S0", "L4", "N1"],  # document order, as kiri-decide gives them
        summary=f"alert {i}",
    )


def delivered(d, ok=True):
    return [encode(d), encode(Outcome(id=d.id, action=d.action, sink="log", ok=ok))]


def feedback(*lines, args=()):
    out = run("kiri.feedback.stage", *args, input=b"".join(line + b"\n" for line in lines))
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()], out


def test_delivered_decisions_are_recorded_and_other_kinds_pass(kiri_home):
    obs = b'{"kind":"obs","atom":"pulse","values":{"cpu":1.0}}'
    lines = [
        *delivered(alert(0)),
        obs,
        *delivered(alert(1, action="resolve")),
        *delivered(alert(2), ok=False),
    ]
    out, _ = feedback(*lines)
    assert out == [json.loads(obs)]
    with Store() as store:
        rows = store.alerts(everything=True)
    assert [(r.id, r.action, r.pattern) for r in rows] == [
        ("a1", "resolve", "C9 L4"),
        ("a0", "alert", "C9 L4"),
    ]


def record(store, *decisions):
    for d in decisions:
        store.record_alert(d, "C9 L4")


def test_dismissing_a_pattern_twice_writes_a_suppression_rule(kiri_home):
    with Store() as store:
        record(store, alert(0), alert(1))
        store.add_verdict("a0", "dismiss", note="backup")
        store.add_verdict("a1", "dismiss")
    before = time.time()
    out, proc = feedback()
    assert [(r["kind"], r["action"]) for r in out] == [("rule", "suppress")]
    rule = out[0]
    assert rule["atom"] == "pulse" and rule["host"] == "vm" and rule["match"] == ["C9", "L4"]
    assert before + 7 * 86400 - 5 < rule["expires"] < time.time() + 7 * 86400 + 5
    verdicts = [e for e in log_events(proc.stderr) if e["event"] == "verdict"]
    assert [(e["alert"], e["verdict"]) for e in verdicts] == [("a0", "dismiss"), ("a1", "dismiss")]
    with Store() as store:
        assert [r.id for r in store.active_rules()] == [rule["id"]]
    # each verdict is handled once: a restarted kiri-feedback starts where it left off
    again, _ = feedback()
    assert again == []


def test_one_dismissal_or_confirmations_write_no_rule(kiri_home):
    with Store() as store:
        record(store, alert(0), alert(1), alert(2))
        store.add_verdict("a0", "dismiss")
        store.add_verdict("a1", "confirm")
        store.add_verdict("a2", "confirm")
    out, proc = feedback()
    assert out == []
    assert len([e for e in log_events(proc.stderr) if e["event"] == "verdict"]) == 3


def test_after_sets_how_many_dismissals_make_a_rule(kiri_home):
    with Store() as store:
        record(store, alert(0))
        store.add_verdict("a0", "dismiss")
    out, _ = feedback(args=("--after", "1"))
    assert [r["kind"] for r in out] == ["rule"]


def test_a_new_normal_asks_for_a_retrain_and_keeps_the_example(kiri_home):
    with Store() as store:
        record(store, alert(0))
        store.add_verdict("a0", "dismiss", normal=True)
    out, proc = feedback()
    assert out == []  # nothing for kiri-decide: kiri-feedback starts the training itself
    [asked] = [e for e in log_events(proc.stderr) if e["event"] == "retrain_requested"]
    assert asked["atom"] == "pulse" and asked["why"] == "alert a0 is the new normal"
    assert asked["detail"].startswith("training pulse (pid ")
    example = json.loads((kiri_home / "atoms" / "pulse" / "normal.ndjson").read_text())
    assert example["tokens"] == ["C9", "M1", "D2", "S0", "L4", "N1"]  # the schema's order


def test_a_new_normal_keeps_the_example_of_an_atom_no_schema_here_knows(kiri_home):
    gpu = alert(0)
    gpu.atom, gpu.tokens = "gpu", ["temp:7", "util:2"]
    with Store() as store:
        record(store, gpu)
        store.add_verdict("a0", "dismiss", normal=True)
    _, proc = feedback()
    [asked] = [e for e in log_events(proc.stderr) if e["event"] == "retrain_not_started"]
    assert asked["atom"] == "gpu" and "no atom gpu" in asked["error"]  # no recordings here
    example = json.loads((kiri_home / "atoms" / "gpu" / "normal.ndjson").read_text())
    assert example["tokens"] == ["temp:7", "util:2"]


def test_every_verdict_leaves_a_labelled_example_for_nerve(kiri_home):
    with Store() as store:
        record(store, alert(0), alert(1))
        store.add_verdict("a0", "dismiss")
        store.add_verdict("a1", "confirm")
    feedback()
    lines = b"".join(p.read_bytes() for p in (kiri_home / "data" / "nerve").glob("*.ndjson"))
    examples = [json.loads(line) for line in lines.splitlines()]
    assert [(e["atom"], e["meta"]["label"], e["values"]["pulse"]) for e in examples] == [
        ("nerve", "suppress", 2.6),
        ("nerve", "alert", 2.6),
    ]
    assert 0 <= examples[0]["values"]["hour"] < 24


def in_store(alert_id):
    with Store() as store:
        return any(r.id == alert_id for r in store.alerts())


def test_verdicts_given_while_it_runs_are_noticed_promptly(kiri_home):
    with Store() as store:
        record(store, alert(0))
    proc = subprocess.Popen(
        stage_cmd("kiri.feedback.stage", "--poll", "0.1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: select sees each log line that readline has not read
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(b"".join(line + b"\n" for line in delivered(alert(1))))
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while not in_store("a1"):  # it records what comes in: it runs, polling meanwhile
        assert time.monotonic() < deadline, "kiri-feedback recorded nothing"
        time.sleep(0.05)
    given = time.monotonic()
    assert run("kiri.cli", "feedback", "dismiss", "a0").returncode == 0
    events: list[dict] = []
    while not any(e["event"] == "verdict" for e in events):
        assert select.select([proc.stderr], [], [], 10)[0], "verdict not noticed"
        events += log_events(proc.stderr.readline())
    noticed = time.monotonic() - given
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert noticed < 5
    assert proc.returncode == 0 and b"Traceback" not in err


def test_bad_lines_are_reported_and_skipped(kiri_home):
    lines = [delivered(alert(0))[0], b"nope", delivered(alert(0))[1]]
    _, proc = feedback(*lines)
    bad = [e for e in log_events(proc.stderr) if e["event"] == "bad_record"]
    assert [e["line"] for e in bad] == [2]
    with Store() as store:
        assert [r.id for r in store.alerts()] == ["a0"]


def test_closed_reader_exits_zero(kiri_home):
    with Store() as store:
        record(store, *(alert(i) for i in range(50)))
        for i in range(50):
            store.add_verdict(f"a{i}", "confirm")
    cmd = " ".join(stage_cmd("kiri.feedback.stage"))
    out = subprocess.run(
        ["bash", "-c", f"{cmd} < /dev/null | head -n 1; echo status=${{PIPESTATUS[0]}}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.stdout.splitlines()[-1] == b"status=0" and b"Traceback" not in out.stderr


def test_the_cli_lists_and_judges_alerts(kiri_home):
    with Store() as store:
        record(store, alert(0))
    out = run("kiri.cli", "alerts")
    lines = out.stdout.decode().splitlines()
    assert lines[0].split() == ["id", "time", "atom", "action", "verdict", "summary"]
    assert lines[1].split()[0] == "a0" and lines[1].endswith("alert 0") and " - " in lines[1]
    out = run("kiri.cli", "feedback", "dismiss", "a0", "--normal", "--note", "bigger box now")
    assert out.returncode == 0
    assert out.stdout.decode().strip() == "alert a0 dismissed, as the new normal"
    assert "dismiss (normal)" in run("kiri.cli", "alerts").stdout.decode()
    out = run("kiri.cli", "feedback", "confirm", "zz")
    assert out.returncode == 1
    assert out.stderr.decode().strip() == (
        "Error: no alert with id 'zz': give at least 4 characters of its id, or `last` "
        "(see `kiri alerts`)"
    )


@pytest.mark.parametrize("cmd", [("alerts",), ("feedback", "dismiss", "a0")])
def test_a_newer_store_is_a_one_line_error(kiri_home, cmd):
    import sqlite3

    Store().close()
    with sqlite3.connect(kiri_home / "kiri.db") as db:
        db.execute("PRAGMA user_version = 99")
    out = run("kiri.cli", *cmd)
    assert out.returncode == 1 and "newer than this KIRI understands" in out.stderr.decode()


def test_sigterm_mid_stream_keeps_what_was_read(kiri_home):
    proc = subprocess.Popen(
        stage_cmd("kiri.feedback.stage"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines = [line for i in range(20) for line in delivered(alert(i))]
    assert proc.stdin is not None
    # the last record ends midway
    proc.stdin.write(b"".join(line + b"\n" for line in lines) + b'{"kind":"deci')
    proc.stdin.flush()

    def recorded():
        with Store() as store:
            return len(store.alerts(100))

    deadline = time.monotonic() + 20
    while recorded() < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out == b"" and b"Traceback" not in err
    assert recorded() == 20
    assert [e for e in log_events(err) if e["event"] == "bad_record"] == []


def test_every_n_verdicts_ask_for_nerve_to_be_trained_again(kiri_home):
    with Store() as store:
        record(store, *(alert(i) for i in range(5)))
        for i in range(5):
            store.add_verdict(f"a{i}", "dismiss" if i % 2 else "confirm")
    out, proc = feedback(args=("--nerve-every", "2", "--after", "99"))
    asked = [e for e in log_events(proc.stderr) if e["event"] == "retrain_requested"]
    assert [(e["atom"], e["why"]) for e in asked] == [
        ("nerve", "2 verdicts to learn from"),
        ("nerve", "4 verdicts to learn from"),
    ]
    assert out == []


def test_rules_and_verdicts_on_stdin_never_reach_the_feedback_fifo(kiri_home):
    from kiri.wire.records import Rule, Verdict

    forged = [
        encode(Rule(id="r-x", atom="pulse", host="vm", match=["C9"], expires=9e9)),
        encode(Verdict(alert="a0", verdict="dismiss")),
    ]
    out, proc = feedback(*delivered(alert(0)), *forged, *delivered(alert(1)))
    assert out == []
    bad = [e for e in log_events(proc.stderr) if e["event"] == "bad_record"]
    assert [(e["line"], "not passed on" in e["reason"]) for e in bad] == [(3, True), (4, True)]
    with Store() as store:
        assert [r.id for r in store.alerts()] == ["a1", "a0"]
        assert store.active_rules() == []
