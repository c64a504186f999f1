"""The Pulse pipeline end to end, through real processes and pipes, on recordings of this machine:
kiri-collect replay | kiri-atom pulse | kiri-decide | kiri-act --sink log."""

import json
import subprocess

from conftest import FIXTURES, stage_cmd

PARTS = ["pulse-normal.ndjson", "pulse-stress.ndjson", "pulse-recovery.ndjson"]


def chain(*stages, stdin=None):
    procs, upstream = [], stdin
    for args in stages:
        p = subprocess.Popen(
            stage_cmd(*args), stdin=upstream, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        if upstream is not None and upstream is not stdin:
            upstream.close()
        upstream = p.stdout
        procs.append(p)
    last = procs[-1].stdout
    assert last is not None
    out = last.read()
    assert [p.wait(60) for p in procs] == [0] * len(procs)
    return out.splitlines()


def ts_range(name):
    ts = [json.loads(line)["ts"] for line in (FIXTURES / name).read_bytes().splitlines()]
    return min(ts), max(ts)


def test_normal_then_stress_opens_one_incident_and_resolves_it(installed_pulse, kiri_home):
    files = [str(FIXTURES / p) for p in PARTS]
    decisions = [
        json.loads(line)
        for line in chain(
            ("kiri.collect.stage", "replay", *files),
            ("kiri.score.stage", "pulse"),
            ("kiri.decide.stage",),
        )
    ]
    assert len(decisions) == sum(len((FIXTURES / p).read_bytes().splitlines()) for p in PARTS)
    notable = [d for d in decisions if d["action"] != "ok"]
    assert [d["action"] for d in notable] == ["alert", "resolve"]
    alert, resolve = notable
    stress_start, stress_end = ts_range(PARTS[1])
    assert stress_start <= alert["ts"] <= stress_end  # nothing on the normal part
    assert resolve["ts"] > stress_end and resolve["incident"] == alert["incident"]
    assert alert["culprits"][0][0][0] in "CM" and "high for vm" in alert["summary"]
    # a busy CPU or memory is bad news on a host that was idle in training
    assert alert["explained"][0]["direction"] == "high" and alert["severity"] != "info"


def test_act_delivers_the_incident_once_to_the_log(installed_pulse, kiri_home):
    files = [str(FIXTURES / p) for p in PARTS]
    out = [
        json.loads(line)
        for line in chain(
            ("kiri.collect.stage", "replay", *files),
            ("kiri.score.stage", "pulse"),
            ("kiri.decide.stage",),
            ("kiri.act.stage", "--sink", "log"),
        )
    ]
    # each delivered decision goes on for kiri-feedback, followed by its outcome
    assert [r["kind"] for r in out] == ["decision", "outcome"] * 2
    outcomes = [r for r in out if r["kind"] == "outcome"]
    assert [(o["action"], o["sink"], o["ok"]) for o in outcomes] == [
        ("alert", "log", True),
        ("resolve", "log", True),
    ]
    logged = [
        json.loads(line) for line in (kiri_home / "logs" / "alerts.ndjson").read_text().splitlines()
    ]
    assert [d["action"] for d in logged] == ["alert", "resolve"]
    assert [d["id"] for d in logged] == [o["id"] for o in outcomes]
