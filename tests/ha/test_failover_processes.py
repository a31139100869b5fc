"""Several real processes on one real PostgreSQL, each running `Leadership` with a PT1S
lease and fenced writes (tests/ha/leader_proc.py): a SIGKILLed leader is replaced, a frozen
one (SIGSTOP past its lease, then SIGCONT) touches nothing, three processes share three
shards and a killed one's shard moves. After each: never two writers in one term."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.shards import shard_of
from tests.ha.procs import Proc, start, stop_all, wait_for
from tests.store.contract import rollout
from tests.store.pgserver import PgServer

FUNCTIONS = [f"fn-{i}" for i in range(12)]


@pytest.fixture
def url(pg_server: PgServer) -> str:
    url = pg_server.url(pg_server.create_database(), with_password=True)
    store = PostgresStore(pg_target(url))
    try:
        for fn in FUNCTIONS:
            store.create_rollout(rollout(f"run-{fn}", function=fn, state="IN_PROGRESS"))
    finally:
        store.close()
    return url


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    stop_all(started)


def writes(url: str) -> list[tuple[str, int, int, float]]:
    """(holder, shard, term, started_at) of every journaled write."""
    store = PostgresStore(pg_target(url))
    try:
        out = []
        for fn in FUNCTIONS:
            for row in store.journal(f"run-{fn}"):
                step = row.step
                assert step["shard"] == shard_of(fn, 3) or step["shard"] == shard_of(fn, 1)
                out.append(
                    (str(step["holder"]), int(step["shard"]), int(step["term"]), row.started_at)
                )
        return out
    finally:
        store.close()


def assert_one_writer_per_term(url: str) -> None:
    holders: dict[tuple[int, int], set[str]] = {}
    for holder, shard, term, _at in writes(url):
        holders.setdefault((shard, term), set()).add(holder)
    assert holders, "nothing was written"
    assert {k: v for k, v in holders.items() if len(v) > 1} == {}


def test_a_sigkilled_leader_is_replaced_by_the_standby(url: str, procs: list[Proc]) -> None:
    a = start(url, "a", 1, FUNCTIONS)
    procs.append(a)
    wait_for(lambda: a.led() == [0], "a to lead")
    b = start(url, "b", 1, FUNCTIONS)
    procs.append(b)
    wait_for(lambda: any(e["event"] == "wrote" for e in (a.drain() or a.events)), "a writes")
    assert b.led() == []
    a.signal(signal.SIGKILL)
    took = wait_for(lambda: b.led() == [0], "b to take over")
    wait_for(lambda: any(e["event"] == "wrote" for e in (b.drain() or b.events)), "b writes")
    print(f"failover after SIGKILL: {took:.2f} s (lease PT1S)")
    terms = {(holder, term) for holder, _s, term, _at in writes(url)}
    assert {h for h, _ in terms} == {"a", "b"}
    assert max(t for h, t in terms if h == "a") < min(t for h, t in terms if h == "b")
    assert_one_writer_per_term(url)


def test_a_frozen_leader_resumed_after_its_lease_touches_nothing(
    url: str, procs: list[Proc]
) -> None:
    a = start(url, "a", 1, FUNCTIONS)
    procs.append(a)
    wait_for(lambda: a.led() == [0], "a to lead")
    b = start(url, "b", 1, FUNCTIONS)
    procs.append(b)
    wait_for(lambda: any(e["event"] == "wrote" for e in (a.drain() or a.events)), "a writes")
    a.signal(signal.SIGSTOP)
    wait_for(lambda: b.led() == [0], "b to take over from the frozen a")
    wait_for(lambda: any(e["event"] == "wrote" for e in (b.drain() or b.events)), "b writes")
    resumed_at = time.time()
    a.signal(signal.SIGCONT)
    wait_for(lambda: a.led() == [], "a to notice it no longer leads")
    time.sleep(1.5)  # let a run on a while: it must stay a standby
    assert a.led() == [] and b.led() == [0]
    late = [w for w in writes(url) if w[0] == "a" and w[3] >= resumed_at]
    assert late == []
    assert_one_writer_per_term(url)


def test_three_processes_share_three_shards_and_a_killed_ones_shard_moves(
    url: str, procs: list[Proc]
) -> None:
    for holder in ("a", "b", "c"):
        procs.append(start(url, holder, 3, FUNCTIONS))

    def shares() -> list[list[int]]:
        return [p.led() for p in procs]

    wait_for(
        lambda: (
            sorted(s for led in shares() for s in led) == [0, 1, 2]
            and all(len(led) == 1 for led in shares())
        ),
        "one shard each",
    )
    victim = next(p for p in procs if p.led())
    moved = victim.led()[0]
    victim.signal(signal.SIGKILL)
    survivors = [p for p in procs if p is not victim]
    took = wait_for(
        lambda: sorted(s for p in survivors for s in p.led()) == [0, 1, 2],
        "the survivors to cover every shard",
    )
    print(f"shard {moved} moved {took:.2f} s after SIGKILL")
    assert sorted(len(p.led()) for p in survivors) == [1, 2]
    assert_one_writer_per_term(url)
