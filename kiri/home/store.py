"""KIRI's state in SQLite ($KIRI_HOME/kiri.db): delivered alerts, people's verdicts on them, the
rules learned from those verdicts, the Telegram messages alerts went out as, the person's
task log (the drift atom's source), and kiri-act's outbox of deliveries to try again (its queries
are in kiri/act/outbox.py).

WAL mode, so several processes (kiri-feedback, kiri-decide, the CLI, a Telegram poller) read
and write at once; a busy timeout instead of failing under contention. The schema version is
SQLite's user_version and migrations run in order; a database newer than this code is refused.
Opening checks the file (SQLite's quick_check, and every table and column the migrations make),
so a damaged or foreign file is one StoreError naming it, never a traceback at a later query.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from kiri.home.paths import kiri_home, private_dir
from kiri.wire.errors import KiriError
from kiri.wire.records import Decision, Rule
from kiri.wire.render import local_time, short_id

T = TypeVar("T")

MIGRATIONS = [
    # 1: alerts, verdicts (at most one per alert), rules
    """
    CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        atom TEXT NOT NULL,
        host TEXT NOT NULL,
        action TEXT NOT NULL,
        incident TEXT NOT NULL,
        summary TEXT NOT NULL,
        pattern TEXT NOT NULL,        -- the culprit tokens the alert names, sorted, space-joined
        decision TEXT NOT NULL,       -- the decision record, as JSON
        delivered INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS alerts_ts ON alerts (ts);
    CREATE TABLE IF NOT EXISTS verdicts (
        alert TEXT PRIMARY KEY REFERENCES alerts (id),
        ts REAL NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('confirm', 'dismiss')),
        normal INTEGER NOT NULL DEFAULT 0,   -- "this is the new normal": retrain with it
        source TEXT NOT NULL,
        by TEXT NOT NULL,
        note TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS state (
        key TEXT PRIMARY KEY,         -- e.g. how far kiri-feedback has read the verdicts
        value TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rules (
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        atom TEXT NOT NULL,
        match TEXT NOT NULL,          -- JSON list of tokens
        action TEXT NOT NULL,
        expires REAL NOT NULL,
        reason TEXT NOT NULL
    );
    """,
    # 2: the task log kept with `kiri task`: tasks, and switches between projects
    """
    CREATE TABLE IF NOT EXISTS tasks (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        project TEXT NOT NULL,        -- '' when none was given or current
        created REAL NOT NULL,
        done REAL                     -- when it was completed; NULL while open
    );
    CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created);
    CREATE TABLE IF NOT EXISTS switches (
        ts REAL NOT NULL,
        project TEXT NOT NULL         -- the project switched to
    );
    CREATE INDEX IF NOT EXISTS switches_ts ON switches (ts);
    """,
    # 3: the Telegram messages kiri-act sent, so a button press can edit its alert's message
    # and a resolve can reply to it
    """
    CREATE TABLE IF NOT EXISTS telegram_messages (
        alert TEXT PRIMARY KEY,       -- the decision's id (not yet in alerts when it is sent)
        incident TEXT NOT NULL,
        action TEXT NOT NULL,         -- alert or resolve
        chat INTEGER NOT NULL,
        message INTEGER NOT NULL,     -- Telegram's message_id in that chat
        text TEXT NOT NULL,           -- as sent, to be edited into "... dismissed by X"
        ts REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS telegram_messages_incident ON telegram_messages (incident);
    """,
    # 4: a rule holds on one host: the host of the latest alert dismissed with its pattern
    # (a rule from before with no such alert keeps '' and is no longer loaded)
    """
    ALTER TABLE rules ADD COLUMN host TEXT NOT NULL DEFAULT '';
    UPDATE rules SET host = coalesce((
        SELECT a.host FROM alerts a JOIN verdicts v ON v.alert = a.id
        WHERE v.verdict = 'dismiss' AND a.atom = rules.atom
          AND a.pattern = (SELECT group_concat(value, ' ') FROM json_each(rules.match))
        ORDER BY a.ts DESC LIMIT 1), '');
    """,
    # 5: kiri-act's outbox: deliveries that failed, kept to be tried again (kiri/act/outbox.py)
    """
    CREATE TABLE IF NOT EXISTS outbox (
        id TEXT NOT NULL,             -- the decision's id
        sink TEXT NOT NULL,
        line BLOB NOT NULL,           -- the decision record, as kiri-act read it
        queued REAL NOT NULL,         -- when it was kept: its first delivery failed
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,          -- the last attempt's
        PRIMARY KEY (id, sink)        -- delivered once: one entry per decision and sink
    );
    """,
    # 6: a rule names the alerts whose dismissals made it, and is deleted by a mark (so that the
    # deletion reaches kiri-decide); seq grows with every change, which kiri-feedback follows;
    # the Alertmanager silence each `dismiss --for` made, so that repeating it updates that one
    """
    ALTER TABLE rules ADD COLUMN alerts TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE rules ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rules ADD COLUMN deleted REAL;
    ALTER TABLE rules ADD COLUMN deleted_by TEXT NOT NULL DEFAULT '';
    CREATE TABLE IF NOT EXISTS silences (
        alert TEXT PRIMARY KEY,
        silence TEXT NOT NULL,        -- Alertmanager's silence id
        ends REAL NOT NULL
    );
    """,
]
VERSION = len(MIGRATIONS)


class StoreError(KiriError):
    """The store cannot be used; the message says why and what to do (every command prints it
    as one `Error: …` line)."""


class UnknownAlertError(StoreError):
    pass


class NotAnAlertError(UnknownAlertError):
    """A verdict asked of a row that is no alert (a resolve, a suppress), or one that
    contradicts itself."""


class UnknownRuleError(StoreError):
    pass


class UnknownTaskError(StoreError):
    pass


class TaskAlreadyDoneError(StoreError):
    pass


class AlertRow(msgspec.Struct):
    id: str
    ts: float
    atom: str
    host: str
    action: str
    incident: str
    summary: str
    pattern: str
    verdict: str = ""  # confirm, dismiss, or "" while nobody has judged it
    normal: bool = False


class VerdictRow(msgspec.Struct):
    seq: int  # increases with every new or changed verdict, so a reader can follow along
    alert: str
    ts: float
    verdict: str
    normal: bool
    source: str
    by: str
    note: str
    atom: str
    host: str
    pattern: str
    decision: str


class StoredRule(msgspec.Struct):
    """A rule as the store keeps it: what it says, which alerts' dismissals made it, and
    whether a person deleted it."""

    id: str
    ts: float
    atom: str
    host: str
    match: list[str]
    action: str
    expires: float
    reason: str
    alerts: list[str]
    seq: int  # grows with every change of any rule, so a reader can follow along
    deleted: float | None = None  # when it was deleted; None while it stands
    deleted_by: str = ""  # who: a person, or "verdicts" when its dismissals were replaced

    def record(self) -> Rule:
        """The rule record for kiri-decide; a deleted rule's has expired (at 0), which takes
        the rule of that id away."""
        return Rule(
            ts=self.ts,
            id=self.id,
            atom=self.atom,
            host=self.host,
            match=self.match,
            action=self.action,
            expires=0.0 if self.deleted is not None else self.expires,
            reason=self.reason,
        )


class Pruned(msgspec.Struct):
    """How many rows of each kind pruning removed (or would remove)."""

    alerts: int = 0
    verdicts: int = 0
    rules: int = 0
    silences: int = 0
    telegram_messages: int = 0


class TelegramMessage(msgspec.Struct):
    alert: str
    incident: str
    action: str
    chat: int
    message: int
    text: str
    ts: float


class TaskRow(msgspec.Struct):
    id: int
    title: str
    project: str
    created: float
    done: float | None = None  # None while open


MIN_PREFIX = 4  # characters of an alert's id that a person must give, at the least
RULES_SEQ = "rules.seq"  # the state key counting rule changes
ALERT_COLUMNS = (
    "a.id, a.ts, a.atom, a.host, a.action, a.incident, a.summary, a.pattern,"
    " coalesce(v.verdict, ''), coalesce(v.normal, 0) FROM alerts a"
    " LEFT JOIN verdicts v ON v.alert = a.id"
)
RULE_COLUMNS = (
    "id, ts, atom, host, match, action, expires, reason, alerts, seq, deleted, deleted_by"
)
DAMAGED = "restore it from a backup, or move it aside to start afresh"  # what to do about it


def db_path() -> Path:
    return kiri_home() / "kiri.db"


def reading(use: Callable[[Store], T], empty: T) -> T:
    """What `use` finds in the store; `empty` when there is no store yet, which is then not
    made: a command that only reads leaves KIRI_HOME as it was."""
    if not db_path().exists():
        return empty
    with Store() as store:
        return use(store)


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or db_path()
        try:
            private_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # create it private
        except OSError as e:  # a directory in its place, say
            raise StoreError(f"{self.path}: {e.strerror}") from None
        os.close(fd)
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self._check()
        except sqlite3.DatabaseError as e:  # not SQLite, or damaged: said once, with the file
            self.db.close()
            raise StoreError(f"{self.path}: {e} ({DAMAGED})") from None
        except StoreError:
            self.db.close()
            raise

    def _check(self) -> None:
        """The file is undamaged, and holds every table and column (with its type) that the
        migrations make; a query finds nothing missing or mistyped later."""
        damage = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if damage != "ok":
            raise StoreError(f"{self.path}: damaged: {damage} ({DAMAGED})")
        for table, columns in _tables().items():
            found = _columns(self.db, table)
            if not found:
                raise StoreError(f"{self.path}: table {table} is missing")
            for name, kind in columns.items():
                if found.get(name) != kind:
                    raise StoreError(
                        f"{self.path}: table {table} column {name} is "
                        f"{found.get(name, 'missing') or 'untyped'}, not {kind}"
                    )

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version < 0:
            raise StoreError(f"{self.path}: schema version {version}, which no KIRI wrote")
        if version > VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this KIRI "
                f"understands ({VERSION}): upgrade KIRI, or point KIRI_HOME elsewhere"
            )
        for number in range(version, VERSION):
            with self._write():  # one transaction per migration, with its version
                # another process may have run it since this one read the version
                if self.db.execute("PRAGMA user_version").fetchone()[0] != number:
                    continue
                for statement in _statements(MIGRATIONS[number]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    def _write(self) -> _Transaction:
        """A write transaction taken at once (BEGIN IMMEDIATE), so writers queue, not deadlock."""
        return _Transaction(self.db)

    # -- alerts -------------------------------------------------------------------------------

    def record_alert(self, decision: Decision, pattern: str) -> None:
        """Remember a delivered non-ok decision; recording it again changes nothing."""
        with self._write():
            self.db.execute(
                "INSERT OR IGNORE INTO alerts (id, ts, atom, host, action, incident, summary,"
                " pattern, decision, delivered) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    decision.id,
                    decision.ts,
                    decision.atom,
                    decision.host,
                    decision.action,
                    decision.incident,
                    decision.summary,
                    pattern,
                    msgspec.json.encode(decision).decode(),
                ),
            )

    def alerts(self, limit: int = 20, everything: bool = False) -> list[AlertRow]:
        """The newest alerts, newest first; with `everything`, the other rows too (resolves,
        suppressions)."""
        where = "" if everything else " WHERE a.action = 'alert'"
        return self._alert_rows(f"{where} ORDER BY a.ts DESC, a.rowid DESC LIMIT ?", (limit,))

    def find_alert(self, ref: str) -> AlertRow:
        """The row a person means: `last` (the newest alert), a whole id, or a prefix of one of
        at least MIN_PREFIX characters that no other id starts with."""
        if ref == "last":
            rows = self.alerts(1)
            if not rows:
                raise UnknownAlertError("no alerts yet, so no last one")
            return rows[0]
        exact = self._alert_rows(" WHERE a.id = ?", (ref,))
        if exact:
            return exact[0]
        if len(ref) < MIN_PREFIX:
            raise UnknownAlertError(
                f"no alert with id {ref!r}: give at least {MIN_PREFIX} characters of its id, "
                "or `last` (see `kiri alerts`)"
            )
        rows = self._alert_rows(
            " WHERE substr(a.id, 1, ?) = ? ORDER BY a.ts DESC LIMIT 6", (len(ref), ref)
        )
        if not rows:
            raise UnknownAlertError(f"no alert with id {ref!r} (see `kiri alerts`)")
        if len(rows) > 1:
            listed = "; ".join(
                f"{r.id} ({local_time(r.ts)}, {r.action} of {r.atom} on {r.host})" for r in rows[:5]
            )
            more = ", and more" if len(rows) > 5 else ""
            raise UnknownAlertError(
                f"{ref!r} is the start of several ids: {listed}{more}; give more of it"
            )
        return rows[0]

    def _alert_rows(self, tail: str, params: tuple[object, ...]) -> list[AlertRow]:
        rows = self.db.execute(f"SELECT {ALERT_COLUMNS}{tail}", params).fetchall()
        return [
            AlertRow(id_, ts, atom, host, action, incident, summary, pattern, verdict, bool(normal))
            for id_, ts, atom, host, action, incident, summary, pattern, verdict, normal in rows
        ]

    def incidents_left_out(self, atom: str) -> list[tuple[str, float, float]]:
        """(host, start, end) of each of the atom's incidents that alerted and that nobody
        called the new normal: from its first alert to its resolve, or without end while it is
        open. Training leaves their observations out, so that an incident does not become
        normal by lasting."""
        rows = self.db.execute(
            "SELECT a.host, min(a.ts), max(CASE WHEN a.action = 'resolve' THEN a.ts END)"
            " FROM alerts a LEFT JOIN verdicts v ON v.alert = a.id"
            " WHERE a.atom = ? AND a.incident != '' GROUP BY a.incident, a.host"
            " HAVING sum(a.action = 'alert') > 0 AND max(coalesce(v.normal, 0)) = 0",
            (atom,),
        ).fetchall()
        return [(host, start, math.inf if end is None else end) for host, start, end in rows]

    # -- verdicts -----------------------------------------------------------------------------

    def decision(self, alert: str) -> Decision | None:
        """The decision that was delivered as this alert, if it was."""
        row = self.db.execute("SELECT decision FROM alerts WHERE id = ?", (alert,)).fetchone()
        return msgspec.json.decode(row[0], type=Decision) if row else None

    def add_verdict(
        self,
        alert: str,
        verdict: str,
        *,
        normal: bool = False,
        source: str = "cli",
        by: str = "",
        note: str = "",
    ) -> bool:
        """Record a person's verdict on an alert; False when the same verdict was already there.
        Another verdict replaces the one before, with a new seq, so a reader following the
        verdicts sees the change and undoes what the old one did."""
        if verdict not in ("confirm", "dismiss"):
            raise StoreError(f"a verdict is confirm or dismiss, not {verdict!r}")
        if normal and verdict == "confirm":
            raise NotAnAlertError(
                "confirm says the alert was right and --normal that it was not: "
                "dismiss --normal calls it the new normal"
            )
        with self._write():
            row = self.db.execute("SELECT action FROM alerts WHERE id = ?", (alert,)).fetchone()
            if not row:
                raise UnknownAlertError(f"no alert with id {alert!r} (see `kiri alerts`)")
            if row[0] != "alert":
                raise NotAnAlertError(
                    f"{short_id(alert)} is a {row[0]}, not an alert: only alerts take a verdict "
                    "(`kiri alerts` lists them)"
                )
            old = self.db.execute(
                "SELECT verdict, normal FROM verdicts WHERE alert = ?", (alert,)
            ).fetchone()
            if old == (verdict, int(normal)):
                return False
            # REPLACE gives a changed verdict a new rowid: readers following seq see it again
            self.db.execute(
                "INSERT OR REPLACE INTO verdicts (alert, ts, verdict, normal, source, by, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (alert, time.time(), verdict, int(normal), source, by, note),
            )
        return True

    def verdicts_after(self, seq: int) -> list[VerdictRow]:
        rows = self.db.execute(
            "SELECT v.rowid, v.alert, v.ts, v.verdict, v.normal, v.source, v.by, v.note,"
            " a.atom, a.host, a.pattern, a.decision FROM verdicts v JOIN alerts a ON a.id = v.alert"
            " WHERE v.rowid > ? ORDER BY v.rowid",
            (seq,),
        ).fetchall()
        return [VerdictRow(r[0], r[1], r[2], r[3], bool(r[4]), *r[5:]) for r in rows]

    def verdict_counts(self) -> list[tuple[str, str, str, int]]:
        """How many verdicts the store holds, as (atom, host, kind, count): kind is confirm,
        dismiss, or new_normal (a dismissal saying "this is the new normal")."""
        rows = self.db.execute(
            "SELECT a.atom, a.host, CASE WHEN v.normal THEN 'new_normal' ELSE v.verdict END,"
            " count(*) FROM verdicts v JOIN alerts a ON a.id = v.alert GROUP BY 1, 2, 3"
            " ORDER BY 1, 2, 3"
        ).fetchall()
        return [(atom, host, kind, n) for atom, host, kind, n in rows]

    def last_verdict_seq(self) -> int:
        seq: int = self.db.execute("SELECT coalesce(max(rowid), 0) FROM verdicts").fetchone()[0]
        return seq

    def dismissed(
        self, host: str, atom: str, pattern: str, upto: int | None = None, since: float = 0.0
    ) -> list[str]:
        """The alerts of this atom and culprit pattern on this host that people dismissed as
        noise (a "new normal" dismissal asks for a retrain instead, so it does not count),
        oldest first: those judged after `since` and, with `upto`, up to verdict seq `upto`."""
        rows = self.db.execute(
            "SELECT v.alert FROM verdicts v JOIN alerts a ON a.id = v.alert"
            " WHERE v.verdict = 'dismiss' AND NOT v.normal AND a.host = ? AND a.atom = ?"
            " AND a.pattern = ? AND v.rowid <= ? AND v.ts > ? ORDER BY v.rowid",
            (host, atom, pattern, upto if upto is not None else 2**62, since),
        ).fetchall()
        return [r[0] for r in rows]

    def dismissals(self, host: str, atom: str, pattern: str, upto: int) -> int:
        """How many such dismissals there are, up to verdict seq `upto`."""
        return len(self.dismissed(host, atom, pattern, upto))

    # -- rules --------------------------------------------------------------------------------

    def add_rule(self, rule: Rule, alerts: list[str] | None = None) -> None:
        """Keep a rule (replacing one with its id, deleted or not), made by these alerts."""
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO rules (id, ts, atom, host, match, action, expires, reason,"
                " alerts, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rule.id,
                    rule.ts,
                    rule.atom,
                    rule.host,
                    json.dumps(sorted(rule.match)),
                    rule.action,
                    rule.expires,
                    rule.reason,
                    json.dumps(alerts or []),
                    self._next_rule_seq(),
                ),
            )

    def delete_rule(self, rule_id: str, when: float | None = None, by: str = "") -> StoredRule:
        """Mark a standing rule deleted; the rule as it now is. Its row stays, so that
        kiri-feedback, following the changes, tells kiri-decide to drop it."""
        with self._write():
            rule = self.rule(rule_id)
            if rule is None or not _standing(rule, time.time()):
                raise UnknownRuleError(f"no standing rule with id {rule_id!r} (see `kiri rules`)")
            rule.deleted = time.time() if when is None else when
            rule.seq, rule.deleted_by = self._next_rule_seq(), by
            self.db.execute(
                "UPDATE rules SET deleted = ?, deleted_by = ?, seq = ? WHERE id = ?",
                (rule.deleted, by, rule.seq, rule.id),
            )
        return rule

    def _next_rule_seq(self) -> int:
        """The next rule change's seq (inside a write transaction)."""
        seq = int(self.get_state(RULES_SEQ, "0")) + 1
        self.db.execute(
            "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (RULES_SEQ, str(seq))
        )
        return seq

    def rule(self, rule_id: str) -> StoredRule | None:
        rows = self._rule_rows(" WHERE id = ?", (rule_id,))
        return rows[0] if rows else None

    def rules(self, now: float | None = None) -> list[StoredRule]:
        """The standing rules: not deleted, not expired, each for a host; oldest first."""
        now = time.time() if now is None else now
        return self._rule_rows(
            " WHERE host != '' AND deleted IS NULL AND expires > ? ORDER BY ts, id", (now,)
        )

    def rule_changes_after(self, seq: int) -> list[StoredRule]:
        """Rules made or deleted after change `seq`, in the order of their changes."""
        return self._rule_rows(" WHERE seq > ? ORDER BY seq", (seq,))

    def active_rules(self, now: float | None = None) -> list[Rule]:
        return [r.record() for r in self.rules(now)]

    def _rule_rows(self, tail: str, params: tuple[object, ...]) -> list[StoredRule]:
        rows = self.db.execute(f"SELECT {RULE_COLUMNS} FROM rules{tail}", params).fetchall()
        return [
            StoredRule(
                id=r[0],
                ts=r[1],
                atom=r[2],
                host=r[3],
                match=json.loads(r[4]),
                action=r[5],
                expires=r[6],
                reason=r[7],
                alerts=json.loads(r[8]),
                seq=r[9],
                deleted=r[10],
                deleted_by=r[11],
            )
            for r in rows
        ]

    # -- Alertmanager silences ------------------------------------------------------------------

    def silence(self, alert: str) -> tuple[str, float] | None:
        """The Alertmanager silence a dismissal of this alert made, and when it ends."""
        row = self.db.execute(
            "SELECT silence, ends FROM silences WHERE alert = ?", (alert,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def set_silence(self, alert: str, silence: str, ends: float) -> None:
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO silences (alert, silence, ends) VALUES (?, ?, ?)",
                (alert, silence, ends),
            )

    def forget_silence(self, alert: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM silences WHERE alert = ?", (alert,))

    # -- retention ------------------------------------------------------------------------------

    def prune(self, before: float, dry_run: bool = False) -> Pruned:
        """Remove the alerts from before `before` with their verdicts, Telegram messages and
        silences, and the rules that ended (expired or deleted) before it. The newest verdict
        stays whatever its age: verdicts' seq is their rowid, which must keep growing."""
        old_alerts = (
            "SELECT id FROM alerts WHERE ts < ? AND id NOT IN"
            " (SELECT alert FROM verdicts WHERE rowid = (SELECT max(rowid) FROM verdicts))"
        )
        queries = {
            "verdicts": f"FROM verdicts WHERE alert IN ({old_alerts})",
            "silences": f"FROM silences WHERE ends < ? OR alert IN ({old_alerts})",
            "telegram_messages": "FROM telegram_messages WHERE ts < ?",
            "alerts": f"FROM alerts WHERE id IN ({old_alerts})",
            "rules": "FROM rules WHERE coalesce(deleted, expires) < ?",
        }
        pruned = Pruned()
        with self._write():
            for table, query in queries.items():
                params = (before,) * query.count("?")
                count = self.db.execute(f"SELECT count(*) {query}", params).fetchone()[0]
                setattr(pruned, table, count)
                if not dry_run:
                    self.db.execute(f"DELETE {query}", params)
        return pruned

    # -- tasks --------------------------------------------------------------------------------

    def add_task(self, title: str, project: str, ts: float | None = None) -> int:
        """A new open task; its id."""
        with self._write():
            cur = self.db.execute(
                "INSERT INTO tasks (title, project, created) VALUES (?, ?, ?)",
                (title, project, time.time() if ts is None else ts),
            )
        assert cur.lastrowid is not None  # an INSERT sets it
        return cur.lastrowid

    def finish_task(self, task: int, ts: float | None = None) -> TaskRow:
        """Mark an open task done; the task as it now is."""
        with self._write():
            row = self.db.execute(
                "SELECT id, title, project, created, done FROM tasks WHERE id = ?", (task,)
            ).fetchone()
            if row is None:
                raise UnknownTaskError(f"no task with id {task} (see `kiri task list`)")
            if row[4] is not None:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row[4]))
                raise TaskAlreadyDoneError(f"task {task} is already done (since {when})")
            done = time.time() if ts is None else ts
            self.db.execute("UPDATE tasks SET done = ? WHERE id = ?", (done, task))
        task_id, title, project, created, _ = row
        return TaskRow(task_id, title, project, created, done)

    def tasks(self, include_done: bool = False) -> list[TaskRow]:
        """Open tasks (and done ones too, if asked), oldest first."""
        where = "" if include_done else " WHERE done IS NULL"
        rows = self.db.execute(
            f"SELECT id, title, project, created, done FROM tasks{where} ORDER BY created, id"
        ).fetchall()
        return [TaskRow(*r) for r in rows]

    def add_switch(self, project: str, ts: float | None = None) -> None:
        with self._write():
            self.db.execute(
                "INSERT INTO switches (ts, project) VALUES (?, ?)",
                (time.time() if ts is None else ts, project),
            )

    def current_project(self) -> str:
        """The project last switched to; '' before any switch."""
        row = self.db.execute(
            "SELECT project FROM switches ORDER BY ts DESC, rowid DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else ""

    def task_times(self) -> tuple[list[float], list[float], list[float]]:
        """When tasks were added, when they were completed, and when the person switched
        projects: three sorted lists of times, the whole history."""
        created = [r[0] for r in self.db.execute("SELECT created FROM tasks ORDER BY created")]
        done = [
            r[0]
            for r in self.db.execute("SELECT done FROM tasks WHERE done IS NOT NULL ORDER BY done")
        ]
        switches = [r[0] for r in self.db.execute("SELECT ts FROM switches ORDER BY ts")]
        return created, done, switches

    # -- Telegram messages ---------------------------------------------------------------------

    def record_telegram_message(self, sent: TelegramMessage) -> None:
        with self._write():
            self.db.execute(
                "INSERT OR REPLACE INTO telegram_messages (alert, incident, action, chat, message,"
                " text, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                msgspec.structs.astuple(sent),
            )

    def telegram_message(self, alert: str) -> TelegramMessage | None:
        """The message an alert was sent as, if it was."""
        row = self.db.execute(
            "SELECT alert, incident, action, chat, message, text, ts FROM telegram_messages"
            " WHERE alert = ?",
            (alert,),
        ).fetchone()
        return TelegramMessage(*row) if row else None

    def telegram_thread(self, incident: str) -> TelegramMessage | None:
        """The latest alert message of an incident: what its resolve replies to."""
        row = self.db.execute(
            "SELECT alert, incident, action, chat, message, text, ts FROM telegram_messages"
            " WHERE incident = ? AND action = 'alert' ORDER BY ts DESC, rowid DESC LIMIT 1",
            (incident,),
        ).fetchone()
        return TelegramMessage(*row) if row else None

    # -- state --------------------------------------------------------------------------------

    def get_state(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        value: str = row[0] if row else default
        return value

    def set_state(self, key: str, value: str) -> None:
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def integrity(self) -> str:
        result: str = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        return result


def _standing(rule: StoredRule, now: float) -> bool:
    return rule.deleted is None and rule.expires > now and bool(rule.host)


def _statements(script: str) -> list[str]:
    """A migration's SQL statements, one by one (executescript would commit on its own)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


@functools.cache
def _tables() -> dict[str, dict[str, str]]:
    """Each table the migrations make, with its columns' declared types."""
    db = sqlite3.connect(":memory:")
    try:
        for migration in MIGRATIONS:
            db.executescript(migration)
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: _columns(db, name) for name in names}
    finally:
        db.close()


def _columns(db: sqlite3.Connection, table: str) -> dict[str, str]:
    """A table's columns and their declared types ({} when there is no such table)."""
    return {r[1]: r[2].upper() for r in db.execute(f"PRAGMA table_info({table})")}


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
