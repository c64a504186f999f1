"""Retention: `kiri prune [--dry-run]` and kiri-feedback's daily pruning remove recordings, alert
log lines and stored alerts older than [retention] keeps, and nothing newer."""

import json
import select
import subprocess
import time

import msgspec
from conftest import log_events, run, stage_cmd

from kiri.home.store import Store
from kiri.wire.records import Decision, Rule

encode = msgspec.json.Encoder().encode
OLD = time.time() - 40 * 86400  # older than the 30 days kept by default
TODAY = time.strftime("%Y-%m-%d")
OLD_DAY = time.strftime("%Y-%m-%d", time.localtime(OLD))


def decision(alert_id, ts):
    return Decision(ts=ts, id=alert_id, atom="pulse", host="vm", action="alert", summary="x")


def a_full_home(kiri_home):
    """Old and new recordings, alert log lines and stored alerts, verdicts and rules."""
    for atom, day in (("pulse", OLD_DAY), ("pulse", TODAY), ("nerve", OLD_DAY)):
        path = kiri_home / "data" / atom / f"{day}.ndjson"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"kind":"obs"}\n')
    log = kiri_home / "logs" / "alerts.ndjson"
    log.parent.mkdir(parents=True)
    log.write_bytes(
        encode(decision("old", OLD))
        + b"\nnot json\n"
        + encode(decision("new", time.time()))
        + b"\n"
    )
    with Store() as store:
        store.record_alert(decision("0ld0ld0ld0ld", OLD), "C9")
        store.record_alert(decision("4ew4ew4ew4ew", time.time()), "C9")
        store.add_verdict("0ld0ld0ld0ld", "dismiss")
        store.add_verdict("4ew4ew4ew4ew", "confirm")  # the newest verdict
        ended = Rule(id="r-old", atom="pulse", host="vm", match=["C9"], expires=OLD + 60)
        store.add_rule(ended)


def what_is_left(kiri_home):
    with Store() as store:
        alerts = [a.id for a in store.alerts(everything=True)]
        verdicts = [v.alert for v in store.verdicts_after(0)]
        rules = [r[0] for r in store.db.execute("SELECT id FROM rules")]
    return {
        "recordings": sorted(
            f"{p.parent.name}/{p.stem}" for p in (kiri_home / "data").glob("*/*.ndjson")
        ),
        "log": [
            line[:12] for line in (kiri_home / "logs" / "alerts.ndjson").read_text().splitlines()
        ],
        "alerts": alerts,
        "verdicts": verdicts,
        "rules": rules,
    }


def test_prune_says_what_it_removes_and_a_dry_run_removes_nothing(kiri_home):
    a_full_home(kiri_home)
    before = what_is_left(kiri_home)
    out = run("kiri.cli", "prune", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        f"would remove 1 day(s) of recordings from {kiri_home / 'data'} (pulse/{OLD_DAY})",
        f"would remove 1 line(s) of {kiri_home / 'logs' / 'alerts.ndjson'}",
        f"would remove 1 alerts, 1 verdicts, 1 rules from {kiri_home / 'kiri.db'}",
    ]
    assert what_is_left(kiri_home) == before
    out = run("kiri.cli", "prune")
    assert out.stdout.decode().splitlines()[0].startswith("removed 1 day(s) of recordings")
    assert what_is_left(kiri_home) == {
        "recordings": [f"nerve/{OLD_DAY}", f"pulse/{TODAY}"],  # Nerve's examples stay
        "log": ["not json", '{"kind":"dec'],
        "alerts": ["4ew4ew4ew4ew"],
        "verdicts": ["4ew4ew4ew4ew"],
        "rules": [],
    }
    assert (kiri_home / "logs" / "alerts.ndjson").stat().st_mode & 0o777 == 0o600
    out = run("kiri.cli", "prune")
    assert out.stdout.decode().strip() == "nothing to prune: everything is within [retention]"


def test_retention_is_set_in_config_and_0_keeps_everything(kiri_home):
    a_full_home(kiri_home)
    (kiri_home / "config.toml").write_text("[retention]\nrecordings = 0\nalert_log = 0\n")
    out = run("kiri.cli", "prune")
    assert out.stdout.decode().splitlines() == [
        f"removed 1 alerts, 1 verdicts, 1 rules from {kiri_home / 'kiri.db'}"
    ]
    (kiri_home / "config.toml").write_text("[retention]\nstore = -1\n")
    out = run("kiri.cli", "prune")
    assert (
        out.returncode == 2 and "store must be a number of days, 0 or more" in out.stderr.decode()
    )


def test_kiri_feedback_prunes_once_a_day(kiri_home):
    a_full_home(kiri_home)
    first = run("kiri.feedback.stage")  # its first start: a day from now, not now
    assert not [e for e in log_events(first.stderr) if e["event"] == "pruned"]
    left = what_is_left(kiri_home)  # (it wrote Nerve's examples of the verdicts meanwhile)
    assert f"pulse/{OLD_DAY}" in left["recordings"] and len(left["alerts"]) == 2
    with Store() as store:
        store.set_state("feedback.pruned", str(time.time() - 86401))
    later = run("kiri.feedback.stage")
    [pruned] = [e for e in log_events(later.stderr) if e["event"] == "pruned"]
    assert (pruned["recordings"], pruned["alert_log_lines"], pruned["alerts"]) == (1, 1, 1)
    assert what_is_left(kiri_home)["alerts"] == ["4ew4ew4ew4ew"]


def test_the_log_sink_goes_on_writing_into_the_pruned_log(kiri_home):
    log = kiri_home / "logs" / "alerts.ndjson"
    act = subprocess.Popen(
        stage_cmd("kiri.act.stage", "--sink", "log"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    assert act.stdin and act.stdout
    stdin, stdout = act.stdin, act.stdout

    def deliver(d):
        stdin.write(encode(d) + b"\n")
        while True:  # its outcome says it was written
            assert select.select([stdout], [], [], 10)[0], "kiri-act said nothing"
            if json.loads(stdout.readline())["kind"] == "outcome":
                return

    deliver(decision("old", OLD))
    assert run("kiri.cli", "prune").stdout.decode().startswith("removed 1 line(s) of")
    deliver(decision("new", time.time()))
    stdin.close()
    assert act.wait(10) == 0
    assert [json.loads(line)["id"] for line in log.read_text().splitlines()] == ["new"]


def test_an_atoms_scores_are_pruned_a_day_at_a_time_like_its_observations(kiri_home):
    from kiri.home.retention import prune_recordings

    for day in (OLD_DAY, TODAY):
        path = kiri_home / "data" / "pulse" / "scores" / f"{day}.ndjson"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"kind":"score"}\n')
    assert prune_recordings(time.time() - 30 * 86400) == [f"pulse/scores/{OLD_DAY}"]
    left = sorted(p.stem for p in (kiri_home / "data" / "pulse" / "scores").iterdir())
    assert left == [TODAY]
