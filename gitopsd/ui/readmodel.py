"""The overview's reads: the newest rollout of every function, controls, waiting reasons.

`Store.rollouts()` parses each row's context (the rollout spec with every target node:
~50 KB for a 500-node rollout), and asking it once per function would be 2,000 queries for
2,000 functions. On SQLite (`SqliteReads`) the overview reads only the light columns, one
query per table, over its own read-only connection to the same file; on PostgreSQL
(`PgReads`) the same queries over a connection of its own to the shared database (so the
page of a standby shows what the leader writes). Any other store (`StoreReads`) is read
through the Store protocol: correct, slower.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from gitopsd.errors import StoreError
from gitopsd.reconcile.keys import waiting_key
from gitopsd.store.pg_url import PgTarget
from gitopsd.store.postgres import PostgresStore, connect, driver_reason
from gitopsd.store.protocol import Store
from gitopsd.store.rows import Controls
from gitopsd.store.sqlite import SqliteStore

_WAITING_PREFIX = waiting_key("")


@dataclass(frozen=True)
class RolloutHead:
    """A rollout without its context: what a row of the overview shows."""

    id: str
    function: str
    version: str
    commit: str
    strategy: str
    state: str
    message: str
    step: str
    created_at: float
    updated_at: float
    finished_at: float | None


class Reads(Protocol):
    """What the overview reads, whatever the store."""

    def latest_rollouts(self) -> dict[str, RolloutHead]:
        """Per function, its newest rollout."""

    def step_counts(self, rollout_ids: list[str]) -> dict[str, int]:
        """Journaled steps per rollout."""

    def controls(self, functions: Iterable[str]) -> Mapping[str, Controls]:
        """Operator controls of `functions` (those with any)."""

    def waiting(self, functions: Iterable[str]) -> dict[str, str]:
        """The daemon's last recorded reason for not starting a rollout, per function."""

    def close(self) -> None: ...


def reads_for(store: Store) -> Reads:
    """The fast reads of a SQLite or PostgreSQL store, the Store protocol's for any other."""
    if isinstance(store, SqliteStore):
        return SqliteReads(store.path)
    if isinstance(store, PostgresStore):
        return PgReads(store.target)
    return StoreReads(store)


# A row of either database's driver, read by column name.
_Record = Mapping[str, Any] | sqlite3.Row


def _head(r: _Record) -> RolloutHead:
    return RolloutHead(
        id=r["id"],
        function=r["function"],
        version=r["version"],
        commit=r["commit_sha"],
        strategy=r["strategy"],
        state=r["state"],
        message=r["message"],
        step=r["step"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        finished_at=r["finished_at"],
    )


def _controls(r: _Record) -> Controls:
    return Controls(
        paused=bool(r["paused"]),
        held=bool(r["held"]),
        held_reason=r["held_reason"],
        promote=bool(r["promote"]),
        abort=bool(r["abort"]),
        approved_version=r["approved_version"],
    )


_HEAD_COLUMNS = (
    "r.id, r.function, r.version, r.commit_sha, r.strategy, r.state, r.message, r.step,"
    " r.created_at, r.updated_at, r.finished_at"
)
# The waiting reasons' keys: [prefix, prefix with its last character incremented).
_WAITING_RANGE = (_WAITING_PREFIX, _WAITING_PREFIX[:-1] + chr(ord(_WAITING_PREFIX[-1]) + 1))


class SqliteReads:
    """Read-only queries on the state database at `path` (safe from any thread)."""

    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
            self._db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {path} for the page: {exc}") from exc
        self._lock = threading.Lock()
        self._heads: tuple[tuple[object, ...], dict[str, RolloutHead]] | None = None

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, args)
            cur.row_factory = sqlite3.Row
            return list(cur.fetchall())

    def latest_rollouts(self) -> dict[str, RolloutHead]:
        """Per function, its newest rollout (read again only when a rollout row changed:
        every change moves its `updated_at`, and a new row the count)."""
        stamp = tuple(self._query("SELECT count(*), max(updated_at) FROM rollouts")[0])
        if self._heads is not None and self._heads[0] == stamp:
            return self._heads[1]
        rows = self._query(
            f"SELECT {_HEAD_COLUMNS} FROM rollouts r"
            " JOIN (SELECT function, max(created_at) AS newest FROM rollouts GROUP BY function) m"
            " ON r.function = m.function AND r.created_at = m.newest"
        )
        heads = {r["function"]: _head(r) for r in rows}
        self._heads = (stamp, heads)
        return heads

    def step_counts(self, rollout_ids: list[str]) -> dict[str, int]:
        """Journaled steps per rollout (for the progress of those under way)."""
        if not rollout_ids:
            return {}
        marks = ",".join("?" for _ in rollout_ids)
        rows = self._query(
            f"SELECT rollout_id, count(*) AS n FROM journal WHERE rollout_id IN ({marks})"
            " GROUP BY rollout_id",
            tuple(rollout_ids),
        )
        return {r["rollout_id"]: int(r["n"]) for r in rows}

    def controls(self, functions: Iterable[str] = ()) -> Mapping[str, Controls]:
        rows = self._query("SELECT * FROM controls")
        return {r["function"]: _controls(r) for r in rows}

    def waiting(self, functions: Iterable[str] = ()) -> dict[str, str]:
        """Per function, the last reason the daemon recorded for not starting a rollout."""
        rows = self._query(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? AND value != ''", _WAITING_RANGE
        )
        return {r["key"][len(_WAITING_PREFIX) :]: r["value"] for r in rows}


class PgReads:
    """The same light queries on a PostgreSQL state, over a connection of the page's own
    (autocommit, reads only; safe from any thread). A lost connection is opened again by
    the next read."""

    def __init__(self, target: PgTarget) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._conn = connect(target)
        self._heads: tuple[tuple[object, ...], dict[str, RolloutHead]] | None = None

    def close(self) -> None:
        self._conn.close()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[Mapping[str, Any]]:
        with self._lock:
            try:
                if self._conn.closed or self._conn.broken:
                    self._conn = connect(self._target)
                return list(self._conn.execute(sql.encode(), args).fetchall())
            except psycopg.Error as exc:
                raise StoreError(
                    f"state database {self._target.display}: {driver_reason(exc)}"
                ) from exc

    def latest_rollouts(self) -> dict[str, RolloutHead]:
        """Per function, its newest rollout (read again only when a rollout row changed)."""
        # The sum too: controllers on several hosts stamp rows with their own clocks, so an
        # update may come in below the newest stamp and leave count and max unchanged.
        row = self._query(
            "SELECT count(*) AS n, max(updated_at) AS t, sum(updated_at) AS s FROM rollouts"
        )[0]
        stamp = (row["n"], row["t"], row["s"])
        if self._heads is not None and self._heads[0] == stamp:
            return self._heads[1]
        rows = self._query(
            f"SELECT DISTINCT ON (r.function) {_HEAD_COLUMNS} FROM rollouts r"
            " ORDER BY r.function, r.created_at DESC, r.id DESC"
        )
        heads = {r["function"]: _head(r) for r in rows}
        self._heads = (stamp, heads)
        return heads

    def step_counts(self, rollout_ids: list[str]) -> dict[str, int]:
        if not rollout_ids:
            return {}
        rows = self._query(
            "SELECT rollout_id, count(*) AS n FROM journal WHERE rollout_id = ANY(%s)"
            " GROUP BY rollout_id",
            (rollout_ids,),
        )
        return {r["rollout_id"]: int(r["n"]) for r in rows}

    def controls(self, functions: Iterable[str] = ()) -> Mapping[str, Controls]:
        return {r["function"]: _controls(r) for r in self._query("SELECT * FROM controls")}

    def waiting(self, functions: Iterable[str] = ()) -> dict[str, str]:
        rows = self._query(
            "SELECT key, value FROM kv WHERE key >= %s AND key < %s AND value <> ''",
            _WAITING_RANGE,
        )
        return {r["key"][len(_WAITING_PREFIX) :]: r["value"] for r in rows}


class StoreReads:
    """The same reads through the Store protocol (one call per function for controls and
    waiting reasons)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def close(self) -> None:
        pass  # the store is its owner's

    def latest_rollouts(self) -> dict[str, RolloutHead]:
        heads: dict[str, RolloutHead] = {}
        for row in self.store.rollouts(limit=100_000):  # newest first
            if row.function not in heads:
                heads[row.function] = RolloutHead(
                    row.id,
                    row.function,
                    row.version,
                    row.commit,
                    row.strategy,
                    row.state,
                    row.message,
                    row.step,
                    row.created_at,
                    row.updated_at,
                    row.finished_at,
                )
        return heads

    def step_counts(self, rollout_ids: list[str]) -> dict[str, int]:
        return {r: len(self.store.journal(r)) for r in rollout_ids}

    def controls(self, functions: Iterable[str]) -> Mapping[str, Controls]:
        return {f: self.store.controls(f) for f in functions}

    def waiting(self, functions: Iterable[str]) -> dict[str, str]:
        found = {f: self.store.get(waiting_key(f)) or "" for f in functions}
        return {f: why for f, why in found.items() if why}
