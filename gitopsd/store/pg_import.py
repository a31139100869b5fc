"""`gitopsd state migrate --to postgresql://...`: copy a SQLite state into PostgreSQL.

Every table is copied as stored (rollouts, their journal, operator controls with their
holds, module bytes, scheduled retirements, the key/value table), in one PostgreSQL
transaction, then the counts are read back from both sides and compared. The SQLite file is
opened read-only and stays as it was: pointing `[state] url` back at nothing undoes the move.
The target must hold no gitopsd state yet (a second run would otherwise mix two histories).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitopsd.errors import StateError, StoreError
from gitopsd.store.pg_url import PgTarget
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.sqlite_errors import sqlite_store_error
from gitopsd.store.sqlite_integrity import check_file

# table -> (columns, columns stored as 0/1 in SQLite and as booleans in PostgreSQL)
TABLES: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "rollouts": (
        (
            "id",
            "function",
            "version",
            "commit_sha",
            "strategy",
            "state",
            "message",
            "step",
            "context",
            "created_at",
            "updated_at",
            "finished_at",
            "aborting",
        ),
        frozenset({"aborting"}),
    ),
    "journal": (
        ("rollout_id", "seq", "step", "outcome", "started_at", "finished_at", "deadline"),
        frozenset(),
    ),
    "controls": (
        (
            "function",
            "paused",
            "held",
            "held_reason",
            "promote",
            "abort",
            "approved_version",
            "updated_at",
        ),
        frozenset({"paused", "held", "promote", "abort"}),
    ),
    "modules": (("sha256", "wasm"), frozenset()),
    "retirements": (("function", "node", "version", "due"), frozenset()),
    "kv": (("key", "value"), frozenset()),
}


@dataclass(frozen=True)
class MigrateReport:
    """What was copied: rows per table (equal on both sides), and the holds among controls."""

    source: str
    target: str
    counts: dict[str, int]
    holds: int

    def lines(self) -> list[str]:
        c = self.counts
        return [
            f"copied {self.source} into {self.target}:",
            f"  {c['rollouts']} rollout(s), {c['journal']} journaled step(s)",
            f"  {c['controls']} function control(s) ({self.holds} hold(s)), {c['kv']} key(s)",
            f"  {c['modules']} module(s), {c['retirements']} scheduled retirement(s)",
            "counts verified on both sides; point [state] url at it and start the daemons",
        ]


def migrate_sqlite_to_postgres(db_path: Path, target: PgTarget) -> MigrateReport:
    """Copy the SQLite state at `db_path` into the (empty) database `target`."""
    if not db_path.is_file():
        raise StoreError(f"no state database at {db_path}: nothing to migrate (--state-dir?)")
    report = check_file(db_path, thorough=True)
    if not report.ok:
        raise StateError(report.location, report.summary)
    source = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = {table: _read(source, db_path, table, cols) for table, (cols, _) in TABLES.items()}
        holds = sum(1 for r in rows["controls"] if r[TABLES["controls"][0].index("held")])
    finally:
        source.close()
    store = PostgresStore(target)  # applies the schema
    try:
        with store.bulk() as conn:
            present = {t: _count(conn, t) for t in TABLES}
            if any(present.values()):
                held = ", ".join(f"{n} {t}" for t, n in present.items() if n)
                raise StoreError(
                    f"state database {target.display} already holds gitopsd state ({held}):"
                    " migrate into an empty database"
                )
            for table, (cols, flags) in TABLES.items():
                _write(conn, table, cols, flags, rows[table])
        with store.bulk() as conn:
            counts = {t: _count(conn, t) for t in TABLES}
    finally:
        store.close()
    expected = {t: len(r) for t, r in rows.items()}
    if counts != expected:
        raise StoreError(
            f"state migrate: counts differ after the copy (SQLite {expected}, "
            f"PostgreSQL {counts}): do not use {target.display}"
        )
    return MigrateReport(str(db_path), target.display, counts, holds)


def _read(
    db: sqlite3.Connection, path: Path, table: str, cols: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    try:
        return list(db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall())
    except sqlite3.Error as exc:
        raise sqlite_store_error(path, exc) from exc


def _count(conn: Any, table: str) -> int:
    row = conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()
    return int(row["n"])


def _write(
    conn: Any,
    table: str,
    cols: tuple[str, ...],
    flags: frozenset[str],
    rows: list[tuple[Any, ...]],
) -> None:
    if not rows:
        return
    flag_at = [i for i, c in enumerate(cols) if c in flags]
    converted = []
    for row in rows:
        values = list(row)
        for i in flag_at:
            values[i] = bool(values[i])
        converted.append(values)
    marks = ", ".join("%s" for _ in cols)
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", converted)
