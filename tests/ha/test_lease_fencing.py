"""Leases with terms in a real PostgreSQL, and writes fenced by the database.

The passage of time is simulated by moving a lease's expiry into the past in SQL (what the
database's clock would show after the lease): no sleeping, no timing thresholds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gitopsd.errors import StoreError
from gitopsd.ha.lease import PgLeases
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import Fence, Fenced, PostgresStore
from gitopsd.store.rows import Controls
from gitopsd.store.shards import shard_of
from tests.store.contract import rollout
from tests.store.pgserver import PgServer


@dataclass
class Db:
    server: PgServer
    name: str
    url: str

    def expire(self, shard: int) -> None:
        """The database's clock passes the lease of `shard`."""
        self.server.sql(
            self.name,
            f"UPDATE leases SET expires = now() - interval '1 second' WHERE shard = {shard}",
        )


@pytest.fixture
def db(pg_server: PgServer) -> Db:
    name = pg_server.create_database()
    return Db(pg_server, name, pg_server.url(name, with_password=True))


@pytest.fixture
def opened(db: Db) -> Iterator[list[PostgresStore | PgLeases]]:
    handles: list[PostgresStore | PgLeases] = []
    yield handles
    for handle in handles:
        handle.close()


def open_pair(
    db: Db, opened: list[PostgresStore | PgLeases], holder: str
) -> tuple[PostgresStore, PgLeases]:
    store = PostgresStore(pg_target(db.url))
    leases = PgLeases(pg_target(db.url), holder, f"host-{holder}", lease=5.0)
    opened += [store, leases]
    return store, leases


def test_a_lease_changes_hands_only_when_expired_and_each_change_is_a_new_term(
    db: Db, opened: list[PostgresStore | PgLeases]
) -> None:
    _, a = open_pair(db, opened, "a")
    _, b = open_pair(db, opened, "b")
    first = a.acquire(0)
    assert first is not None and (first.holder, first.host, first.term) == ("a", "host-a", 1)
    assert first.expires > first.since
    assert b.acquire(0) is None  # live: not b's to take
    assert a.acquire(0) is None  # nor a's again: it renews instead
    renewed = a.renew(first)
    assert renewed is not None and renewed.term == 1 and renewed.expires >= first.expires
    assert b.renew(first) is None  # only the holder renews
    db.expire(0)
    assert a.renew(first) is None  # lapsed: a's term is over even though nobody took it
    taken = b.acquire(0)
    assert taken is not None and (taken.holder, taken.term) == ("b", 2)
    b.release(taken)
    again = a.acquire(0)  # released: free at once, with a new term
    assert again is not None and (again.holder, again.term) == ("a", 3)
    assert [(lease.shard, lease.holder, lease.term, lease.live) for lease in b.all()] == [
        (0, "a", 3, True)
    ]


def test_a_deposed_leaders_writes_are_rejected_by_the_database(
    db: Db, opened: list[PostgresStore | PgLeases]
) -> None:
    old_store, old = open_pair(db, opened, "old")
    new_store, new = open_pair(db, opened, "new")
    lease = old.acquire(0)
    assert lease is not None
    old_store.set_fence(Fence("old", 1, {0: lease.term}))
    old_store.create_rollout(rollout("r1"))
    old_store.begin_step("r1", 0, {"kind": "deploy"}, 100.0, label="deploy")

    # The old leader freezes past its lease; the standby takes over with a new term.
    db.expire(0)
    taken = new.acquire(0)
    assert taken is not None and taken.term == lease.term + 1
    new_store.set_fence(Fence("new", 1, {0: taken.term}))

    # Everything the old leader still tries is refused, whole.
    attempts = [
        lambda: old_store.finish_step("r1", 0, {"ok": True}, 101.0),
        lambda: old_store.begin_step("r1", 1, {"kind": "wait"}, 101.0, label="wait"),
        lambda: old_store.update_rollout("r1", 101.0, state="COMPLETED"),
        lambda: old_store.create_rollout(rollout("r2")),
        lambda: old_store.schedule_retirement("fn", "edge-a", "0.9.0", 200.0),
        lambda: old_store.set_control("fn", 101.0, promote=0),
        lambda: old_store.put("last_applied_commit", "f" * 40),
        lambda: old_store.put_module("ab" * 32, b"\0asm"),
    ]
    for attempt in attempts:
        with pytest.raises(Fenced, match="deposed"):
            attempt()
    assert issubclass(Fenced, StoreError)
    journal = new_store.journal("r1")
    assert [(j.seq, j.outcome) for j in journal] == [(0, None)]
    row = new_store.rollout("r1")
    assert row is not None and row.state == "IN_PROGRESS"
    assert new_store.rollout("r2") is None
    assert new_store.get("last_applied_commit") is None
    assert new_store.due_retirements(1e9) == []
    assert new_store.module("ab" * 32) is None

    # The new leader resumes from the journal; an operator's command (unfenced) still works.
    new_store.finish_step("r1", 0, {"ok": True}, 102.0)
    new_store.update_rollout("r1", 103.0, state="COMPLETED")
    operator = PostgresStore(pg_target(db.url))
    opened.append(operator)
    operator.set_control("fn", 104.0, paused=1)
    assert new_store.controls("fn") == Controls(paused=True)
    row = operator.rollout("r1")
    assert row is not None and row.state == "COMPLETED"


def test_a_leader_writes_only_for_the_shards_it_leads(
    db: Db, opened: list[PostgresStore | PgLeases]
) -> None:
    store, leases = open_pair(db, opened, "a")
    shards = 3
    leases.agree_shards(shards)
    mine = leases.acquire(1)
    assert mine is not None
    store.set_fence(Fence("a", shards, {1: mine.term}))
    inside = next(f"fn-{i}" for i in range(100) if shard_of(f"fn-{i}", shards) == 1)
    outside = next(f"fn-{i}" for i in range(100) if shard_of(f"fn-{i}", shards) == 2)
    store.create_rollout(rollout("in", function=inside))
    store.set_control(inside, 1.0, promote=0)
    store.put("last_applied_commit", "a" * 40)  # no function: every claimed term is current
    with pytest.raises(Fenced, match="does not lead shard 2"):
        store.create_rollout(rollout("out", function=outside))
    with pytest.raises(Fenced, match="does not lead shard 2"):
        store.set_control(outside, 1.0, promote=0)
    # Leading nothing (a standby, or a leader whose leases ran out): nothing at all.
    store.set_fence(Fence("a", shards, {}))
    with pytest.raises(Fenced, match="does not lead shard 1"):
        store.set_control(inside, 2.0, promote=1)
    with pytest.raises(Fenced, match="a leads no shard"):
        store.put("last_applied_commit", "b" * 40)
    store.set_fence(None)
    assert store.get("last_applied_commit") == "a" * 40
    assert store.rollout("out") is None
    assert store.rollout("in") is not None
    # The controllers were all restarted with another count while this one was frozen: its
    # terms still name leases, but it splits the functions another way, so nothing it
    # writes is accepted (else a function could have two leaders).
    store.put("ha:shards", "1")
    store.set_fence(Fence("a", shards, {1: mine.term}))
    with pytest.raises(Fenced, match="uses 3 shards, the controllers on this database 1"):
        store.set_control(inside, 3.0, promote=1)
    with pytest.raises(Fenced, match="uses 3 shards"):
        store.put("last_applied_commit", "c" * 40)
    store.set_fence(None)
    assert store.controls(inside).promote == 0


def test_a_leader_frozen_inside_a_write_does_not_block_the_takeover(
    db: Db, opened: list[PostgresStore | PgLeases]
) -> None:
    """Frozen between its fenced write and its COMMIT, a leader holds the lease row locked;
    the server ends that idle transaction (idle_in_transaction_session_timeout), the standby
    takes the lease, and the frozen write is never applied."""
    old_store, old = open_pair(db, opened, "old")
    _, new = open_pair(db, opened, "new")
    lease = old.acquire(0)
    assert lease is not None
    old_store.set_fence(Fence("old", 1, {0: lease.term}))
    old_store.create_rollout(rollout("r1"))
    frozen = old_store.bulk()
    conn = frozen.__enter__()  # the transaction stays open: the process "froze" here
    conn.execute(
        "SELECT set_config('gitopsd.fence', %s, true)",
        (Fence("old", 1, {0: lease.term}).setting(),),
    )
    conn.execute(
        "INSERT INTO journal (rollout_id, seq, step, started_at) VALUES ('r1', 0, '{}', 1.0)"
    )
    db.expire(0)  # waits for the lock until the server ends the frozen transaction
    taken = new.acquire(0)
    assert taken is not None and taken.term == lease.term + 1
    with pytest.raises(StoreError):
        frozen.__exit__(None, None, None)  # the thawed COMMIT: the session is gone
    reader = PostgresStore(pg_target(db.url))
    opened.append(reader)
    assert reader.journal("r1") == []
