"""The daemon's listeners against clients that connect and never finish a request: a head
deadline and a connection cap keep them answering (a real aiohttp app on loopback)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from gitopsd.http_guard import ListenerGuard, start_guarded


def hello_app() -> web.Application:
    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def stalled_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except (ConnectionError, TimeoutError):
        return False


async def test_a_request_head_that_never_ends_is_closed_at_the_deadline() -> None:
    guard = ListenerGuard(head_timeout=0.2, max_connections=64)
    listener = await start_guarded(hello_app(), "127.0.0.1", 0, guard)
    port = listener.addresses[0][1]
    try:
        reader, writer = await stalled_client(port)
        assert await closed_by_server(reader)
        writer.close()
        assert guard.counters.head_timeouts == 1
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as r,
        ):
            assert (r.status, await r.text()) == (200, "hello")
    finally:
        await listener.cleanup()


async def test_stalled_clients_beyond_the_cap_leave_room_for_a_real_request() -> None:
    guard = ListenerGuard(head_timeout=60.0, max_connections=8)
    listener = await start_guarded(hello_app(), "127.0.0.1", 0, guard)
    port = listener.addresses[0][1]
    clients = [await stalled_client(port) for _ in range(30)]
    try:
        await asyncio.sleep(0.05)
        assert guard.connections <= 8
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as r,
        ):
            assert (r.status, await r.text()) == (200, "hello")
        assert guard.counters.evicted >= 22
    finally:
        for _reader, writer in clients:
            writer.close()
        await listener.cleanup()


async def test_a_long_request_is_not_cut_by_the_head_deadline() -> None:
    """The deadline is for starting a request; a handler that takes its time (an event
    stream, a slow scrape) keeps its connection."""

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="slow")

    app = web.Application()
    app.router.add_get("/slow", slow)
    listener = await start_guarded(app, "127.0.0.1", 0, ListenerGuard(head_timeout=0.1))
    port = listener.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/slow") as r:
            assert (r.status, await r.text()) == (200, "slow")
    finally:
        await listener.cleanup()


async def test_when_every_connection_is_in_a_request_the_oldest_makes_room() -> None:
    """Bodies trickling in keep their requests open; the next real request still gets in."""

    async def read_body(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    app = web.Application()
    app.router.add_post("/", read_body)
    app.router.add_get("/", read_body)
    guard = ListenerGuard(head_timeout=60.0, max_connections=4)
    listener = await start_guarded(app, "127.0.0.1", 0, guard)
    port = listener.addresses[0][1]
    trickling = []
    for _ in range(4):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        await writer.drain()
        trickling.append(writer)
    try:
        await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
            assert (r.status, await r.text()) == (200, "0")
        assert guard.counters.evicted >= 1 and guard.connections <= 4
    finally:
        for writer in trickling:
            writer.close()
        await listener.cleanup()
