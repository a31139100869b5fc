"""Triggers reach the leader through the database: LISTEN/NOTIFY on one channel.

A standby that receives a webhook or sees a watch event calls `send_wake`; every process
listens (`WakeListener`) and a leader starts a pass on each notification. PostgreSQL delivers
notifications at commit, so the leader hears within a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg

from gitopsd.errors import StoreError
from gitopsd.log import get_logger
from gitopsd.store.pg_url import PgTarget
from gitopsd.store.postgres import driver_reason

CHANNEL = "gitopsd_wake"
MAX_PAYLOAD = 200  # well under PostgreSQL's 8000 bytes; a reason, not data


def send_wake(target: PgTarget, reason: str) -> None:
    """Wake every listener (the leaders) with `reason` (blocking: call from a thread)."""
    try:
        with psycopg.connect(target.conninfo, autocommit=True, **target.connect_kwargs()) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, reason[:MAX_PAYLOAD]))
    except psycopg.Error as exc:
        raise StoreError(f"state database {target.display}: wake: {driver_reason(exc)}") from exc


class WakeListener:
    """LISTENs on the wake channel and calls `on_wake(reason)` for each notification; a lost
    connection is opened again with capped backoff."""

    def __init__(self, target: PgTarget, on_wake: Callable[[str], None]) -> None:
        self.target = target
        self.on_wake = on_wake
        self.listening = asyncio.Event()
        self.log = get_logger(component="ha")

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            try:
                await self._listen(stop)
                delay = 0.2
            except psycopg.Error as exc:
                self.listening.clear()
                self.log.warning("wake listener lost the database", error=driver_reason(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)

    async def _listen(self, stop: asyncio.Event) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.target.conninfo, autocommit=True, **self.target.connect_kwargs()
        )
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            stopping = asyncio.create_task(stop.wait())
            try:
                gen = conn.notifies()
                while not stop.is_set():
                    nxt = asyncio.ensure_future(anext(gen))
                    done, _ = await asyncio.wait(
                        {nxt, stopping}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if nxt not in done:
                        nxt.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await nxt
                        return
                    self.on_wake(nxt.result().payload)
            finally:
                stopping.cancel()
