"""The contract every store implementation must keep (gitopsd/store/protocol.py).

Subclass `StoreContract` in a `test_*.py` module and give it an `open_store` fixture: a
callable that opens a *new* handle (its own connection) on one and the same state each time it
is called, as the daemon and a CLI command do at once. tests/store/test_sqlite_store.py runs
it on SQLite; the PostgreSQL store runs the same class with its own fixture.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from gitopsd.errors import StoreError
from gitopsd.store.protocol import Store
from gitopsd.store.rows import Controls, RolloutRow

OpenStore = Callable[[], Store]


def rollout(
    rollout_id: str,
    function: str = "fn",
    created_at: float = 100.0,
    state: str = "PENDING",
    version: str = "1.0.0",
) -> RolloutRow:
    return RolloutRow(
        id=rollout_id,
        function=function,
        version=version,
        commit="c0ffee" * 6 + "abcd",
        strategy="canary",
        state=state,
        message="",
        step="",
        context={"nodes": [{"name": "edge-a", "address": "http://127.0.0.1:1"}], "n": 1.5},
        created_at=created_at,
        updated_at=created_at,
        finished_at=None,
        aborting=False,
    )


class StoreContract:
    """One test per promise of the Store protocol."""

    @pytest.fixture
    def store(self, open_store: OpenStore) -> Store:
        return open_store()

    # rollouts -------------------------------------------------------------------------------

    def test_a_rollout_reads_back_exactly_as_created(self, store: Store) -> None:
        row = rollout("fn-1.0.0-a")
        store.create_rollout(row)
        assert store.rollout("fn-1.0.0-a") == row
        assert store.rollout("nope") is None

    def test_a_duplicate_rollout_id_is_a_store_error_and_keeps_the_first(
        self, store: Store
    ) -> None:
        store.create_rollout(rollout("r1", version="1.0.0"))
        with pytest.raises(StoreError):
            store.create_rollout(rollout("r1", version="2.0.0"))
        stored = store.rollout("r1")
        assert stored is not None and stored.version == "1.0.0"

    def test_rollouts_are_newest_first_filtered_and_limited(self, store: Store) -> None:
        for i, fn in enumerate(["a", "b", "a", "b", "a"]):
            store.create_rollout(rollout(f"r{i}", function=fn, created_at=100.0 + i))
        assert [r.id for r in store.rollouts()] == ["r4", "r3", "r2", "r1", "r0"]
        assert [r.id for r in store.rollouts("a")] == ["r4", "r2", "r0"]
        assert [r.id for r in store.rollouts("a", limit=2)] == ["r4", "r2"]
        assert [r.id for r in store.rollouts(limit=1)] == ["r4"]
        assert store.rollouts("unknown") == []

    def test_active_rollouts_are_the_unfinished_ones_oldest_first(self, store: Store) -> None:
        states = ["COMPLETED", "IN_PROGRESS", "ROLLED_BACK", "PAUSED", "FAILED", "DRAFT", "PENDING"]
        for i, state in enumerate(states):
            store.create_rollout(rollout(f"r{i}", created_at=200.0 - i, state=state))
        assert [r.id for r in store.active_rollouts()] == ["r6", "r5", "r3", "r1"]

    def test_update_rollout_sets_fields_and_updated_at(self, store: Store) -> None:
        store.create_rollout(rollout("r1"))
        store.update_rollout(
            "r1", 150.0, state="COMPLETED", message="done", finished_at=149.0, aborting=True
        )
        row = store.rollout("r1")
        assert row is not None
        assert (row.state, row.message, row.finished_at, row.aborting) == (
            "COMPLETED",
            "done",
            149.0,
            True,
        )
        assert row.updated_at == 150.0
        assert row.created_at == 100.0
        store.update_rollout("r1", 151.0, aborting=0, step="s")
        row = store.rollout("r1")
        assert row is not None and row.aborting is False and row.step == "s"
        assert store.active_rollouts() == []

    def test_update_rollout_refuses_unknown_fields_and_writes_nothing(self, store: Store) -> None:
        store.create_rollout(rollout("r1"))
        with pytest.raises(ValueError):
            store.update_rollout("r1", 150.0, state="FAILED", version="9.9.9")
        assert store.rollout("r1") == rollout("r1")

    def test_update_of_an_unknown_rollout_changes_nothing(self, store: Store) -> None:
        store.update_rollout("ghost", 1.0, state="FAILED")
        assert store.rollout("ghost") is None

    # journal --------------------------------------------------------------------------------

    def test_journal_replays_in_seq_order_with_outcomes_and_deadlines(self, store: Store) -> None:
        store.create_rollout(rollout("r1"))
        # Written out of order: replay order is seq, never insertion order.
        store.begin_step("r1", 1, {"kind": "wait", "seconds": 300}, 101.0, deadline=401.0)
        store.begin_step("r1", 0, {"kind": "deploy", "nodes": ["edge-a"]}, 100.0, label="deploy")
        store.finish_step("r1", 0, {"ok": True, "message": "loaded"}, 100.5)
        journal = store.journal("r1")
        assert [j.seq for j in journal] == [0, 1]
        first, second = journal
        assert first.step == {"kind": "deploy", "nodes": ["edge-a"]}
        assert first.outcome == {"ok": True, "message": "loaded"}
        assert (first.started_at, first.finished_at, first.deadline) == (100.0, 100.5, None)
        assert second.outcome is None and second.finished_at is None
        assert (second.started_at, second.deadline) == (101.0, 401.0)
        assert store.journal("other") == []

    def test_begin_step_moves_an_unfinished_rollout_in_progress(self, store: Store) -> None:
        store.create_rollout(rollout("r1", state="PENDING"))
        store.begin_step("r1", 0, {"kind": "deploy"}, 120.0, label="deploy to edge-a")
        row = store.rollout("r1")
        assert row is not None
        assert (row.state, row.step, row.updated_at) == ("IN_PROGRESS", "deploy to edge-a", 120.0)

    def test_begin_step_leaves_a_finished_rollout_final(self, store: Store) -> None:
        store.create_rollout(rollout("r1", state="ROLLED_BACK"))
        store.begin_step("r1", 0, {"kind": "finish"}, 120.0, label="finish")
        row = store.rollout("r1")
        assert row is not None and row.state == "ROLLED_BACK"
        assert [j.seq for j in store.journal("r1")] == [0]

    def test_a_step_is_begun_once_and_a_second_begin_changes_nothing(self, store: Store) -> None:
        store.create_rollout(rollout("r1"))
        store.begin_step("r1", 0, {"kind": "deploy"}, 120.0, label="first")
        with pytest.raises(StoreError):
            store.begin_step("r1", 0, {"kind": "other"}, 130.0, label="second")
        # One transaction: neither the journal row nor the rollout's label changed.
        assert [j.step for j in store.journal("r1")] == [{"kind": "deploy"}]
        row = store.rollout("r1")
        assert row is not None and (row.step, row.updated_at) == ("first", 120.0)

    def test_finishing_a_step_never_begun_changes_nothing(self, store: Store) -> None:
        store.create_rollout(rollout("r1"))
        store.finish_step("r1", 0, {"ok": True}, 120.0)
        assert store.journal("r1") == []
        assert store.rollout("r1") == rollout("r1")

    def test_the_journal_survives_a_new_handle(self, open_store: OpenStore) -> None:
        """What a killed daemon wrote is what the restarted one replays."""
        first = open_store()
        first.create_rollout(rollout("r1"))
        for seq in range(5):
            first.begin_step("r1", seq, {"kind": "wait", "i": seq}, 100.0 + seq, deadline=500.0)
            if seq < 4:
                first.finish_step("r1", seq, {"ok": True, "message": str(seq)}, 100.5 + seq)
        before = first.journal("r1")
        first.close()
        again = open_store()
        assert again.journal("r1") == before
        assert [j.outcome is None for j in again.journal("r1")] == [False] * 4 + [True]

    # controls -------------------------------------------------------------------------------

    def test_controls_default_then_set_partially(self, store: Store) -> None:
        assert store.controls("fn") == Controls()
        assert store.controls_stamp() == 0.0
        store.set_control("fn", 10.0, paused=1)
        store.set_control("fn", 11.0, held=True, held_reason="rolled back by operator")
        store.set_control("fn", 12.0, approved_version="2.0.0", promote=1, abort=0)
        assert store.controls("fn") == Controls(
            paused=True,
            held=True,
            held_reason="rolled back by operator",
            promote=True,
            abort=False,
            approved_version="2.0.0",
        )
        store.set_control("fn", 13.0, paused=0, held=0, held_reason="")
        assert store.controls("fn") == Controls(promote=True, approved_version="2.0.0")
        assert store.controls("other") == Controls()

    def test_controls_stamp_is_the_latest_change_of_any_function(self, store: Store) -> None:
        store.set_control("a", 10.0, paused=1)
        store.set_control("b", 30.0, promote=1)
        store.set_control("a", 20.0, paused=0)
        assert store.controls_stamp() == 30.0

    def test_set_control_refuses_unknown_controls(self, store: Store) -> None:
        with pytest.raises(ValueError):
            store.set_control("fn", 10.0, paused=1, frozen=1)
        assert store.controls("fn") == Controls()
        assert store.controls_stamp() == 0.0

    # modules --------------------------------------------------------------------------------

    def test_module_bytes_round_trip_and_the_first_copy_stays(self, store: Store) -> None:
        wasm = b"\x00asm\x01\x00\x00\x00" + bytes(range(256)) * 64
        store.put_module("ab" * 32, wasm)
        store.put_module("ab" * 32, b"other bytes")
        assert store.module("ab" * 32) == wasm
        assert store.module("cd" * 32) is None

    # retirements ----------------------------------------------------------------------------

    def test_retirements_come_due_in_order_until_cancelled(self, store: Store) -> None:
        store.schedule_retirement("fn", "edge-a", "1.0.0", 300.0)
        store.schedule_retirement("fn", "edge-b", "1.0.0", 100.0)
        store.schedule_retirement("g", "edge-a", "0.9.0", 200.0)
        assert store.due_retirements(50.0) == []
        assert store.due_retirements(200.0) == [("fn", "edge-b", "1.0.0"), ("g", "edge-a", "0.9.0")]
        assert store.due_retirements(200.0) == store.due_retirements(200.0)  # not consumed
        store.schedule_retirement("fn", "edge-b", "1.0.0", 1000.0)  # rescheduled: replaced
        assert store.due_retirements(300.0) == [("g", "edge-a", "0.9.0"), ("fn", "edge-a", "1.0.0")]
        store.cancel_retirement("g", "edge-a", "0.9.0")
        store.cancel_retirement("never", "scheduled", "0")
        assert store.due_retirements(2000.0) == [
            ("fn", "edge-a", "1.0.0"),
            ("fn", "edge-b", "1.0.0"),
        ]

    # key/value ------------------------------------------------------------------------------

    def test_key_values_store_the_last_applied_commit_and_overwrite(self, store: Store) -> None:
        assert store.get("last_applied_commit") is None
        store.put("last_applied_commit", "a" * 40)
        store.put("last_applied_commit", "b" * 40)
        store.put("held-for:fn", "1.0.0 " + "c" * 64)
        store.put("daemon:last_error", "")
        assert store.get("last_applied_commit") == "b" * 40
        assert store.get("held-for:fn") == "1.0.0 " + "c" * 64
        assert store.get("daemon:last_error") == ""

    # health ---------------------------------------------------------------------------------

    def test_a_sound_store_passes_both_checks_and_names_its_location(self, store: Store) -> None:
        store.create_rollout(rollout("r1"))
        for thorough in (False, True):
            report = store.check(thorough=thorough)
            assert report.ok, report.problems
            assert report.summary == "ok"
        assert store.location and store.check().location == store.location

    # two processes at once ------------------------------------------------------------------

    def test_a_change_from_one_handle_is_seen_by_the_other_at_once(
        self, open_store: OpenStore
    ) -> None:
        """`gitopsd pause` (a CLI process) beside the daemon: each call is committed when it
        returns, so the daemon's next read sees it."""
        daemon, cli = open_store(), open_store()
        daemon.create_rollout(rollout("r1"))
        assert cli.rollout("r1") is not None
        cli.set_control("fn", 42.0, paused=1)
        assert daemon.controls_stamp() == 42.0
        assert daemon.controls("fn").paused
        cli.update_rollout("r1", 43.0, state="PAUSED", message="paused by operator")
        row = daemon.rollout("r1")
        assert row is not None and row.state == "PAUSED"

    def test_two_handles_writing_at_once_lose_nothing(self, open_store: OpenStore) -> None:
        """The daemon journaling steps while an operator's command writes controls and keys:
        both finish every write, none is lost or refused as busy."""
        daemon, cli = open_store(), open_store()
        daemon.create_rollout(rollout("r1"))
        n = 200
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def journal_steps() -> None:
            try:
                start.wait()
                for seq in range(n):
                    daemon.begin_step("r1", seq, {"kind": "deploy", "seq": seq}, float(seq))
                    daemon.finish_step("r1", seq, {"ok": True, "message": ""}, float(seq))
            except BaseException as exc:  # reported below, with the other thread's
                errors.append(exc)

        def operator_commands() -> None:
            try:
                start.wait()
                for i in range(n):
                    cli.set_control(f"f{i % 7}", float(i), paused=i % 2)
                    cli.put(f"key{i}", str(i))
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=journal_steps),
            threading.Thread(target=operator_commands),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        reader = open_store()
        assert [j.seq for j in reader.journal("r1")] == list(range(n))
        assert all(j.outcome is not None for j in reader.journal("r1"))
        assert [reader.get(f"key{i}") for i in range(n)] == [str(i) for i in range(n)]
        assert reader.controls_stamp() == float(n - 1)
