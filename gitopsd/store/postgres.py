"""PostgreSQL store: the same Protocol as SQLite (protocol.py), for controllers on several
machines sharing one database (`[state] url = "postgresql://..."`).

psycopg 3's blocking API fits the synchronous Protocol: one connection per store handle,
each call one transaction, calls serialized by a lock (the daemon may call from threads).
A connection the server dropped is opened again on the next call; the call that met the
drop raises StoreError and changed nothing.

A leader's handle carries a `Fence` (its holder id and terms): every write transaction then
names them (`SET LOCAL gitopsd.fence`) and the database's fencing trigger rejects it when the
term has been deposed (migrations/pg/0002_leases.sql), raising `Fenced`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

from gitopsd.errors import StoreError
from gitopsd.store.pg_schema import migrate, schema_problems
from gitopsd.store.pg_url import PgTarget
from gitopsd.store.protocol import Store
from gitopsd.store.rows import (
    CONTROL_FIELDS,
    FINAL_STATES,
    ROLLOUT_FIELDS,
    Controls,
    IntegrityReport,
    JournalRow,
    RolloutRow,
    journal_from_record,
    rollout_from_record,
)

FENCED_SQLSTATE = "GD001"
_BOOL_CONTROLS = frozenset({"paused", "held", "promote", "abort"})
_TABLES = ("rollouts", "journal", "controls", "modules", "retirements", "kv", "leases")


class Fenced(StoreError):
    """A write made under a leader's term that is no longer current: the database refused it
    and nothing of it was applied. The process must stop acting for that shard."""


@dataclass(frozen=True)
class Fence:
    """The terms a leader acts under: `terms` maps each shard it leads to its term."""

    holder: str
    shards: int
    terms: Mapping[int, int]

    def setting(self) -> str:
        return json.dumps(
            {
                "holder": self.holder,
                "shards": self.shards,
                "terms": {str(s): t for s, t in self.terms.items()},
            }
        )


# A transaction left open by a client that stopped (a frozen leader, SIGSTOP between its
# write and its COMMIT) holds the FOR SHARE lock the fencing trigger takes on its lease row,
# and a standby could not take the lease until it thawed. The server ends such a session
# after this long: its write is rolled back, the lock released. Every store transaction is a
# few statements sent back to back, so a live client never idles this long inside one.
IDLE_IN_TRANSACTION_MS = 500


def connect(target: PgTarget, autocommit: bool = True) -> psycopg.Connection[DictRow]:
    """A connection to the state database; StoreError (exit 2) naming it when that fails."""
    try:
        conn = psycopg.connect(
            target.conninfo,
            autocommit=autocommit,
            row_factory=dict_row,
            **target.connect_kwargs(),
        )
        conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
        return conn
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot reach the state database {target.display}: {driver_reason(exc)}"
        ) from exc


def driver_reason(exc: psycopg.Error) -> str:
    """The driver's message on one line, any URL in it without its password."""
    from gitopsd.source.redact import redact

    text = " ".join(str(exc).split())
    return redact(text) or type(exc).__name__


class PostgresStore:
    """The state in a PostgreSQL database; schema migrated when opened."""

    def __init__(self, target: PgTarget) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._fence: Fence | None = None
        self._conn = connect(target)
        try:
            with self._errors():
                migrate(self._conn, target.display)
        except BaseException:
            self._conn.close()
            raise

    @property
    def location(self) -> str:
        return self.target.display

    def close(self) -> None:
        self._conn.close()

    def set_fence(self, fence: Fence | None) -> None:
        """Write under `fence` from now on (None: unfenced, as operator commands write)."""
        self._fence = fence

    def check(self, thorough: bool = False) -> IntegrityReport:
        problems: list[str] = []
        with self._lock, self._errors():
            conn = self._connection()
            problems += schema_problems(conn)
            if thorough and not problems:
                for table in _TABLES:
                    conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                orphans = conn.execute(
                    "SELECT count(*) AS n FROM journal j"
                    " WHERE NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.id = j.rollout_id)"
                ).fetchone()
                if orphans and orphans["n"]:
                    problems.append(f"{orphans['n']} journal row(s) of no stored rollout")
        return IntegrityReport(self.location, tuple(problems))

    # plumbing -----------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[DictRow]:
        if self._conn.closed or self._conn.broken:
            self._conn = connect(self.target)
        return self._conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors leave as typed ones naming the database, never its password."""
        try:
            yield
        except psycopg.Error as exc:
            if exc.sqlstate == FENCED_SQLSTATE:
                raise Fenced(f"state database {self.location}: {driver_reason(exc)}") from exc
            raise StoreError(f"state database {self.location}: {driver_reason(exc)}") from exc

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[DictRow]]:
        with self._lock, self._errors():
            conn = self._connection()
            with conn.transaction():
                if self._fence is not None:
                    conn.execute(
                        "SELECT set_config('gitopsd.fence', %s, true)", (self._fence.setting(),)
                    )
                yield conn

    @contextmanager
    def bulk(self) -> Iterator[psycopg.Connection[DictRow]]:
        """One transaction on the raw connection, for bulk copies (`gitopsd state migrate`):
        committed when the block ends, rolled back when it raises; errors typed."""
        with self._tx() as conn:
            yield conn

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[DictRow]:
        with self._lock, self._errors():
            return self._connection().execute(sql, args).fetchall()

    # rollouts -----------------------------------------------------------------------------

    def create_rollout(self, row: RolloutRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO rollouts (id, function, version, commit_sha, strategy, state,"
                " message, step, context, created_at, updated_at, finished_at, aborting)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
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
                    bool(row.aborting),
                ),
            )

    def update_rollout(self, rollout_id: str, now: float, **fields: Any) -> None:
        unknown = set(fields) - ROLLOUT_FIELDS
        if unknown:
            raise ValueError(f"cannot update rollout fields {unknown}")
        if "aborting" in fields:
            fields["aborting"] = bool(fields["aborting"])
        sets = ", ".join(f"{k} = %s" for k in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE rollouts SET {sets}, updated_at = %s WHERE id = %s",
                (*fields.values(), now, rollout_id),
            )

    def rollout(self, rollout_id: str) -> RolloutRow | None:
        rows = self._rows("SELECT * FROM rollouts WHERE id = %s", (rollout_id,))
        return rollout_from_record(rows[0]) if rows else None

    def rollouts(self, function: str | None = None, limit: int = 1000) -> list[RolloutRow]:
        if function:
            rows = self._rows(
                "SELECT * FROM rollouts WHERE function = %s"
                " ORDER BY created_at DESC, id DESC LIMIT %s",
                (function, limit),
            )
        else:
            rows = self._rows(
                "SELECT * FROM rollouts ORDER BY created_at DESC, id DESC LIMIT %s", (limit,)
            )
        return [rollout_from_record(r) for r in rows]

    def active_rollouts(self) -> list[RolloutRow]:
        rows = self._rows(
            "SELECT * FROM rollouts WHERE NOT (state = ANY(%s)) ORDER BY created_at, id",
            (sorted(FINAL_STATES),),
        )
        return [rollout_from_record(r) for r in rows]

    # journal ------------------------------------------------------------------------------

    def journal(self, rollout_id: str) -> list[JournalRow]:
        rows = self._rows("SELECT * FROM journal WHERE rollout_id = %s ORDER BY seq", (rollout_id,))
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
                " VALUES (%s,%s,%s,%s,%s)",
                (rollout_id, seq, json.dumps(step), now, deadline),
            )
            db.execute(
                "UPDATE rollouts SET step = %s, state = 'IN_PROGRESS', updated_at = %s"
                " WHERE id = %s AND NOT (state = ANY(%s))",
                (label, now, rollout_id, sorted(FINAL_STATES)),
            )

    def finish_step(
        self, rollout_id: str, seq: int, outcome: Mapping[str, Any], now: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE journal SET outcome = %s, finished_at = %s"
                " WHERE rollout_id = %s AND seq = %s",
                (json.dumps(outcome), now, rollout_id, seq),
            )

    # controls -----------------------------------------------------------------------------

    def controls_stamp(self) -> float:
        rows = self._rows("SELECT max(updated_at) AS stamp FROM controls")
        return float(rows[0]["stamp"] or 0.0) if rows else 0.0

    def controls(self, function: str) -> Controls:
        rows = self._rows("SELECT * FROM controls WHERE function = %s", (function,))
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
        values = {k: bool(v) if k in _BOOL_CONTROLS else v for k, v in fields.items()}
        cols = ", ".join(values)
        marks = ", ".join("%s" for _ in values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO controls (function, {cols}, updated_at) VALUES (%s, {marks}, %s)"
                f" ON CONFLICT (function) DO UPDATE SET {updates},"
                " updated_at = excluded.updated_at",
                (function, *values.values(), now),
            )

    # modules ------------------------------------------------------------------------------

    def put_module(self, sha256: str, wasm: bytes) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO modules (sha256, wasm) VALUES (%s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                (sha256, wasm),
            )

    def module(self, sha256: str) -> bytes | None:
        rows = self._rows("SELECT wasm FROM modules WHERE sha256 = %s", (sha256,))
        return bytes(rows[0]["wasm"]) if rows else None

    # retirements --------------------------------------------------------------------------

    def schedule_retirement(self, function: str, node: str, version: str, due: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO retirements (function, node, version, due) VALUES (%s,%s,%s,%s)"
                " ON CONFLICT (function, node, version) DO UPDATE SET due = excluded.due",
                (function, node, version, due),
            )

    def due_retirements(self, now: float) -> list[tuple[str, str, str]]:
        rows = self._rows(
            "SELECT function, node, version FROM retirements WHERE due <= %s"
            " ORDER BY due, function, node, version",
            (now,),
        )
        return [(r["function"], r["node"], r["version"]) for r in rows]

    def cancel_retirement(self, function: str, node: str, version: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM retirements WHERE function = %s AND node = %s AND version = %s",
                (function, node, version),
            )

    # key/value ----------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM kv WHERE key = %s", (key,))
        return str(rows[0]["value"]) if rows else None

    def put(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO kv (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


# mypy proves here that PostgresStore implements the Store protocol, method by method.
_IMPLEMENTS_STORE: type[Store] = PostgresStore
