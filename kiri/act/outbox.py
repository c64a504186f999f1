"""kiri-act's outbox: the deliveries that failed for a reason worth waiting out, kept in the store
(the `outbox` table of kiri/home/store.py) until a later try delivers them or they are given up.

An entry is one decision for one sink, so however often it is tried, and however many times its
decision comes by, it is delivered at most once to that sink. A sink's entries are tried in the
order they were kept. These are the outbox's queries; when to try them, and what to report, is
kiri/act/delivery.py's. Each statement is one (autocommitted) transaction of its own.
"""

from __future__ import annotations

import msgspec

from kiri.home.store import Store


class Entry(msgspec.Struct):
    """A delivery waiting to be tried again: which decision (its line as kiri-act read it) to
    which sink, when it was kept, how often it has been tried, and how the last try went."""

    id: str
    sink: str
    line: bytes
    queued: float
    attempts: int
    error: str


COLUMNS = "id, sink, line, queued, attempts, error"


class Outbox:
    def __init__(self, store: Store) -> None:
        self.db = store.db

    def keep(self, entry: Entry) -> bool:
        """Keep a failed delivery; False when it is kept already (its decision came again)."""
        cursor = self.db.execute(
            f"INSERT OR IGNORE INTO outbox ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            msgspec.structs.astuple(entry),
        )
        return cursor.rowcount == 1

    def waiting(self, sink: str, limit: int) -> list[Entry]:
        """The sink's oldest entries, in the order they were kept."""
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM outbox WHERE sink = ? ORDER BY queued, rowid LIMIT ?",
            (sink, limit),
        )
        return [Entry(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many entries wait, by sink."""
        rows = self.db.execute("SELECT sink, count(*) FROM outbox GROUP BY sink")
        return dict(rows.fetchall())

    def tried(self, entry: Entry) -> None:
        """Save how the entry's latest try went (its attempts and error)."""
        self.db.execute(
            "UPDATE outbox SET attempts = ?, error = ? WHERE id = ? AND sink = ?",
            (entry.attempts, entry.error, entry.id, entry.sink),
        )

    def remove(self, entry: Entry) -> None:
        self.db.execute("DELETE FROM outbox WHERE id = ? AND sink = ?", (entry.id, entry.sink))

    def expire(self, before: float, sinks: list[str]) -> list[Entry]:
        """Remove and return the entries kept before `before` of the sinks no kiri-act here
        tries any more (not among `sinks`): a sink taken off the command line leaves none for
        longer than they would have been tried."""
        marks = ", ".join("?" * len(sinks))
        where = f"queued < ? AND sink NOT IN ({marks})"
        rows = self.db.execute(f"SELECT {COLUMNS} FROM outbox WHERE {where}", (before, *sinks))
        gone = [Entry(*row) for row in rows]
        self.db.execute(f"DELETE FROM outbox WHERE {where}", (before, *sinks))
        return gone
