"""Real damage to a real SQLite state file: garbage written over one page in the middle of
`gitopsd.db`, as a failing disk or a torn copy leaves it."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gitopsd.rollout.steps import Deploy, NodeResult, StepOutcome, outcome_to_json, step_to_json
from gitopsd.store.rows import RolloutRow
from gitopsd.store.sqlite import DB_NAME, SqliteStore

GARBAGE = bytes((i * 151 + 7) % 256 for i in range(4096))  # fixed: the same damage every run


@dataclass(frozen=True)
class Filled:
    """What a filled state directory holds, to compare a rebuild against."""

    db: Path
    rollouts: dict[str, RolloutRow]
    journal_rows: int
    in_flight: tuple[str, ...]


def fill(state_dir: Path, rollouts: int = 300, in_flight: int = 3) -> Filled:
    """Enough rollouts, journal rows, controls and keys to span dozens of pages; the last
    `in_flight` rollouts are still IN_PROGRESS. The store is closed, so the write-ahead log is
    merged into the file and the file alone holds everything."""
    store = SqliteStore(state_dir)
    rows: dict[str, RolloutRow] = {}
    journal_rows = 0
    for i in range(rollouts):
        done = i < rollouts - in_flight
        row = RolloutRow(
            id=f"fn{i % 5}-1.{i}.0-{i:08x}",
            function=f"fn{i % 5}",
            version=f"1.{i}.0",
            commit=f"{i:040x}",
            strategy="canary",
            state="COMPLETED" if done else "IN_PROGRESS",
            message=f"rollout number {i} " + "x" * 60,
            step="",
            context={"nodes": [], "sha256": f"{i:064x}", "padding": "p" * 200},
            created_at=1_000_000.0 + i,
            updated_at=1_000_000.0 + i,
            finished_at=1_000_001.0 + i if done else None,
            aborting=False,
        )
        store.create_rollout(row)
        for seq in range(3):
            step = step_to_json(Deploy(nodes=(f"edge-{seq}",)))
            outcome = outcome_to_json(
                StepOutcome(ok=True, nodes=(NodeResult(f"edge-{seq}", True),))
            )
            store.begin_step(row.id, seq, step, row.created_at, label=f"deploy to edge-{seq}")
            store.finish_step(row.id, seq, outcome, row.created_at)
            journal_rows += 1
        if done:
            store.update_rollout(row.id, row.updated_at, state="COMPLETED", step="")
        rows[row.id] = store.rollout(row.id) or row
    store.set_control("fn1", 5.0, held=1, held_reason="rolled back by operator")
    store.put("held-for:fn1", "1.1.0 " + "a" * 64)
    store.put("last_applied_commit", "f" * 40)
    store.close()
    flying = tuple(r.id for r in rows.values() if r.state == "IN_PROGRESS")
    return Filled(state_dir / DB_NAME, rows, journal_rows, flying)


def pages_of(db: Path, table: str) -> list[int]:
    """Leaf pages holding `table`'s rows, in file order (SQLite's dbstat table)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (table,),
        ).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def page_size(db: Path) -> int:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def corrupt_page(db: Path, table: str = "rollouts") -> int:
    """Overwrite the middle one of `table`'s leaf pages with garbage; returns its number."""
    pages = pages_of(db, table)
    assert len(pages) >= 5, f"{table} spans only {len(pages)} page(s): fill more rows"
    page = pages[len(pages) // 2]
    size = page_size(db)
    assert db.stat().st_size > page * size  # really in the middle of the file
    with db.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(GARBAGE[:size])
    return page


def corrupt_header(db: Path) -> None:
    """Garbage over the file's first 100 bytes: SQLite no longer sees a database."""
    with db.open("r+b") as f:
        f.write(GARBAGE[:100])
