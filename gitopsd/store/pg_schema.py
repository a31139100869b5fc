"""Schema migrations of the PostgreSQL store, versioned in the repository
(gitopsd/store/migrations/pg/NNNN_name.sql) and applied at start.

All pending migrations run in one transaction under a transaction-scoped advisory lock, so
two controllers starting at once apply each migration exactly once, and a crash leaves the
schema as it was. A database migrated by a newer gitopsd (a version this one does not know)
is refused: an older replica must not run against a schema it does not understand (upgrade
one replica at a time, newest schema last).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from gitopsd.errors import StoreError

# pg_advisory_xact_lock key: "gitopsd" in ASCII, so it does not collide with other software's.
MIGRATION_LOCK = 0x676974_6F707364
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this gitopsd, in version order."""
    found = []
    folder = resources.files("gitopsd.store").joinpath("migrations", "pg")
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"PostgreSQL migrations are not numbered 1..n: {versions}")
    return found


def latest_version() -> int:
    return len(migrations())


def migrate(conn: psycopg.Connection[Any], location: str) -> list[str]:
    """Bring the schema up to date; the names of the migrations applied (empty: none)."""
    known = migrations()
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gitopsd_schema ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cur = conn.cursor(row_factory=tuple_row)
        done = {int(str(v)) for (v,) in cur.execute("SELECT version FROM gitopsd_schema")}
        newer = sorted(v for v in done if v > len(known))
        if newer:
            raise StoreError(
                f"state database {location} has schema version {newer[-1]}, newer than this "
                f"gitopsd knows ({len(known)}): upgrade gitopsd on this machine"
            )
        for migration in known:
            if migration.version in done:
                continue
            conn.execute(migration.sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO gitopsd_schema (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration.name)
    return applied


def schema_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """What is wrong with the schema (empty when every migration is applied)."""
    cur = conn.cursor(row_factory=tuple_row)
    rows = cur.execute("SELECT version FROM gitopsd_schema ORDER BY version").fetchall()
    have = [int(str(v)) for (v,) in rows]
    want = list(range(1, latest_version() + 1))
    if have != want:
        return [f"schema migrations applied {have}, expected {want}"]
    return []
