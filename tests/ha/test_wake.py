"""A trigger received by a standby wakes the leader through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio

from gitopsd.ha.wake import WakeListener, send_wake
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from tests.store.pgserver import PgServer


def test_a_wake_sent_from_another_connection_reaches_the_listener(pg_server: PgServer) -> None:
    target = pg_target(pg_server.url(pg_server.create_database(), with_password=True))
    PostgresStore(target).close()

    async def scenario() -> list[str]:
        heard: list[str] = []
        got = asyncio.Event()

        def on_wake(reason: str) -> None:
            heard.append(reason)
            if len(heard) == 2:
                got.set()

        stop = asyncio.Event()
        listener = WakeListener(target, on_wake)
        task = asyncio.create_task(listener.run(stop))
        await asyncio.wait_for(listener.listening.wait(), 30)
        await asyncio.to_thread(send_wake, target, "webhook")
        await asyncio.to_thread(send_wake, target, "watch " + "x" * 500)
        await asyncio.wait_for(got.wait(), 30)
        stop.set()
        await asyncio.wait_for(task, 30)
        return heard

    heard = asyncio.run(scenario())
    assert heard[0] == "webhook"
    assert heard[1].startswith("watch x") and len(heard[1]) == 200  # capped payload
