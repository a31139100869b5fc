"""Which shards this process leads, kept up to date against the database.

Every `renew_interval` (a fifth of the lease) one round runs: heartbeat as a member, renew the
leases held, give up one lease when holding more than a fair share (ceil(shards / live
members)), and take free or expired leases up to that share. A lease counts as led only while
its `LeaseTimer` says so: from the send time of the last successful renewal, for the lease
minus a margin, on the local monotonic clock. A round that cannot reach the database changes
nothing, so leadership simply runs out on the timer: a leader cut off from the database stops
acting before any standby can take over.

Database calls are blocking (psycopg) and run in a worker thread: the event loop never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from gitopsd.errors import StoreError
from gitopsd.ha.lease import Lease, LeaseBusy, PgLeases
from gitopsd.ha.timer import LeaseTimer
from gitopsd.log import get_logger
from gitopsd.store.postgres import Fence
from gitopsd.store.shards import shard_of

Monotonic = Callable[[], float]


@dataclass(frozen=True)
class ShardLeader:
    """Who leads one shard, as `gitopsd status` shows it (times: the database's clock)."""

    shard: int
    holder: str
    host: str
    since: float
    term: int
    live: bool


class Leadership:
    """The shard leases of one process (`leases.holder`)."""

    def __init__(
        self,
        leases: PgLeases,
        shards: int,
        monotonic: Monotonic,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.leases = leases
        self.shards = shards
        self.monotonic = monotonic
        self.on_change = on_change
        self.held: dict[int, Lease] = {}
        self.timers: dict[int, LeaseTimer] = {}
        self.log = get_logger(component="ha", holder=leases.holder)
        self._led: frozenset[int] = frozenset()

    @property
    def holder(self) -> str:
        return self.leases.holder

    @property
    def renew_interval(self) -> float:
        return LeaseTimer(self.leases.lease).renew_interval

    # what the daemon asks ------------------------------------------------------------------

    def led_shards(self) -> frozenset[int]:
        """The shards this process may act for right now."""
        now = self.monotonic()
        return frozenset(s for s, t in self.timers.items() if s in self.held and t.acting(now))

    def leads(self, function: str) -> bool:
        """May this process act for `function` right now?"""
        return shard_of(function, self.shards) in self.led_shards()

    def acting_until(self) -> float | None:
        """The earliest monotonic time at which a led shard runs out without renewal."""
        ends = [t.acting_until() for s, t in self.timers.items() if s in self.led_shards()]
        return min((e for e in ends if e is not None), default=None)

    def fence(self) -> Fence:
        """The fence for the store's writes: the terms of the shards led now. Leading none,
        the fence claims nothing and the database refuses every write made under it."""
        led = self.led_shards()
        return Fence(self.holder, self.shards, {s: self.held[s].term for s in sorted(led)})

    # rounds --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set; then the leases are released for a fast handover."""
        try:
            while not stop.is_set():
                await self.round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._next_round_in())
        finally:
            await asyncio.to_thread(self._release_all)
            self._changed()

    def _next_round_in(self) -> float:
        """The renew interval, or sooner when a led lease would otherwise run out first."""
        delay = self.renew_interval
        until = self.acting_until()
        if until is not None:
            delay = max(0.0, min(delay, until - self.monotonic() - self.renew_interval / 2))
        return delay

    async def round(self) -> None:
        """One round of heartbeat, renewals, fair share and acquisitions."""
        try:
            await asyncio.to_thread(self._round)
        except StoreError as exc:
            # Nothing renewed: the timers run out on their own before the leases do.
            self.log.warning(
                "lease round failed; leadership runs out unless renewed", error=str(exc)
            )
        self._changed()

    def _round(self) -> None:
        members = self.leases.heartbeat()
        for shard, lease in sorted(self.held.items()):
            sent = self.monotonic()
            try:
                renewed = self.leases.renew(lease)
            except LeaseBusy:
                continue  # not renewed this round: the timer runs on, the lease is kept
            if renewed is None:
                self.log.warning("lease lost", shard=shard, term=lease.term)
                del self.held[shard]
                self.timers.pop(shard, None)
            else:
                self.held[shard] = renewed
                self.timers[shard].renewed(sent)
        share = math.ceil(self.shards / max(1, members))
        if len(self.held) > share:
            shard = max(self.held)
            lease = self.held.pop(shard)
            self.timers.pop(shard, None)
            self.leases.release(lease)
            self.log.info("lease handed over for a fair share", shard=shard, share=share)
        for shard in range(self.shards):
            if len(self.held) >= share:
                break
            if shard in self.held:
                continue
            sent = self.monotonic()
            try:
                taken = self.leases.acquire(shard)
            except LeaseBusy:
                continue  # the deposed holder's transaction still holds the row
            if taken is not None:
                timer = LeaseTimer(self.leases.lease)
                timer.renewed(sent)
                self.held[shard] = taken
                self.timers[shard] = timer
                self.log.info("lease taken", shard=shard, term=taken.term)

    def _release_all(self) -> None:
        for lease in list(self.held.values()):
            with contextlib.suppress(StoreError):
                self.leases.release(lease)
        self.held.clear()
        self.timers.clear()
        with contextlib.suppress(StoreError):
            self.leases.leave()

    def _changed(self) -> None:
        led = self.led_shards()
        if led != self._led:
            self._led = led
            self.log.info("leading shards", shards=sorted(led))
        self.on_change()


def shard_leaders(leases: PgLeases) -> list[ShardLeader]:
    """Every shard's lease as the database has it (for `gitopsd status`)."""
    return [
        ShardLeader(lease.shard, lease.holder, lease.host, lease.since, lease.term, lease.live)
        for lease in leases.all()
    ]
