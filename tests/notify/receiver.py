"""A real HTTP receiver on 127.0.0.1 (aiohttp, in its own thread) that records what it got.

It answers `status` (200 by default); `fail_next(n, status)` makes the next n requests fail
with that status first; `hang` makes it hold requests without answering until released.
Usable from sync tests (the CLI, a daemon subprocess) and async ones alike.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.daemon.daemonsupport import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int  # what the receiver answered


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests: list[Received] = []
        self.in_flight = 0  # requests received and not answered yet
        self.status = 200
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/secret-path-token"

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        """Stop listening (connections are refused), keeping what was recorded."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None

    def close(self) -> None:
        self.release()
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def hang(self) -> None:
        """Hold every request without answering until `release`."""
        self._release = asyncio.Event()

    def release(self) -> None:
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if self._release is not None:
            self.in_flight += 1
            await self._release.wait()
            self.in_flight -= 1
        with self._lock:
            status = self._failures.pop(0) if self._failures else self.status
            self.requests.append(Received(request.path, dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status < 300 else "try later")

    def delivered(self) -> list[Received]:
        """The requests that were answered 2xx, in order."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def events(self) -> list[str]:
        return [r.body.get("event", "") for r in self.delivered()]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate(self):
                return
            time.sleep(0.01)
        raise AssertionError(f"receiver never saw it; got {[r.body for r in self.requests]}")


async def until(predicate: Any, what: str = "", within: float = 30.0) -> None:
    """Poll `predicate` without blocking the running event loop (the dispatcher's)."""
    try:
        async with asyncio.timeout(within):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.close()
