"""The SQLite store: alerts, verdicts, rules, migrations, and several writers at once."""

import multiprocessing
import sqlite3

import msgspec
import pytest

from kiri.home.store import VERSION, Store, StoreError, UnknownAlertError, db_path
from kiri.wire.records import Decision, Rule


def decision(i, atom="pulse"):
    return Decision(
        ts=1000.0 + i,
        id=f"a{i}",
        atom=atom,
        host="vm",
        action="alert",
        summary=f"alert {i}",
        culprits=[("C9", 9.0), ("M1", 1.0)],
        threshold=1.0,
    )


def test_a_new_store_is_private_wal_and_current(kiri_home):
    with Store() as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == VERSION
        assert store.integrity() == "ok"
    assert db_path().stat().st_mode & 0o777 == 0o600
    assert kiri_home.stat().st_mode & 0o777 == 0o700


def test_alerts_are_recorded_once_and_listed_newest_first(kiri_home):
    with Store() as store:
        for i in range(3):
            store.record_alert(decision(i), "C9")
        store.record_alert(decision(1), "C9")  # again: no change
        assert [a.id for a in store.alerts()] == ["a2", "a1", "a0"]
        assert store.alerts(limit=1)[0].summary == "alert 2"


def test_a_verdict_is_one_per_alert_and_a_repeat_is_idempotent(kiri_home):
    with Store() as store:
        store.record_alert(decision(0), "C9")
        assert store.add_verdict("a0", "dismiss", note="backup") is True
        assert store.add_verdict("a0", "dismiss", note="backup") is False
        assert [v.verdict for v in store.verdicts_after(0)] == ["dismiss"]
        seq = store.last_verdict_seq()
        assert store.add_verdict("a0", "confirm") is True  # a changed mind is a new verdict
        changed = store.verdicts_after(seq)
        assert [(v.alert, v.verdict) for v in changed] == [("a0", "confirm")]
        assert store.db.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 1
        assert store.alerts()[0].verdict == "confirm"


def test_an_unknown_alert_or_verdict_is_refused(kiri_home):
    with Store() as store:
        with pytest.raises(UnknownAlertError, match="no alert with id 'zz'"):
            store.add_verdict("zz", "dismiss")
        store.record_alert(decision(0), "C9")
        with pytest.raises(StoreError, match="confirm or dismiss"):
            store.add_verdict("a0", "meh")


def test_dismissals_count_per_host_atom_and_pattern_but_not_new_normal(kiri_home):
    with Store() as store:
        for i, (atom, pattern) in enumerate(
            [("pulse", "C9"), ("pulse", "C9"), ("pulse", "M9"), ("drift", "C9"), ("pulse", "C9")]
        ):
            store.record_alert(decision(i, atom), pattern)
        elsewhere = decision(5)
        elsewhere.host = "db1"
        store.record_alert(elsewhere, "C9")
        for alert in ("a0", "a1", "a2", "a3", "a5"):
            store.add_verdict(alert, "dismiss")
        store.add_verdict("a4", "dismiss", normal=True)
        assert store.dismissals("vm", "pulse", "C9", upto=store.last_verdict_seq()) == 2
        assert store.dismissals("vm", "pulse", "C9", upto=1) == 1
        assert store.dismissals("db1", "pulse", "C9", upto=store.last_verdict_seq()) == 1


def test_verdicts_are_counted_by_atom_host_and_kind(kiri_home):
    with Store() as store:
        for i in range(5):
            store.record_alert(decision(i, "drift" if i == 4 else "pulse"), "C9")
        store.add_verdict("a0", "confirm")
        store.add_verdict("a1", "dismiss")
        store.add_verdict("a2", "dismiss", normal=True)
        store.add_verdict("a3", "dismiss")
        store.add_verdict("a4", "confirm")
        assert store.verdict_counts() == [
            ("drift", "vm", "confirm", 1),
            ("pulse", "vm", "confirm", 1),
            ("pulse", "vm", "dismiss", 2),
            ("pulse", "vm", "new_normal", 1),
        ]


def test_rules_expire_and_hold_only_with_a_host(kiri_home):
    with Store() as store:
        store.add_rule(Rule(id="r1", atom="pulse", host="vm", match=["M9", "C9"], expires=2000.0))
        store.add_rule(Rule(id="r2", atom="pulse", host="vm", match=["D9"], expires=3000.0))
        store.add_rule(Rule(id="r3", atom="pulse", match=["D9"], expires=3000.0))  # no host
        store.add_rule(Rule(id="r4", atom="pulse", host="vm", match=["D9"], expires=0.0))
        assert [(r.id, r.host, r.match) for r in store.active_rules(now=1500)] == [
            ("r1", "vm", ["C9", "M9"]),
            ("r2", "vm", ["D9"]),
        ]
        assert [r.id for r in store.active_rules(now=2500)] == ["r2"]


def test_a_rule_from_before_hosts_takes_the_host_of_the_alerts_dismissed_into_it(kiri_home):
    from kiri.home.store import MIGRATIONS, _statements

    kiri_home.mkdir(parents=True)
    db = sqlite3.connect(kiri_home / "kiri.db", isolation_level=None)
    for number in range(3):
        for statement in _statements(MIGRATIONS[number]):
            db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    alert = decision(0)
    db.execute(
        "INSERT INTO alerts VALUES ('a0', 1000, 'pulse', 'db1', 'alert', 'i', 's', 'C9 M9', ?, 1)",
        (msgspec.json.encode(alert).decode(),),
    )
    db.execute("INSERT INTO verdicts VALUES ('a0', 1001, 'dismiss', 0, 'cli', 'me', '')")
    for rule, match in (("old", '["C9", "M9"]'), ("orphan", '["D9"]')):
        db.execute(
            "INSERT INTO rules VALUES (?, 1002, 'pulse', ?, 'suppress', 9e9, 'dismissed')",
            (rule, match),
        )
    db.close()
    with Store() as store:
        assert [(r.id, r.host) for r in store.active_rules(now=2000)] == [("old", "db1")]


def test_a_newer_database_is_refused_with_a_clear_message(kiri_home):
    Store().close()
    with sqlite3.connect(db_path()) as db:
        db.execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {VERSION + 1}, newer than this KIRI"):
        Store()


def _writer(home, n, worker):
    import os

    os.environ["KIRI_HOME"] = home
    with Store() as store:
        for i in range(n):
            d = decision(worker * 1000 + i)
            store.record_alert(d, "C9")
            store.add_verdict(d.id, "dismiss" if i % 2 else "confirm")
            store.add_rule(
                Rule(id=f"r{worker}-{i}", atom="pulse", host="vm", match=["C9"], expires=9e9)
            )


def test_several_processes_write_at_once(kiri_home):
    kiri_home.mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(kiri_home), 40, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store() as store:
        assert len(store.alerts(limit=1000)) == 160
        assert len(store.verdicts_after(0)) == 160
        assert len(store.active_rules()) == 160
        assert store.integrity() == "ok"
