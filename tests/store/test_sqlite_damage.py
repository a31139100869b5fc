"""A damaged SQLite state file: typed errors instead of tracebacks, the integrity check, and
the rebuild that keeps every readable row and says what it lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gitopsd.errors import StateError, StoreError
from gitopsd.reconcile import retry_key
from gitopsd.store.sqlite import DB_NAME, SqliteStore
from gitopsd.store.sqlite_integrity import check_file
from gitopsd.store.sqlite_rebuild import rebuild
from tests.store.damage import Filled, corrupt_header, corrupt_page, fill

NOW = 2_000_000_000.0


@pytest.fixture
def filled(tmp_path: Path) -> Filled:
    return fill(tmp_path / "state")


def test_reading_a_damaged_page_is_a_state_error_naming_the_file_and_the_way_out(
    filled: Filled,
) -> None:
    corrupt_page(filled.db, "rollouts")
    store = SqliteStore(filled.db.parent)  # opening reads only the schema page
    with pytest.raises(StateError) as caught:
        store.rollouts()
    message = str(caught.value)
    assert str(filled.db) in message
    assert "gitopsd state rebuild" in message and "gitopsd state check" in message
    assert caught.value.exit_code == 2
    assert not isinstance(caught.value.__cause__, StateError)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)  # kept for the log
    store.close()


def test_writing_into_a_damaged_table_is_a_state_error_too(filled: Filled) -> None:
    corrupt_page(filled.db, "rollouts")
    store = SqliteStore(filled.db.parent)
    with pytest.raises(StateError):
        for row_id in filled.rollouts:  # the rows on the damaged page cannot be updated
            store.update_rollout(row_id, NOW, message="touched")
    store.put("still", "usable")  # the transaction was rolled back: the store goes on
    assert store.get("still") == "usable"
    store.close()


def test_a_damaged_header_is_a_state_error_when_opening(filled: Filled) -> None:
    corrupt_header(filled.db)
    with pytest.raises(StateError, match="gitopsd state rebuild"):
        SqliteStore(filled.db.parent)


def test_both_checks_find_the_damaged_page(filled: Filled) -> None:
    store = SqliteStore(filled.db.parent)
    assert store.check().ok
    store.close()
    assert check_file(filled.db).ok
    corrupt_page(filled.db, "rollouts")
    store = SqliteStore(filled.db.parent)
    for thorough in (False, True):
        report = store.check(thorough=thorough)
        assert not report.ok
        assert report.location == str(filled.db)
        assert "malformed" in report.summary or "page" in report.summary, report.problems
    store.close()
    assert not check_file(filled.db).ok


def test_check_file_changes_nothing_and_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no state database"):
        check_file(tmp_path / DB_NAME)
    assert not (tmp_path / DB_NAME).exists()


def test_rebuild_keeps_every_readable_row_and_names_the_lost_ones(filled: Filled) -> None:
    corrupt_page(filled.db, "rollouts")
    report = rebuild(filled.db.parent, NOW, retry_key)

    assert report.moved_to.exists() and report.moved_to.parent == filled.db.parent
    assert report.moved_to.name.startswith(f"{DB_NAME}.damaged-")
    assert report.problems  # what the integrity check said about the damaged file
    tables = {t.table: t for t in report.tables}
    rollouts = tables["rollouts"]
    store = SqliteStore(filled.db.parent)
    kept = {r.id: r for r in store.rollouts(limit=10_000)}
    lost = set(filled.rollouts) - set(kept)
    # One page of rows is gone, every other row is back exactly as it was.
    assert 0 < len(lost) < 50
    assert all(kept[i] == filled.rollouts[i] for i in kept)
    assert rollouts.stored == len(filled.rollouts)
    assert rollouts.salvaged == len(kept) == len(filled.rollouts) - len(lost)
    assert len(rollouts.unreadable) == 1
    first, last = rollouts.unreadable[0]
    assert last is not None and last - first + 1 == len(lost)
    # Journals of lost rollouts are dropped and counted; the others are whole.
    journal = tables["journal"]
    assert journal.orphaned == 3 * len(lost)
    assert journal.salvaged == filled.journal_rows - journal.orphaned
    assert all(len(store.journal(i)) == 3 for i in kept)
    # The journal itself lost nothing: the rollouts in flight stay in flight.
    assert report.closed_rollouts == ()
    assert {r.id for r in store.active_rollouts()} == set(filled.in_flight) - lost
    # Holds, controls and keys were on undamaged pages: kept, and said so.
    assert store.controls("fn1").held
    assert store.get("last_applied_commit") == "f" * 40
    assert store.check(thorough=True).ok
    store.close()
    text = "\n".join(report.lines())
    assert str(report.moved_to) in text
    assert f"rollouts: {len(kept)} of {len(filled.rollouts)} row(s) salvaged; LOST" in text
    assert f"rowids {first}-{last} unreadable" in text
    assert "controls: 1 of 1 row(s) salvaged, nothing lost" in text


def test_rebuild_closes_rollouts_in_flight_when_journal_rows_were_lost(filled: Filled) -> None:
    corrupt_page(filled.db, "journal")
    report = rebuild(filled.db.parent, NOW, retry_key)
    journal = {t.table: t for t in report.tables}["journal"]
    assert journal.damage_lost_rows and journal.unreadable
    assert set(report.closed_rollouts) == set(filled.in_flight)
    store = SqliteStore(filled.db.parent)
    assert store.active_rollouts() == []
    for rollout_id in filled.in_flight:
        row = store.rollout(rollout_id)
        assert row is not None and row.state == "FAILED" and row.finished_at == NOW
        assert "state rebuild" in row.message
        # Marked for a retry: the next pass rolls that version out again (not "stalled").
        assert store.get(retry_key(row.function)) == rollout_id
    store.close()
    assert "closed rollout" in "\n".join(report.lines())


def test_rebuild_of_a_file_that_is_no_database_starts_empty_and_says_so(filled: Filled) -> None:
    corrupt_header(filled.db)
    report = rebuild(filled.db.parent, NOW, retry_key)
    assert not report.schema_readable
    assert report.moved_to.read_bytes()[:16] != b"SQLite format 3\x00"  # moved as it was
    store = SqliteStore(filled.db.parent)
    assert store.rollouts() == [] and store.check(thorough=True).ok
    store.close()
    text = "\n".join(report.lines())
    assert "nothing could be read" in text and "holds and operator controls" in text


def test_rebuild_refuses_while_another_process_has_the_file_open(filled: Filled) -> None:
    corrupt_page(filled.db, "rollouts")
    daemon = SqliteStore(filled.db.parent)
    try:
        with pytest.raises(StoreError, match="in use by another gitopsd process"):
            rebuild(filled.db.parent, NOW, retry_key)
    finally:
        daemon.close()
    assert sorted(p.name for p in filled.db.parent.iterdir() if "damaged" in p.name) == []
    assert not check_file(filled.db).ok  # untouched: still the damaged file


def test_rebuild_without_a_file_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nothing to rebuild"):
        rebuild(tmp_path, NOW, retry_key)
    assert list(tmp_path.iterdir()) == []


def test_rebuild_drops_rows_whose_json_does_not_parse_and_counts_them(filled: Filled) -> None:
    with sqlite3.connect(filled.db) as conn:  # damage that SQLite's own check cannot see
        conn.execute("UPDATE rollouts SET context = '{\"nodes\": [' WHERE rowid = 1")
        conn.execute("UPDATE journal SET outcome = '42' WHERE rowid = 2")
    conn.close()
    corrupt_page(filled.db, "rollouts")
    report = rebuild(filled.db.parent, NOW, retry_key)
    tables = {t.table: t for t in report.tables}
    assert tables["rollouts"].damaged == 1
    assert tables["journal"].damaged == 1
    assert "1 damaged row(s) dropped" in tables["rollouts"].describe()
    store = SqliteStore(filled.db.parent)
    assert all(isinstance(r.context, dict) for r in store.rollouts(limit=10_000))
    store.close()
