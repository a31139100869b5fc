"""The daemon's HTTP listeners (webhooks, /metrics, the status page) bounded against clients
that connect and never finish a request.

aiohttp's server has no deadline for a request head: a client sending one header line a
second holds its connection, and a few hundred of them take every file descriptor, after
which the daemon cannot even open its repository. `start_guarded` serves an application
through aiohttp's public protocol factory (`runner.server`) wrapped in a thin protocol that
gives every connection a deadline to start a request (`head_timeout`, counted from the
connection or from the end of the previous request) and caps the connections a listener
holds: at the cap the oldest connection with no request in progress makes room, and when
every one is in a request, the oldest of all.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

HEAD_TIMEOUT_S = 10.0


def default_max_connections() -> int:
    """Per listener: 256, or an eighth of the open-files limit when that is lower, so the
    daemon's few listeners together never take more than half of its descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 256
    return max(8, min(256, soft // 8))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class GuardCounters:
    """What the guard closed, for tests and logs."""

    head_timeouts: int = 0
    evicted: int = 0


class _Guarded(asyncio.Protocol):
    """Delegates everything to aiohttp's handler; adds the deadline and the bookkeeping."""

    def __init__(self, guard: ListenerGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inner.connection_made(transport)
        self.guard.admit(self)
        self.idle()

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.guard.forget(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def begin(self) -> None:
        self.busy += 1
        self._cancel()

    def end(self) -> None:
        self.busy = max(0, self.busy - 1)
        if not self.busy:
            self.idle()

    def idle(self) -> None:
        self._cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.head_timeout, self._expire)

    def close(self) -> None:
        self._cancel()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _expire(self) -> None:
        if not self.busy:
            self.guard.counters.head_timeouts += 1
            self.close()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass
class ListenerGuard:
    """Deadline and cap of one listener."""

    head_timeout: float = HEAD_TIMEOUT_S
    max_connections: int = field(default_factory=default_max_connections)
    counters: GuardCounters = field(default_factory=GuardCounters)
    _open: dict[Any, _Guarded] = field(default_factory=dict)  # transport -> connection

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory())

    def admit(self, conn: _Guarded) -> None:
        """Make room for `conn`."""
        if len(self._open) >= self.max_connections:
            # The oldest connection with no request in progress makes room; when every one is
            # in a request (bodies trickling in, event streams), the oldest of those does: a
            # flood of slow clients must not lock out the next real delivery. A browser's
            # event stream reconnects by itself.
            victim = next((c for c in self._open.values() if not c.busy), None)
            if victim is None:
                victim = next(iter(self._open.values()))
            self.counters.evicted += 1
            self.forget(victim)
            victim.close()
        self._open[conn.transport] = conn

    def forget(self, conn: _Guarded) -> None:
        self._open.pop(conn.transport, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self._open.get(request.transport)
        if conn is None:
            return await handler(request)
        conn.begin()
        try:
            return await handler(request)
        finally:
            conn.end()

    @property
    def connections(self) -> int:
        return len(self._open)


class GuardedListener:
    """A started listener: `addresses` like AppRunner's, `cleanup()` stops it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, guard: ListenerGuard):
        self.runner = runner
        self.server = server
        self.guard = guard

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self.server.sockets]

    async def cleanup(self) -> None:
        self.server.close()
        await self.runner.cleanup()  # closes aiohttp's connections, then its handlers
        await self.server.wait_closed()


async def start_guarded(
    app: web.Application,
    host: str,
    port: int,
    guard: ListenerGuard | None = None,
    **runner_args: Any,
) -> GuardedListener:
    """Serve `app` on host:port (0: a free port) behind `guard` (defaults: a 10 s head
    deadline, `default_max_connections()`)."""
    guard = guard or ListenerGuard()
    app.middlewares.insert(0, guard.middleware)
    runner = web.AppRunner(app, access_log=None, **runner_args)
    await runner.setup()
    factory = runner.server
    assert factory is not None
    try:
        # asyncio accepts up to `backlog` connections in one go before any of them reaches
        # the guard (whose evictions close sockets a loop turn later): at the default 100, a
        # burst of stalled clients on a slow machine held cap + 100 descriptors at once and
        # the daemon ran out of them. The cap bounds the burst too.
        server = await asyncio.get_running_loop().create_server(
            guard.wrap(factory), host or None, port, backlog=guard.max_connections
        )
    except BaseException:
        await runner.cleanup()
        raise
    return GuardedListener(runner, server, guard)
