"""Several atoms on one host: one grouped alert instead of several, and Nerve choosing whether
to notify from the person's verdicts."""

import json
import random
import subprocess

import msgspec
from conftest import log_events, run, stage_cmd

from kiri.atoms import nerve, nerve_examples
from kiri.home.recordings import Recorder
from kiri.wire.records import Decision, Score

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Decision).decode
NOON = 1_795_262_400.0  # a weekday, 12:00 UTC


def score(ts, atom, surprise, host="vm", threshold=5.0):
    tokens = {"pulse": ["C9", "M5", "D4", "S1", "L1", "N1"]}.get(atom, [f"{atom}:3", f"{atom}:7"])
    z = [surprise] + [0.5] * (len(tokens) - 1)
    return encode(
        Score(
            ts=ts,
            atom=atom,
            host=host,
            surprise=surprise,
            threshold=threshold,
            tokens=tokens,
            nll=z,
            z=z,
            values={"cpu": 97.0},
        )
    )


def stream(unusual, ts0=NOON, normal_before=3, unusual_for=5, normal_after=6, atoms=None):
    """Each atom scored every 10 s; those in `unusual` above threshold for a while."""
    atoms = atoms or ("pulse", "rhythm", "drift")
    lines = []
    for i in range(normal_before + unusual_for + normal_after):
        high = normal_before <= i < normal_before + unusual_for
        for j, atom in enumerate(atoms):
            surprise = 12.0 if high and atom in unusual else 1.0
            lines.append(score(ts0 + 10 * i + j, atom, surprise))
    return b"\n".join(lines) + b"\n"


def decide(data, *args):
    out = run("kiri.decide.stage", *args, input=data)
    assert out.returncode == 0, out.stderr
    return [decode(line) for line in out.stdout.splitlines()], out


def notable(decisions):
    return [d for d in decisions if d.action != "ok"]


def test_three_atoms_alerting_together_make_one_alert_that_names_them_all():
    decisions, _ = decide(stream({"pulse", "rhythm", "drift"}))
    assert len(decisions) == 14 * 3 + 1  # one per score, and the grouped alert
    alert, resolve = notable(decisions)
    assert alert.action == "alert" and sorted(alert.atoms) == ["drift", "pulse", "rhythm"]
    assert alert.summary.startswith("pulse, rhythm and drift are unusual together on vm: ")
    assert "rhythm: rhythm:3 is unusual" in alert.summary and "C9" in alert.summary
    assert alert.state == {"pulse": 2.4, "rhythm": 2.4, "drift": 2.4}
    held = [d for d in decisions if "waiting up to 30 s" in d.summary]
    assert [d.atom for d in held] == ["pulse", "rhythm", "drift"]
    assert all(d.incident == alert.incident for d in held)
    assert resolve.incident == alert.incident  # one resolve, once every atom is back to normal
    assert [d.ts for d in decisions] == sorted(d.ts for d in decisions)


def test_act_notifies_once_for_the_group(kiri_home):
    decide_p = subprocess.Popen(
        stage_cmd("kiri.decide.stage"), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    act = subprocess.Popen(
        stage_cmd("kiri.act.stage", "--sink", "log"), stdin=decide_p.stdout, stdout=subprocess.PIPE
    )
    assert decide_p.stdin is not None and decide_p.stdout is not None
    decide_p.stdout.close()
    decide_p.stdin.write(stream({"pulse", "rhythm", "drift"}))
    decide_p.stdin.close()
    out, _ = act.communicate(timeout=30)
    assert decide_p.wait(30) == 0 and act.returncode == 0
    outcomes = [json.loads(line) for line in out.splitlines() if b'"outcome"' in line]
    assert [o["action"] for o in outcomes] == ["alert", "resolve"]
    logged = [
        json.loads(line) for line in (kiri_home / "logs" / "alerts.ndjson").read_text().splitlines()
    ]
    assert [d["action"] for d in logged] == ["alert", "resolve"]
    assert sorted(logged[0]["atoms"]) == ["drift", "pulse", "rhythm"]


def test_an_atom_alone_on_its_host_is_not_held_and_group_wait_zero_never_holds():
    alone, _ = decide(stream({"pulse"}, atoms=("pulse",)))
    assert [d.action for d in notable(alone)] == ["alert", "resolve"]
    # at once, on the second unusual score: two ten-second samples stand for 20 s (--for 15)
    assert notable(alone)[0].ts == NOON + 40
    together, _ = decide(stream({"pulse", "rhythm"}), "--group-wait", "0")
    assert [(d.action, d.atom) for d in notable(together)] == [
        ("alert", "pulse"),
        ("alert", "rhythm"),
        ("resolve", "rhythm"),
    ]
    assert len({d.incident for d in notable(together)}) == 1  # still one incident per host


def test_a_held_alert_is_released_at_the_end_of_the_input():
    short = stream({"pulse", "rhythm"}, normal_after=0, unusual_for=3)
    decisions, _ = decide(short)
    assert decisions[-1].action == "alert" and decisions[-1].atoms == ["pulse", "rhythm"]


def history(kiri_home, days=8):
    """Rhythm-idle plus drift-scope-creep alerts dismissed, pulse alerts confirmed, and the
    policy's quiet hours in between, as kiri-feedback and kiri-decide record them."""
    rec, lines, r = Recorder("nerve"), [], random.Random(7)
    low, high = (lambda: round(r.uniform(0.1, 0.8), 2)), (lambda: round(r.uniform(1.2, 3.6), 2))
    for day in range(days):
        dismissed, confirmed = r.sample(range(9, 18), 2), r.sample(range(9, 18), 2)
        for hour in range(9, 18):
            ts = NOON - 3 * 3600 + day * 86400 + (hour - 9) * 3600
            cases = [({"pulse": low(), "rhythm": low(), "drift": low()}, "ok", "policy")]
            if hour in dismissed:
                cases.append(
                    ({"pulse": low(), "rhythm": high(), "drift": high()}, "suppress", "verdict")
                )
            if hour in confirmed:
                cases.append(
                    ({"pulse": high(), "rhythm": low(), "drift": low()}, "alert", "verdict")
                )
            for k, (state, label, source) in enumerate(cases):
                obs = nerve_examples.example(
                    state, ts + k, "vm", label, source, f"a{day}-{hour}-{k}"
                )
                lines.append(encode(obs))
    for line in lines:
        rec.append(json.loads(line)["ts"], line + b"\n")
    rec.close()


def test_kiri_train_nerve_learns_a_verdict_instead_of_the_policys_decision_on_that_alert():
    state = {"pulse": 1.5}
    decided = nerve_examples.example(state, NOON, "vm", "alert", "policy", "a1")
    judged = nerve_examples.example(state, NOON + 60, "vm", "suppress", "verdict", "a1")
    other = nerve_examples.example(state, NOON, "vm", "alert", "policy", "a2")
    assert nerve.SPEC.training_set is not None
    assert nerve.SPEC.training_set([decided, judged, other]) == [judged, other]


def test_nerve_suppresses_what_people_dismissed_and_still_alerts_on_what_they_confirmed(kiri_home):
    history(kiri_home)
    out = run("kiri.cli", "train", "nerve", timeout=120)
    assert out.returncode == 0, out.stderr
    idle_creep, log = decide(stream({"rhythm", "drift"}), "--nerve-min", "10")
    (group, *_) = notable(idle_creep)
    assert group.atoms == ["rhythm", "drift"] and group.action == "suppress"
    assert group.by == "nerve" and "Nerve chose suppress over alert" in group.summary
    advised = [e for e in log_events(log.stderr) if e["event"] == "nerve_advised"]
    assert advised and advised[0]["p"]["suppress"] > 0.7
    busy, _ = decide(stream({"pulse"}), "--nerve-min", "10")
    alert = notable(busy)[0]
    assert alert.action == "alert" and alert.atoms == ["pulse"]


def test_nerve_waits_for_enough_verdicts(kiri_home):
    history(kiri_home, days=2)  # 8 verdicts
    assert run("kiri.cli", "train", "nerve", "--steps", "50", timeout=120).returncode == 0
    decisions, log = decide(stream({"rhythm", "drift"}), "--nerve-min", "20")
    assert notable(decisions)[0].action == "alert" and notable(decisions)[0].by == "policy"
    waiting = [e for e in log_events(log.stderr) if e["event"] == "nerve_not_yet"]
    assert waiting and waiting[0]["verdicts"] == 8


def test_the_policy_records_its_decisions_as_nerve_examples(kiri_home):
    decide(stream({"pulse", "rhythm"}))
    lines = b"".join(p.read_bytes() for p in (kiri_home / "data" / "nerve").glob("*.ndjson"))
    examples = [json.loads(line) for line in lines.splitlines()]
    labels = [e["meta"]["label"] for e in examples]
    assert labels == ["ok", "alert"]  # one ok per host per 5 minutes, and each alert
    assert examples[1]["values"]["rhythm"] == 2.4 and examples[1]["meta"]["source"] == "policy"
