"""SQLite store (the embedded default): one file `gitopsd.db` under the state dir, WAL mode.

Every step of a rollout is journaled twice: a row when it starts (with the absolute deadline
of a wait) and its outcome when it ends, committed before the engine acts on the next step.
A daemon killed at any moment therefore finds either a finished step (replayed) or a started
one (executed again: every step is idempotent on the agents).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gitopsd.errors import StoreError
from gitopsd.store.protocol import Store
from gitopsd.store.rows import (
    CONTROL_FIELDS,
    ROLLOUT_FIELDS,
    journal_from_record,
    rollout_from_record,
)
from gitopsd.store.rows import Controls as Controls
from gitopsd.store.rows import IntegrityReport as IntegrityReport
from gitopsd.store.rows import JournalRow as JournalRow
from gitopsd.store.rows import RolloutRow as RolloutRow
from gitopsd.store.sqlite_errors import sqlite_store_error
from gitopsd.store.sqlite_integrity import integrity

DB_NAME = "gitopsd.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    version TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    strategy TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    step TEXT NOT NULL DEFAULT '',
    context TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    aborting INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS rollouts_function ON rollouts(function, created_at);
CREATE TABLE IF NOT EXISTS journal (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id),
    seq INTEGER NOT NULL,
    step TEXT NOT NULL,
    outcome TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    deadline REAL,
    PRIMARY KEY (rollout_id, seq)
);
CREATE TABLE IF NOT EXISTS controls (
    function TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    held_reason TEXT NOT NULL DEFAULT '',
    promote INTEGER NOT NULL DEFAULT 0,
    abort INTEGER NOT NULL DEFAULT 0,
    approved_version TEXT,
    updated_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS modules (
    sha256 TEXT PRIMARY KEY,
    wasm BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS retirements (
    function TEXT NOT NULL,
    node TEXT NOT NULL,
    version TEXT NOT NULL,
    due REAL NOT NULL,
    PRIMARY KEY (function, node, version)
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class SqliteStore:
    """The state database. Safe to share between threads; each call is one transaction."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_NAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from exc
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            # One transaction: a daemon killed while creating the file leaves all or nothing.
            self._db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
        except sqlite3.Error as exc:
            self._db.close()
            raise sqlite_store_error(self.path, exc) from exc
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self._db.close()

    def check(self, thorough: bool = False) -> IntegrityReport:
        with self._lock:
            return integrity(self._db, self.path, thorough)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors leave as typed ones: damage names the file and the way out."""
        try:
            yield
        except sqlite3.Error as exc:
            raise sqlite_store_error(self.path, exc) from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # BEGIN itself may have failed (busy, damaged): then there is nothing to undo,
                # and a ROLLBACK would hide the real error behind "no transaction is active".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock, self._errors():
            cur = self._db.execute(sql, args)
            cur.row_factory = sqlite3.Row
            return list(cur.fetchall())

    # rollouts -----------------------------------------------------------------------------

    def create_rollout(self, row: RolloutRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO rollouts (id, function, version, commit_sha, strategy, state, message,"
                " step, context, created_at, updated_at, finished_at, aborting)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.id,
                    row.function,
                    row.version,
                    row.commit,
                    row.strategy,
                    row.state,
                    row.message,
                    row.step,
                    json.dumps(row.context),
                    row.created_at,
                    row.updated_at,
                    row.finished_at,
                    int(row.aborting),
                ),
            )

    def update_rollout(self, rollout_id: str, now: float, **fields: Any) -> None:
        unknown = set(fields) - ROLLOUT_FIELDS
        if unknown:
            raise ValueError(f"cannot update rollout fields {unknown}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE rollouts SET {sets}, updated_at = ? WHERE id = ?",
                (*fields.values(), now, rollout_id),
            )

    def rollout(self, rollout_id: str) -> RolloutRow | None:
        rows = self._rows("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        return rollout_from_record(rows[0]) if rows else None

    def rollouts(self, function: str | None = None, limit: int = 1000) -> list[RolloutRow]:
        """Newest first."""
        if function:
            rows = self._rows(
                "SELECT * FROM rollouts WHERE function = ? ORDER BY created_at DESC LIMIT ?",
                (function, limit),
            )
        else:
            rows = self._rows("SELECT * FROM rollouts ORDER BY created_at DESC LIMIT ?", (limit,))
        return [rollout_from_record(r) for r in rows]

    def active_rollouts(self) -> list[RolloutRow]:
        """Rollouts not in a final state, oldest first."""
        rows = self._rows(
            "SELECT * FROM rollouts WHERE state NOT IN ('COMPLETED','ROLLED_BACK','FAILED')"
            " ORDER BY created_at"
        )
        return [rollout_from_record(r) for r in rows]

    # journal ------------------------------------------------------------------------------

    def journal(self, rollout_id: str) -> list[JournalRow]:
        rows = self._rows("SELECT * FROM journal WHERE rollout_id = ? ORDER BY seq", (rollout_id,))
        return [journal_from_record(r) for r in rows]

    def begin_step(
        self,
        rollout_id: str,
        seq: int,
        step: Mapping[str, Any],
        now: float,
        deadline: float | None = None,
        label: str = "",
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO journal (rollout_id, seq, step, started_at, deadline)"
                " VALUES (?,?,?,?,?)",
                (rollout_id, seq, json.dumps(step), now, deadline),
            )
            db.execute(
                "UPDATE rollouts SET step = ?, state = 'IN_PROGRESS', updated_at = ?"
                " WHERE id = ? AND state NOT IN ('COMPLETED','ROLLED_BACK','FAILED')",
                (label, now, rollout_id),
            )

    def finish_step(
        self, rollout_id: str, seq: int, outcome: Mapping[str, Any], now: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE journal SET outcome = ?, finished_at = ? WHERE rollout_id = ? AND seq = ?",
                (json.dumps(outcome), now, rollout_id, seq),
            )

    # controls -----------------------------------------------------------------------------

    def controls_stamp(self) -> float:
        """When an operator last changed any control (pause, resume, approve...), 0 if never."""
        rows = self._rows("SELECT max(updated_at) AS stamp FROM controls")
        return float(rows[0]["stamp"] or 0.0) if rows else 0.0

    def controls(self, function: str) -> Controls:
        rows = self._rows("SELECT * FROM controls WHERE function = ?", (function,))
        if not rows:
            return Controls()
        r = rows[0]
        return Controls(
            paused=bool(r["paused"]),
            held=bool(r["held"]),
            held_reason=r["held_reason"],
            promote=bool(r["promote"]),
            abort=bool(r["abort"]),
            approved_version=r["approved_version"],
        )

    def set_control(self, function: str, now: float, **fields: Any) -> None:
        unknown = set(fields) - CONTROL_FIELDS
        if unknown:
            raise ValueError(f"unknown controls {unknown}")
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        updates = ", ".join(f"{k} = excluded.{k}" for k in fields)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO controls (function, {cols}, updated_at) VALUES (?, {marks}, ?)"
                f" ON CONFLICT(function) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
                (function, *fields.values(), now),
            )

    # modules ------------------------------------------------------------------------------

    def put_module(self, sha256: str, wasm: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO modules (sha256, wasm) VALUES (?, ?)", (sha256, wasm))

    def module(self, sha256: str) -> bytes | None:
        rows = self._rows("SELECT wasm FROM modules WHERE sha256 = ?", (sha256,))
        return bytes(rows[0]["wasm"]) if rows else None

    # retirements --------------------------------------------------------------------------

    def schedule_retirement(self, function: str, node: str, version: str, due: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO retirements (function, node, version, due)"
                " VALUES (?,?,?,?)",
                (function, node, version, due),
            )

    def due_retirements(self, now: float) -> list[tuple[str, str, str]]:
        rows = self._rows(
            "SELECT function, node, version FROM retirements WHERE due <= ? ORDER BY due", (now,)
        )
        return [(r["function"], r["node"], r["version"]) for r in rows]

    def cancel_retirement(self, function: str, node: str, version: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM retirements WHERE function = ? AND node = ? AND version = ?",
                (function, node, version),
            )

    # key/value ----------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def put(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


# mypy proves here that SqliteStore implements the Store protocol, method by method.
_IMPLEMENTS_STORE: type[Store] = SqliteStore
