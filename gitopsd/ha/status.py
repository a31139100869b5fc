"""Who leads, as `gitopsd status` shows it (text, and `"leader"` / `"shards"` in JSON).

Read from the leases table of the shared PostgreSQL with the store's own connection; the
times are the database's. A lease whose time has run out is shown as no leader: a standby
takes it at its next round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gitopsd.store.postgres import PostgresStore


@dataclass(frozen=True)
class ShardLease:
    shard: int
    holder: str
    host: str
    since: float
    term: int
    live: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "holder": self.holder,
            "host": self.host,
            "since": _iso(self.since),
            "term": self.term,
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_leases(store: PostgresStore) -> list[ShardLease]:
    """Every shard's lease, by shard."""
    with store.bulk() as conn:
        rows = conn.execute(
            "SELECT shard, holder, host, extract(epoch FROM since)::float8 AS since, term,"
            " expires > now() AS live FROM leases ORDER BY shard"
        ).fetchall()
    return [
        ShardLease(
            int(r["shard"]),
            str(r["holder"]),
            str(r["host"]),
            float(r["since"]),
            int(r["term"]),
            bool(r["live"]),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class LeadershipView:
    """The leases of `shards` shards as the status command reports them."""

    shards: int
    leases: dict[int, ShardLease]

    def leader(self) -> ShardLease | None:
        """The live leader of shard 0 (the only shard unless `[ha] shards` > 1)."""
        lease = self.leases.get(0)
        return lease if lease is not None and lease.live else None

    def json_fields(self) -> dict[str, Any]:
        """`"leader"` (an object, or null when no controller leads), and `"shards"` (each
        shard's live leader or null) when sharded."""
        leader = self.leader()
        out: dict[str, Any] = {"leader": leader.to_json() if leader else None}
        if self.shards > 1:
            out["shards"] = [
                lease.to_json() if (lease := self.leases.get(s)) and lease.live else None
                for s in range(self.shards)
            ]
        return out

    def lines(self) -> list[str]:
        def one(lease: ShardLease | None) -> str:
            if lease is None or not lease.live:
                return "none (no controller holds the lease; a standby takes it within a lease)"
            return f"{lease.holder} on {lease.host} since {_iso(lease.since)} (term {lease.term})"

        if self.shards == 1:
            return [f"leader: {one(self.leases.get(0))}"]
        return [f"shard {s} leader: {one(self.leases.get(s))}" for s in range(self.shards)]


def leadership_view(store: PostgresStore, shards: int) -> LeadershipView:
    return LeadershipView(shards, {lease.shard: lease for lease in read_leases(store)})


def leadership_for(store: object, shards: int) -> LeadershipView | None:
    """The view for `gitopsd status` on a PostgreSQL store; None on SQLite (one controller,
    no leases: the status says nothing of leadership)."""
    if isinstance(store, PostgresStore):
        return leadership_view(store, shards)
    return None
