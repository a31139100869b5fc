"""SQLite's own integrity checks (`PRAGMA quick_check`, `PRAGMA integrity_check`), read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gitopsd.errors import StoreError
from gitopsd.store.rows import IntegrityReport
from gitopsd.store.sqlite_errors import is_damage, sqlite_store_error


def integrity(db: sqlite3.Connection, path: Path, thorough: bool) -> IntegrityReport:
    """Run the quick check (every page and row format; O(size)) or, `thorough`, the full one
    (also every index against its table). Damage so bad that the check itself stops is a
    problem in the report, not an exception."""
    pragma = "integrity_check" if thorough else "quick_check"
    try:
        rows = db.execute(f"PRAGMA {pragma}").fetchall()
    except sqlite3.Error as exc:
        if is_damage(exc):
            return IntegrityReport(str(path), (str(exc),))
        raise sqlite_store_error(path, exc) from exc
    problems = tuple(str(row[0]) for row in rows if row[0] != "ok")
    return IntegrityReport(str(path), problems)


def check_file(path: Path, thorough: bool = True) -> IntegrityReport:
    """Check the database file at `path` without creating or changing it (read-only)."""
    if not path.is_file():
        raise StoreError(f"no state database at {path}: nothing to check (is --state-dir right?)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise sqlite_store_error(path, exc) from exc
    try:
        return integrity(db, path, thorough)
    finally:
        db.close()
