"""`kiri alerts`, `kiri feedback` and `kiri rules`, run for real: alerts named by a prefix of
their id or `last`, a second verdict that replaces the first and its rule, rules listed and
deleted, and a deletion that reaches kiri-decide."""

import json
import time

import msgspec
from conftest import log_events, run
from test_decide import C9, Decide, burst, score

from kiri.home.store import Store
from kiri.wire.records import Decision

encode = msgspec.json.Encoder().encode
TWO = [("C9", 9.5), ("L4", 6.0), ("M1", 0.2)]  # names C9 and L4
ONE = [("L3", 9.5), ("M1", 0.2)]  # names L3 alone


def stored(alert_id, i=0, culprits=TWO, action="alert", pattern=None):
    d = Decision(
        ts=time.time() - 100 + i,
        id=alert_id,
        atom="pulse",
        host="vm",
        action=action,
        surprise=2.6,
        threshold=1.0,
        culprits=culprits,
        summary=f"{action} {i}",
    )
    with Store() as store:
        store.record_alert(d, pattern or " ".join(sorted(t for t, z in culprits if z > 1)))
    return d


def kiri(*args):
    out = run("kiri.cli", *args)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


def test_an_alert_is_named_by_a_prefix_of_its_id_or_last():
    stored("3f9a2c1b0d4e", 0)
    stored("3f9a77aa0000", 1)
    stored("b07c00112233", 2)
    stored("c0ffee000000", 3, action="resolve")  # newer, but no alert: `last` is b07c…
    code, out, _ = kiri("feedback", "confirm", "3f9a2")
    assert (code, out.splitlines()[0]) == (0, "alert 3f9a2c confirmed")
    code, out, _ = kiri("feedback", "confirm", "last")
    assert (code, out.splitlines()[0]) == (0, "alert b07c00 confirmed")
    code, _, err = kiri("feedback", "confirm", "3f9a")
    assert code == 1
    assert err.startswith("Error: '3f9a' is the start of several ids: 3f9a77aa0000 (")
    assert "3f9a2c1b0d4e (" in err and err.strip().endswith("give more of it")
    code, _, err = kiri("feedback", "confirm", "3f9")
    assert code == 1 and "give at least 4 characters of its id, or `last`" in err
    code, _, err = kiri("feedback", "confirm", "dead")
    assert (code, err.strip()) == (1, "Error: no alert with id 'dead' (see `kiri alerts`)")


def test_alerts_lists_alerts_only_with_short_ids_and_all_lists_the_rest():
    stored("3f9a2c1b0d4e", 0)
    stored("5ee5ee5ee5ee", 1, action="suppress")
    stored("4e50e50e50e5", 2, action="resolve")
    _, out, _ = kiri("alerts")
    rows = [line.split()[:4] for line in out.splitlines()[1:]]
    assert [(r[0], r[3]) for r in rows] == [("3f9a2c", "pulse")]
    _, out, _ = kiri("alerts", "--all")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["4e50e5", "5ee5ee", "3f9a2c"]
    _, out, _ = kiri("alerts", "--all", "--json")
    doc = json.loads(out)
    assert [(a["id"], a["short_id"], a["action"]) for a in doc["alerts"]] == [
        ("4e50e50e50e5", "4e50e5", "resolve"),
        ("5ee5ee5ee5ee", "5ee5ee", "suppress"),
        ("3f9a2c1b0d4e", "3f9a2c", "alert"),
    ]
    first = doc["alerts"][2]
    assert first["pattern"] == ["C9", "L4"] and first["verdict"] is None
    assert set(first) == {
        "id",
        "short_id",
        "ts",
        "atom",
        "host",
        "action",
        "incident",
        "pattern",
        "verdict",
        "normal",
        "summary",
    }


def test_verdicts_are_refused_on_what_is_no_alert_and_confirm_takes_no_normal():
    stored("4e50e50e50e5", action="resolve")
    code, _, err = kiri("feedback", "dismiss", "4e50")
    assert code == 1
    assert err.strip() == (
        "Error: 4e50e5 is a resolve, not an alert: only alerts take a verdict "
        "(`kiri alerts` lists them)"
    )
    stored("3f9a2c1b0d4e")
    code, _, err = kiri("feedback", "confirm", "3f9a", "--normal")
    assert code == 2 and "unrecognized arguments: --normal" in err
    with Store() as store:
        assert [r.verdict for r in store.alerts(everything=True)] == ["", ""]


def test_two_dismissals_suppress_and_a_confirmation_takes_the_rule_back():
    stored("aaaa00000001", 0)
    stored("aaaa00000002", 1)
    _, out, _ = kiri("feedback", "dismiss", "aaaa00000001")
    assert out.splitlines() == [
        "alert aaaa00 dismissed",
        "1 more dismissal like this will suppress pulse on vm when it names C9 L4",
    ]
    _, out, _ = kiri("feedback", "dismiss", "aaaa00000002")
    first, second = out.splitlines()
    assert first == "alert aaaa00 dismissed"
    assert second.startswith("now suppressing pulse on vm when it names C9 L4 (logged, not shown)")
    rule_id = second.split(": rule ")[1].split(";")[0]
    assert second.endswith(f"`kiri rules delete {rule_id}` ends it")

    _, out, _ = kiri("rules")
    header, row = out.splitlines()
    assert header.split() == ["id", "host", "atom", "match", "until", "made", "by"]
    assert row.split()[:5] == [rule_id, "vm", "pulse", "C9", "L4"]
    assert row.endswith("dismissals of aaaa00, aaaa00")
    [rule] = json.loads(kiri("rules", "--json")[1])["rules"]
    assert (rule["id"], rule["match"], rule["alerts"]) == (
        rule_id,
        ["C9", "L4"],
        ["aaaa00000001", "aaaa00000002"],
    )
    assert rule["expires"] > time.time() + 6 * 86400

    # the same verdict again changes nothing; another one replaces it and what it did
    _, out, _ = kiri("feedback", "dismiss", "aaaa00000002")
    assert out.splitlines()[0] == "alert aaaa00 dismissed (already recorded)"
    _, out, _ = kiri("feedback", "confirm", "aaaa00000002")
    assert out.splitlines() == [
        "alert aaaa00 confirmed (it was dismissed)",
        f"no longer suppressing pulse on vm when it names C9 L4: rule {rule_id} is deleted",
    ]
    assert kiri("rules")[1].strip() == "no standing rules"
    # dismissing it again brings the rule back: the confirmation took it away, not a person
    _, out, _ = kiri("feedback", "dismiss", "aaaa00000002")
    assert out.splitlines()[1].startswith("now suppressing pulse on vm when it names C9 L4")

    # kiri-feedback, following the rules in the store, tells kiri-decide where each now stands
    out = run("kiri.feedback.stage")
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["kind"], r["id"], r["expires"] > time.time()) for r in records] == [
        ("rule", rule_id, True)
    ]
    kiri("feedback", "confirm", "aaaa00000001")
    out = run("kiri.feedback.stage")
    assert [json.loads(line)["expires"] for line in out.stdout.splitlines()] == [0.0]


def test_a_single_token_pattern_asks_for_a_third_dismissal():
    for i in range(3):
        stored(f"bbbb0000000{i}", i, culprits=ONE)
    outs = [kiri("feedback", "dismiss", f"bbbb0000000{i}")[1].splitlines()[1] for i in range(3)]
    assert outs[0] == (
        "2 more dismissals like this will suppress pulse on vm when it names L3 "
        "(a rule of one token asks for one dismissal more)"
    )
    assert outs[1].startswith("1 more dismissal like this will suppress pulse on vm when it")
    assert outs[2].startswith("now suppressing pulse on vm when it names L3 (logged, not shown)")


def test_a_new_normal_counts_as_no_dismissal():
    stored("cccc00000001", 0)
    stored("cccc00000002", 1)
    kiri("feedback", "dismiss", "cccc00000001")
    _, out, _ = kiri("feedback", "dismiss", "cccc00000002", "--normal")
    assert out.splitlines() == ["alert cccc00 dismissed, as the new normal"]
    assert kiri("rules")[1].strip() == "no standing rules"


def test_a_deleted_rule_reaches_kiri_decide_and_old_dismissals_no_longer_count(tmp_path):
    for i in range(3):
        stored(f"dddd0000000{i}", i, culprits=[("C9", 9.0)], pattern="C9")
    for i in range(3):
        kiri("feedback", "dismiss", f"dddd0000000{i}")
    [rule] = json.loads(kiri("rules", "--json")[1])["rules"]
    d = Decide(tmp_path / "feedback.fifo")
    made = run("kiri.feedback.stage").stdout  # the rule, as kiri-feedback passes it on
    d.control(*made.splitlines())
    d.said("rule_added")
    assert [x.action for x in d.scores(*burst(0, **C9))][-1] == "suppress"

    code, out, _ = kiri("rules", "delete", rule["id"][:5])
    assert code == 0
    assert out.strip() == (
        f"rule {rule['id']} deleted: pulse on vm when it names C9 alerts again "
        "(kiri-feedback tells kiri-decide)"
    )
    assert kiri("rules")[1].strip() == "no standing rules"
    deleted = run("kiri.feedback.stage")
    d.control(*deleted.stdout.splitlines())
    d.said("rule_removed")
    d.scores(*[score(3 + i, 0.1) for i in range(5)])  # the suppressed incident resolves
    assert [x.action for x in d.scores(*burst(20, **C9))][-1] == "alert"
    _, err = d.close()
    assert [e["rule"] for e in log_events(err) if e["event"] == "rule_removed"] == [rule["id"]]
    assert [e["event"] for e in log_events(deleted.stderr) if e["event"].startswith("rule_")] == [
        "rule_deleted"
    ]

    # the dismissals before the deletion no longer count: it takes three new ones
    stored("dddd00000009", 9, culprits=[("C9", 9.0)], pattern="C9")
    _, out, _ = kiri("feedback", "dismiss", "dddd00000009")
    assert out.splitlines()[1].startswith("2 more dismissals like this will suppress")
    code, _, err = kiri("rules", "delete", rule["id"])
    assert (code, err.strip()) == (
        1,
        f"Error: no standing rule with id {rule['id']!r} (see `kiri rules`)",
    )


def test_task_list_json():
    kiri("task", "add", "write the drift atom", "--project", "kiri")
    kiri("task", "add", "renew passport", "--project", "home")
    kiri("task", "done", "2")
    [open_task] = json.loads(kiri("task", "list", "--json")[1])["tasks"]
    assert open_task["id"] == 1 and open_task["project"] == "kiri" and open_task["done"] is None
    tasks = json.loads(kiri("task", "list", "--all", "--json")[1])["tasks"]
    assert [(t["id"], t["title"], t["done"] is None) for t in tasks] == [
        (1, "write the drift atom", True),
        (2, "renew passport", False),
    ]
    assert set(tasks[0]) == {"id", "title", "project", "created", "done"}


def test_nerve_learns_only_the_verdict_that_replaced_the_first():
    from kiri.atoms.registry import atom_spec
    from kiri.home.recordings import load_observations, recording_files

    stored("eeee00000001")
    kiri("feedback", "dismiss", "eeee")
    run("kiri.feedback.stage")
    kiri("feedback", "confirm", "eeee")
    run("kiri.feedback.stage")
    spec = atom_spec("nerve")
    loaded = load_observations("nerve", recording_files("nerve"), spec.schema)
    assert [o.meta["label"] for o in loaded.observations] == ["alert"]
