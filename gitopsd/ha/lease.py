"""Shard leases in PostgreSQL, acquired, renewed and released in SQL on the database's clock.

A lease row (shard, holder, host, since, term, expires) changes hands only when it has
expired (`expires <= now()`), and every change of hands, including a lapsed lease taken again
by its old holder, increments `term`. Renewal succeeds only for the holder of the current term
before expiry. The term is what fences writes (store/migrations/pg/0002_leases.sql).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psycopg
import psycopg.errors
from psycopg.rows import DictRow

from gitopsd.errors import ConfigError, StoreError
from gitopsd.store.pg_url import PgTarget
from gitopsd.store.postgres import connect, driver_reason


class LeaseBusy(StoreError):
    """A lease row stayed locked past lock_timeout (another process's open transaction):
    nothing changed; try again next round."""


@dataclass(frozen=True)
class Lease:
    """A lease as the database holds it; times are the database's, seconds since the epoch."""

    shard: int
    holder: str
    host: str
    since: float
    term: int
    expires: float
    live: bool = True


class PgLeases:
    """Lease operations for one process (`holder`), on a connection of their own so a renewal
    never waits behind the store's writes."""

    def __init__(self, target: PgTarget, holder: str, host: str, lease: float) -> None:
        self.target = target
        self.holder = holder
        self.host = host
        self.lease = lease
        self._lock = threading.Lock()
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[DictRow]:
        conn = connect(self.target)
        # A lease row locked by a transaction of a frozen leader (released by the server
        # after IDLE_IN_TRANSACTION_MS) must not stall this process's rounds: give up on
        # that row for this round instead (LeaseBusy).
        timeout_ms = max(50, int(self.lease * 1000 / 10))
        try:
            conn.execute(f"SET lock_timeout = {timeout_ms}")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"state database {self.target.display}: leases: {driver_reason(exc)}"
            ) from exc
        return conn

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, args: tuple[object, ...]) -> list[DictRow]:
        with self._lock:
            try:
                if self._conn.closed or self._conn.broken:
                    self._conn = self._connect()
                cur = self._conn.execute(sql, args)
                return cur.fetchall() if cur.description else []
            except psycopg.errors.LockNotAvailable as exc:
                raise LeaseBusy(f"state database {self.target.display}: lease row busy") from exc
            except psycopg.Error as exc:
                raise StoreError(
                    f"state database {self.target.display}: leases: {driver_reason(exc)}"
                ) from exc

    def acquire(self, shard: int) -> Lease | None:
        """Take the lease of `shard` if nobody holds it (or it expired): a new term."""
        rows = self._rows(
            "INSERT INTO leases AS l (shard, holder, host, since, term, expires)"
            " VALUES (%s, %s, %s, now(), 1, now() + make_interval(secs => %s))"
            " ON CONFLICT (shard) DO UPDATE SET holder = excluded.holder,"
            " host = excluded.host, since = now(), term = l.term + 1, expires = excluded.expires"
            " WHERE l.expires <= now()"
            " RETURNING shard, holder, host, extract(epoch FROM since)::float8 AS since, term,"
            " extract(epoch FROM expires)::float8 AS expires",
            (shard, self.holder, self.host, self.lease),
        )
        return _lease(rows[0]) if rows else None

    def renew(self, lease: Lease) -> Lease | None:
        """Extend `lease` if it is still ours and unexpired; None: it is gone."""
        rows = self._rows(
            "UPDATE leases SET expires = now() + make_interval(secs => %s)"
            " WHERE shard = %s AND holder = %s AND term = %s AND expires > now()"
            " RETURNING shard, holder, host, extract(epoch FROM since)::float8 AS since, term,"
            " extract(epoch FROM expires)::float8 AS expires",
            (self.lease, lease.shard, self.holder, lease.term),
        )
        return _lease(rows[0]) if rows else None

    def release(self, lease: Lease) -> None:
        """Give `lease` up now (a clean stop): a standby takes it at its next try."""
        self._rows(
            "UPDATE leases SET expires = now() WHERE shard = %s AND holder = %s AND term = %s",
            (lease.shard, self.holder, lease.term),
        )

    def heartbeat(self) -> int:
        """Say this process is alive (for as long as a lease); the number of live members."""
        rows = self._rows(
            "WITH me AS (INSERT INTO members (holder, host, started, expires)"
            " VALUES (%s, %s, now(), now() + make_interval(secs => %s))"
            " ON CONFLICT (holder) DO UPDATE SET expires = excluded.expires RETURNING holder)"
            " SELECT 1 + count(*) AS n FROM members"
            " WHERE expires > now() AND holder <> (SELECT holder FROM me)",
            (self.holder, self.host, self.lease),
        )
        return int(rows[0]["n"])

    def agree_shards(self, shards: int) -> None:
        """Join the members, or ConfigError when `shards` is not the number of shards the
        controllers running on this database use: two counts would split the functions two
        ways, and a function could be led twice (shard 0 of 1 is every function). The count
        is kept in the database (kv `ha:shards`, absent for 1) and set only by a controller
        that finds no other live member (all stopped: the way to change it). One transaction
        under an advisory lock, so controllers starting together agree one after the other."""
        with self._lock:
            try:
                if self._conn.closed or self._conn.broken:
                    self._conn = self._connect()
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SHARDS_LOCK,))
                    row = self._conn.execute(
                        "SELECT (SELECT value FROM kv WHERE key = %s) AS stored,"
                        " (SELECT count(*) FROM members"
                        "  WHERE expires > now() AND holder <> %s) AS others",
                        (SHARDS_KEY, self.holder),
                    ).fetchone()
                    assert row is not None
                    stored = _stored_shards(row["stored"])
                    if stored != shards and int(row["others"]) > 0:
                        raise ConfigError(
                            f"[ha] shards = {shards} here, but the controllers running on the "
                            f"state database {self.target.display} use {stored}: every "
                            "controller needs the same number; to change it, stop them all "
                            "(a killed one counts for a lease), then start them with the new one"
                        )
                    if stored != shards and shards == 1:
                        self._conn.execute("DELETE FROM kv WHERE key = %s", (SHARDS_KEY,))
                    elif stored != shards:
                        self._conn.execute(
                            "INSERT INTO kv (key, value) VALUES (%s, %s)"
                            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            (SHARDS_KEY, str(shards)),
                        )
                    self._conn.execute(
                        "INSERT INTO members (holder, host, started, expires)"
                        " VALUES (%s, %s, now(), now() + make_interval(secs => %s))"
                        " ON CONFLICT (holder) DO UPDATE SET expires = excluded.expires",
                        (self.holder, self.host, self.lease),
                    )
            except psycopg.Error as exc:
                raise StoreError(
                    f"state database {self.target.display}: leases: {driver_reason(exc)}"
                ) from exc

    def leave(self) -> None:
        """This process stops (cleanly): no longer counted as a member."""
        self._rows("DELETE FROM members WHERE holder = %s", (self.holder,))

    def all(self) -> list[Lease]:
        """Every shard's lease, live or expired, by shard."""
        rows = self._rows(
            "SELECT shard, holder, host, extract(epoch FROM since)::float8 AS since, term,"
            " extract(epoch FROM expires)::float8 AS expires, expires > now() AS live"
            " FROM leases ORDER BY shard",
            (),
        )
        return [_lease(r) for r in rows]


SHARDS_KEY = "ha:shards"
SHARDS_LOCK = 0x67697473  # the advisory lock under which controllers agree on the count


def _stored_shards(value: object) -> int:
    """The shard count kept in the database (absent: 1); a value that is no count is named."""
    if value is None:
        return 1
    try:
        count = int(str(value))
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"kv {SHARDS_KEY} in the state database is not a shard count: {value!r}")
    return count


def _lease(r: DictRow) -> Lease:
    return Lease(
        shard=int(r["shard"]),
        holder=str(r["holder"]),
        host=str(r["host"]),
        since=float(r["since"]),
        term=int(r["term"]),
        expires=float(r["expires"]),
        live=bool(r.get("live", True)),
    )
