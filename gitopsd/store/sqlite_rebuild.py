"""`gitopsd state rebuild`: move a damaged `gitopsd.db` aside and start a new one from every
row that can still be read.

Nothing in the state database is the only copy of the truth that matters most: live state
comes back from the agents and desired state from Git on the next pass. What the file alone
knew (rollout history, journals of rollouts in flight, operator controls and holds, module
bytes for `gitopsd rollback`, scheduled retirements) is salvaged row by row: each table is
read in rowid order, and where a damaged page stops the read, the read resumes at the first
rowid past the damage. The report says per table how many rows were kept and which were lost.

A rollout still in flight cannot be resumed from a journal that lost rows (the engine replays
the journal step by step): when journal or module rows were lost, every rollout that was not
finished is closed FAILED and marked for a retry, so the next pass plans it again from the
agents' live state.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gitopsd.errors import StoreError
from gitopsd.rollout.steps import RolloutState
from gitopsd.store.rows import FINAL_STATES
from gitopsd.store.sqlite import DB_NAME, SCHEMA
from gitopsd.store.sqlite_errors import is_damage, sqlite_store_error
from gitopsd.store.sqlite_integrity import integrity

Rows = dict[str, list[tuple[Any, ...]]]  # table -> (rowid, *columns) of salvaged rows

MAX_ROWID = 2**63 - 1
MIN_ROWID = -(2**63)
# Columns holding JSON: a row whose JSON does not parse is damaged, not salvaged.
JSON_COLUMNS = {"rollouts": ("context",), "journal": ("step", "outcome")}
# Tables in the order rows are salvaged and written (rollouts before their journal).
TABLES = ("rollouts", "journal", "controls", "modules", "retirements", "kv")
# What losing rows of each table costs an operator, and what to do about it.
LOSS_MEANING = {
    "rollouts": "history of those rollouts (`gitopsd history`, rollback targets)",
    "journal": "step journals: rollouts in flight are closed and planned again",
    "controls": "operator controls: pauses, holds left by `gitopsd rollback`, pending promote/"
    "abort and approvals of some functions; set them again",
    "modules": "module bytes of past versions: `gitopsd rollback` to them fails until a "
    "rollout stores them again",
    "retirements": "scheduled retirements: the old version stays loaded on those nodes until "
    "the function's next rollout",
    "kv": "last applied commit, hold targets and waiting reasons: the next pass recomputes them",
}


@dataclass(frozen=True)
class TableSalvage:
    """What became of one table's rows."""

    table: str
    salvaged: int
    stored: int | None  # rows the damaged file counted (through an index), None: unreadable
    unreadable: tuple[tuple[int, int | None], ...]  # rowid ranges lost; None: to the end
    damaged: int = 0  # rows read but unusable: bad JSON, or refused by the new schema
    orphaned: int = 0  # journal rows of rollouts that were lost

    @property
    def damage_lost_rows(self) -> bool:
        """Rows of this table itself were lost to the damage (not only orphans dropped)."""
        missing = (self.stored or 0) - self.salvaged - self.orphaned
        return bool(self.unreadable or self.damaged or missing > 0)

    def describe(self) -> str:
        """One line for the operator: kept, lost, and what the loss means."""
        of = f" of {self.stored}" if self.stored is not None else ""
        line = f"{self.table}: {self.salvaged}{of} row(s) salvaged"
        if not (self.damage_lost_rows or self.orphaned):
            return line + ", nothing lost"
        lost: list[str] = []
        for first, last in self.unreadable:
            if first == MIN_ROWID and last is None:
                lost.append("the whole table was unreadable")
            elif last is None:
                lost.append(f"rowids from {first} on unreadable")
            else:
                lost.append(f"rowids {first}-{last} unreadable")
        if self.damaged:
            lost.append(f"{self.damaged} damaged row(s) dropped")
        if self.orphaned:
            lost.append(f"{self.orphaned} row(s) of lost rollouts dropped")
        return f"{line}; LOST: {', '.join(lost)} ({LOSS_MEANING[self.table]})"


@dataclass(frozen=True)
class RebuildReport:
    """The outcome of a rebuild."""

    moved_to: Path
    database: Path
    problems: tuple[str, ...]  # what the integrity check found in the damaged file
    schema_readable: bool
    tables: tuple[TableSalvage, ...]
    closed_rollouts: tuple[str, ...]

    def lines(self) -> list[str]:
        out = [f"moved the damaged file to {self.moved_to}"]
        out.extend(f"  damage: {problem}" for problem in self.problems[:5])
        if len(self.problems) > 5:
            out.append(f"  ... and {len(self.problems) - 5} more (`gitopsd state check` on it)")
        if not self.schema_readable:
            out.append(
                "nothing could be read from it: the new database is empty (LOST: rollout "
                "history and journals, holds and operator controls, stored modules, scheduled "
                "retirements; set holds and controls again)"
            )
        out.extend(t.describe() for t in self.tables)
        for rollout_id in self.closed_rollouts:
            out.append(
                f"closed rollout {rollout_id} as FAILED: its journal is incomplete; the next "
                "pass plans it again"
            )
        out.append(
            f"new state database {self.database}: live state comes back from the agents and "
            "desired state from Git on the next pass (`gitopsd status`, `gitopsd diff`)"
        )
        return out


def rebuild(state_dir: Path, now: float, retry_key: Callable[[str], str]) -> RebuildReport:
    """Move `state_dir/gitopsd.db` aside (timestamped, beside it) and write a new one holding
    every row still readable. `retry_key(function)` names the key/value entry that lets the
    next pass roll a closed rollout's version out again. Raises StoreError when there is no
    file, when another process has it open, or when the new file cannot be written."""
    path = state_dir / DB_NAME
    if not path.is_file():
        raise StoreError(f"no state database at {path}: nothing to rebuild")
    old = _open_alone(path)
    if isinstance(old, str):  # not even the first page reads: nothing to salvage
        problems: tuple[str, ...] = (old,)
        tables: tuple[TableSalvage, ...] = ()
        rows: Rows = {}
    else:
        try:
            problems = integrity(old, path, thorough=True).problems
            tables, rows = _salvage(old)
        finally:
            old.close()  # also merges its write-ahead log into the file: the copy is whole
    moved = _move_aside(path, now)
    closed = _close_in_flight(tables, rows, now) if tables else ()
    refused = _write_new(path, rows, closed, retry_key)
    tables = tuple(
        replace(
            t,
            salvaged=t.salvaged - refused.get(t.table, 0),
            damaged=t.damaged + refused.get(t.table, 0),
        )
        for t in tables
    )
    return RebuildReport(moved, path, problems, bool(tables), tables, closed)


def _open_alone(path: Path) -> sqlite3.Connection | str:
    """Open the damaged file and make sure no other process (a daemon, a `gitopsd sync`) has
    it open: moving it aside under them would lose what they write next. SQLite's error
    instead when the file is too damaged to be opened as a database at all (then no process
    can be using it either)."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    except sqlite3.Error as exc:
        raise sqlite_store_error(path, exc) from exc
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("ROLLBACK")  # the exclusive lock stays until close (locking_mode)
    except sqlite3.Error as exc:
        db.close()
        if is_damage(exc):
            return str(exc)
        raise StoreError(
            f"{path} is in use by another gitopsd process ({exc}): stop the daemon "
            "(`systemctl stop gitopsd`) and any `gitopsd sync`, then rebuild"
        ) from exc
    return db


def _columns(table: str) -> list[str]:
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(SCHEMA)
        return [str(r[1]) for r in mem.execute(f"PRAGMA table_info({table})")]
    finally:
        mem.close()


def _salvage(db: sqlite3.Connection) -> tuple[tuple[TableSalvage, ...], Rows]:
    """Every readable row of every table; () when not even the schema can be read."""
    try:
        present = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        if is_damage(exc):
            return (), {}
        raise
    out: list[TableSalvage] = []
    rows: Rows = {}
    for table in TABLES:
        columns = _columns(table)
        if table not in present:
            out.append(TableSalvage(table, 0, None, ((MIN_ROWID, None),)))
            rows[table] = []
            continue
        kept, unreadable = _read_table(db, table, columns)
        good = [r for r in kept if _json_ok(table, columns, r)]
        rows[table] = good
        out.append(
            TableSalvage(
                table, len(good), _count(db, table), unreadable, damaged=len(kept) - len(good)
            )
        )
    return _drop_orphans(tuple(out), rows), rows


def _read_table(
    db: sqlite3.Connection, table: str, columns: Sequence[str]
) -> tuple[list[tuple[Any, ...]], tuple[tuple[int, int | None], ...]]:
    """Rows in rowid order (rowid first), and the rowid ranges that could not be read."""
    sql = f"SELECT rowid, {', '.join(columns)} FROM {table} WHERE rowid >= ? ORDER BY rowid"
    kept: list[tuple[Any, ...]] = []
    unreadable: list[tuple[int, int | None]] = []
    start = MIN_ROWID  # the next rowid not yet read
    while True:
        try:
            for row in db.execute(sql, (start,)):
                kept.append(tuple(row))
                if int(row[0]) == MAX_ROWID:
                    return kept, tuple(unreadable)
                start = int(row[0]) + 1
            break
        except sqlite3.Error as exc:
            if not is_damage(exc):
                raise
        resume = _first_readable_from(db, sql, start)
        unreadable.append((start, None if resume is None else resume - 1))
        if resume is None:
            break
        start = resume
    return kept, tuple(unreadable)


def _first_readable_from(db: sqlite3.Connection, sql: str, start: int) -> int | None:
    """The rowid of the first row past `start` that can be read (the rows before it sit on
    damaged pages), or None when nothing past `start` can be read. Exponential steps find a
    readable point, then bisection the first one: O(log n) probes per damaged stretch."""
    probe_sql = f"{sql} LIMIT 1"

    def first_row(at: int) -> tuple[bool, int | None]:
        try:
            row = db.execute(probe_sql, (at,)).fetchone()
        except sqlite3.Error as exc:
            if not is_damage(exc):
                raise
            return False, None
        return True, (int(row[0]) if row is not None else None)

    failing = start  # reading from `start` failed, or we would not be here
    step = 1
    while True:
        probe = min(start + step, MAX_ROWID)
        ok, found = first_row(probe)
        if ok:
            break
        failing = probe
        if probe == MAX_ROWID:
            return None
        step *= 2
    while probe - failing > 1:  # the smallest readable start in (failing, probe]
        middle = (failing + probe) // 2
        ok_mid, found_mid = first_row(middle)
        if ok_mid:
            probe, found = middle, found_mid
        else:
            failing = middle
    return found


def _count(db: sqlite3.Connection, table: str) -> int | None:
    """How many rows the damaged file says it holds (SQLite counts through an index, which
    may live on undamaged pages), or None when that cannot be read either."""
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error as exc:
        if not is_damage(exc):
            raise
        return None


def _json_ok(table: str, columns: Sequence[str], row: tuple[Any, ...]) -> bool:
    """Every JSON column holds a JSON object (a journal outcome may also be NULL)."""
    for name in JSON_COLUMNS.get(table, ()):
        value = row[1 + columns.index(name)]
        if value is None and name == "outcome":
            continue
        try:
            if not isinstance(json.loads(value), dict):
                return False
        except (TypeError, ValueError):
            return False
    return True


def _drop_orphans(tables: tuple[TableSalvage, ...], rows: Rows) -> tuple[TableSalvage, ...]:
    """Journal rows of rollouts that were lost are of no use: drop them, counted."""
    ids = {r[1] for r in rows["rollouts"]}
    journal = rows["journal"]
    kept = [r for r in journal if r[1] in ids]
    rows["journal"] = kept
    return tuple(
        replace(t, salvaged=len(kept), orphaned=len(journal) - len(kept))
        if t.table == "journal"
        else t
        for t in tables
    )


def _close_in_flight(tables: tuple[TableSalvage, ...], rows: Rows, now: float) -> tuple[str, ...]:
    lost = {t.table for t in tables if t.damage_lost_rows}
    if not lost & {"journal", "modules"}:
        return ()
    columns = _columns("rollouts")
    state, message, finished = (1 + columns.index(c) for c in ("state", "message", "finished_at"))
    closed: list[str] = []
    for i, row in enumerate(rows["rollouts"]):
        if row[state] in FINAL_STATES:
            continue
        new = list(row)
        new[state] = str(RolloutState.FAILED)
        new[message] = (
            "closed by `gitopsd state rebuild`: its journal was damaged; the next pass plans "
            "it again from the agents' live state"
        )
        new[finished] = now
        rows["rollouts"][i] = tuple(new)
        closed.append(str(row[1]))
    return tuple(closed)


def _move_aside(path: Path, now: float) -> Path:
    """gitopsd.db -> gitopsd.db.damaged-20261207T121314Z (and its -wal, -shm if left)."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
    except OSError as exc:
        raise StoreError(f"cannot move {path} aside to {target}: {exc}") from exc
    return target


def _write_new(
    path: Path, rows: Rows, closed: Sequence[str], retry_key: Callable[[str], str]
) -> dict[str, int]:
    """Create the new database in one transaction; returns per table how many salvaged rows
    it refused (a key seen twice through a damaged index, a NULL where none may be)."""
    refused: dict[str, int] = {}
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise sqlite_store_error(path, exc) from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        for table in TABLES:
            columns = _columns(table)
            marks = ", ".join("?" for _ in columns)
            before = db.total_changes
            values = [r[1:] for r in rows.get(table, [])]
            db.executemany(
                f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({marks})", values
            )
            refused[table] = len(values) - (db.total_changes - before)
        for rollout_id, function in _closed_functions(rows, closed):
            db.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (retry_key(function), rollout_id),
            )
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise sqlite_store_error(path, exc) from exc
    finally:
        db.close()
    return refused


def _closed_functions(rows: Rows, closed: Sequence[str]) -> list[tuple[str, str]]:
    columns = _columns("rollouts")
    function = 1 + columns.index("function")
    wanted = set(closed)
    return [(str(r[1]), str(r[function])) for r in rows.get("rollouts", []) if r[1] in wanted]
