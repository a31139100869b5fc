"""SQLite's exceptions as gitopsd's typed errors: damage is a `StateError` that names the
file and the way out, anything else a `StoreError`. No `sqlite3` exception leaves the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gitopsd.errors import StateError, StoreError

# Primary result codes (the low byte of an extended code such as SQLITE_CORRUPT_INDEX).
SQLITE_CORRUPT = 11  # "database disk image is malformed"
SQLITE_NOTADB = 26  # "file is not a database" (a damaged or truncated header)


def is_damage(exc: sqlite3.Error) -> bool:
    """True when `exc` says the file's contents are damaged (not busy, not an I/O error)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


def sqlite_store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """The typed error to raise for `exc`, met while using the database file `path`."""
    if is_damage(exc):
        return StateError(str(path), str(exc))
    return StoreError(f"state database {path}: {exc}")
