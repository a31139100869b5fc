"""The notifications not yet delivered: `notify.db`, a small SQLite file of the notifier's
own in the state dir (the state store's Protocol stays as it is).

One row per (receiver, notification), oldest first. A restart finds every undelivered row
and sends it. The queue is bounded per receiver: when a receiver has been failing long
enough to hold `limit` rows, the oldest is dropped to make room, and the drop is counted
(persistently) so that an operator can see what a dead receiver cost. Each operation is a
single short transaction on an indexed table (WAL, synchronous=NORMAL), the same cost the
engine already pays per journaled step.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitopsd.errors import StoreError

DB_NAME = "notify.db"
DEFAULT_LIMIT = 1000  # rows per receiver

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL,
    delivery TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_receiver ON outbox(receiver, id);
CREATE TABLE IF NOT EXISTS counters (
    receiver TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (receiver, name)
);
CREATE TABLE IF NOT EXISTS told (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Pending:
    """One undelivered notification for one receiver."""

    id: int
    receiver: str
    delivery: str
    event: str
    body: dict[str, Any]
    created_at: float
    next_at: float
    attempts: int


class Outbox:
    """The persistent, bounded queue. Used from one thread (the event loop's)."""

    def __init__(self, state_dir: Path, limit: int = DEFAULT_LIMIT) -> None:
        self.path = state_dir / DB_NAME
        self.limit = max(1, limit)
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"notification queue {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def put(
        self, receiver: str, delivery: str, event: str, body: dict[str, Any], now: float
    ) -> int:
        """Queue one row; returns how many older rows were dropped to stay under the limit."""
        with self._tx():
            self._db.execute(
                "INSERT INTO outbox (receiver, delivery, event, body, created_at, next_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (receiver, delivery, event, json.dumps(body), now, now),
            )
            return self._trim(receiver)

    def _trim(self, receiver: str) -> int:
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE receiver = ?", (receiver,)
        ).fetchone()
        excess = int(count) - self.limit
        if excess <= 0:
            return 0
        self._db.execute(
            "DELETE FROM outbox WHERE id IN"
            " (SELECT id FROM outbox WHERE receiver = ? ORDER BY id LIMIT ?)",
            (receiver, excess),
        )
        self._count(receiver, "dropped", excess)
        return excess

    def head(self, receiver: str) -> Pending | None:
        """The receiver's oldest row (delivered in order: a later one waits for it)."""
        row = self._db.execute(
            "SELECT id, receiver, delivery, event, body, created_at, next_at, attempts"
            " FROM outbox WHERE receiver = ? ORDER BY id LIMIT 1",
            (receiver,),
        ).fetchone()
        if row is None:
            return None
        return Pending(row[0], row[1], row[2], row[3], json.loads(row[4]), *row[5:])

    def delivered(self, row_id: int) -> None:
        with self._tx():
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def discard(self, row: Pending, counter: str) -> None:
        """Give a row up (refused by the receiver, or too old), counting it."""
        with self._tx():
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row.id,))
            self._count(row.receiver, counter, 1)

    def retry_at(self, row_id: int, next_at: float) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ? WHERE id = ?",
                (next_at, row_id),
            )

    def pending(self, receiver: str | None = None) -> int:
        if receiver is None:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        else:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE receiver = ?", (receiver,)
            ).fetchone()
        return int(n)

    def due_before(self, when: float) -> int:
        """How many receivers' oldest rows (the next each will try) are due before `when`."""
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM outbox o WHERE next_at < ?"
            " AND id = (SELECT MIN(id) FROM outbox WHERE receiver = o.receiver)",
            (when,),
        ).fetchone()
        return int(n)

    def receivers(self) -> set[str]:
        return {r for (r,) in self._db.execute("SELECT DISTINCT receiver FROM outbox")}

    def forget(self, receiver: str) -> int:
        """Drop every row of a receiver no longer configured; returns how many."""
        with self._tx():
            cur = self._db.execute("DELETE FROM outbox WHERE receiver = ?", (receiver,))
            return int(cur.rowcount)

    def counter(self, receiver: str, name: str) -> int:
        row = self._db.execute(
            "SELECT value FROM counters WHERE receiver = ? AND name = ?", (receiver, name)
        ).fetchone()
        return int(row[0]) if row else 0

    def first_time(self, key: str, now: float) -> bool:
        """Record `key`; True when it was not recorded before (a one-time notification)."""
        with self._tx():
            cur = self._db.execute("INSERT OR IGNORE INTO told (key, at) VALUES (?, ?)", (key, now))
            return cur.rowcount == 1

    def _count(self, receiver: str, name: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO counters (receiver, name, value) VALUES (?, ?, ?)"
            " ON CONFLICT (receiver, name) DO UPDATE SET value = value + excluded.value",
            (receiver, name, n),
        )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"notification queue {self._path}: {exc}") from exc
