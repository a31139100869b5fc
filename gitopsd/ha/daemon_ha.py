"""What `gitopsd run` needs from high availability, in one object.

`SoloControl` (the SQLite file, or one controller): this process leads everything, always.
`SharedControl` (a PostgreSQL [state] url): shard leases (`Leadership`), the store fenced
with the terms led, LISTEN for wakes from standbys, and NOTIFY when a standby receives a
trigger. The daemon asks `leads(function)` / `leads_any()` before acting and calls
`forward(reason)` with every trigger; it never looks at leases itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Callable
from typing import Protocol

from gitopsd.errors import StoreError
from gitopsd.ha.leadership import Leadership, Monotonic
from gitopsd.ha.lease import PgLeases
from gitopsd.ha.wake import WakeListener, send_wake
from gitopsd.log import get_logger
from gitopsd.store.postgres import PostgresStore


class Control(Protocol):
    """Who may act: the daemon's one leader check."""

    shared: bool

    def leads(self, function: str) -> bool: ...

    def leads_any(self) -> bool: ...

    def led_shards(self) -> frozenset[int]: ...

    async def start(self, stack: contextlib.AsyncExitStack) -> None: ...

    def forward(self, reason: str) -> None: ...


class SoloControl:
    """One controller on its own state: it leads everything."""

    shared = False

    def leads(self, function: str) -> bool:
        return True

    def leads_any(self) -> bool:
        return True

    def led_shards(self) -> frozenset[int]:
        return frozenset({0})

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        return None

    def forward(self, reason: str) -> None:
        return None


def holder_id() -> tuple[str, str]:
    """(holder, host): unique per process, readable in `gitopsd status`."""
    host = socket.gethostname()
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}", host


class SharedControl:
    """Controllers sharing one PostgreSQL: leases, fencing, wakes."""

    shared = True

    def __init__(
        self,
        store: PostgresStore,
        lease: float,
        shards: int,
        monotonic: Monotonic,
        on_wake: Callable[[str], None],
        on_change: Callable[[], None],
    ) -> None:
        self.store = store
        self.holder, self.host = holder_id()
        self.leases = PgLeases(store.target, self.holder, self.host, lease)
        self.leadership = Leadership(self.leases, shards, monotonic, on_change=self._changed)
        self.listener = WakeListener(store.target, on_wake)
        self.on_change = on_change
        self.log = get_logger(component="ha", holder=self.holder)
        self._sending: set[asyncio.Task[None]] = set()
        # Until it leads, this process's store writes nothing (the fence claims no term).
        self.store.set_fence(self.leadership.fence())

    def leads(self, function: str) -> bool:
        return self.leadership.leads(function)

    def leads_any(self) -> bool:
        return bool(self.leadership.led_shards())

    def led_shards(self) -> frozenset[int]:
        return self.leadership.led_shards()

    def _changed(self) -> None:
        self.store.set_fence(self.leadership.fence())
        self.on_change()

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Take part in leases and listen for wakes until `stack` unwinds, then release the
        leases: after the daemon's drain, so a stopping leader keeps its lease while its
        current step finishes, and a standby takes over at once after. A `[ha] shards` that
        differs from the running controllers' stops the start here (ConfigError, exit 2)."""
        await asyncio.to_thread(self.leases.agree_shards, self.leadership.shards)
        await self.leadership.round()  # a lone controller leads from its first pass
        done = asyncio.Event()
        tasks = [
            asyncio.create_task(self.leadership.run(done)),
            asyncio.create_task(self.listener.run(done)),
        ]

        async def finish() -> None:
            done.set()
            await asyncio.wait(tasks, timeout=10)
            self.leases.close()

        stack.push_async_callback(finish)

    def forward(self, reason: str) -> None:
        """A trigger received here: the leader must hear it (it may be another process)."""
        if self.leads_any() and self.leadership.shards == 1:
            return  # this process is the one to act

        async def send() -> None:
            try:
                await asyncio.to_thread(send_wake, self.store.target, reason)
            except StoreError as exc:
                self.log.warning("could not wake the leader", reason=reason, error=str(exc))

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not running yet (start-up): the first pass comes anyway
            return
        task = loop.create_task(send())
        self._sending.add(task)  # a reference until done: the loop keeps only weak ones
        task.add_done_callback(self._sending.discard)


def control_for(
    store: object,
    lease: float,
    shards: int,
    monotonic: Monotonic,
    on_wake: Callable[[str], None],
    on_change: Callable[[], None],
) -> Control:
    """SharedControl on a PostgreSQL store, SoloControl on anything else (SQLite)."""
    if isinstance(store, PostgresStore):
        return SharedControl(store, lease, shards, monotonic, on_wake, on_change)
    return SoloControl()
