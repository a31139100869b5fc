"""A misbehaving edge agent: a proxy in front of a real agent that breaks the agent API on
purpose (docs/agent-api.md), so the controller meets every failure mode of its own component.

Rules match a method and a path pattern and say what goes wrong:

- `die`: the agent dies on this request (connection dropped, then refused until healed);
  `die-after`: the request reaches the real agent first (its effect happened), then it dies
- `hang` / `hang-after`: no answer, ever (before or after the real agent acted)
- `slow`: answer after `delay` seconds
- `5xx`: answer `status` without forwarding, `times` times (then forward); `5xx-after`:
  forward, then answer `status` anyway
- `badjson`: forward, then answer the body cut in half (still `application/json`)
- `wrongdigest`: forward, then rewrite every sha256 in the answer
- `huge`: answer 200 with a `size`-byte JSON body, streamed
- `flap`: every other matching request has its connection reset
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}


@dataclass
class Rule:
    fault: str
    method: str = ".*"
    path: str = ".*"
    times: int | None = None  # None: every match
    delay: float = 0.0
    status: int = 503
    size: int = 100 * 1024 * 1024
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return bool(re.fullmatch(self.method, method) and re.fullmatch(self.path, path))


@dataclass
class Seen:
    method: str
    path: str
    fault: str | None
    at: float


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1:`port` (0: any), forwards to `upstream`, applies `rules`."""

    upstream: str
    port: int = 0
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    dead: bool = False
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _session: aiohttp.ClientSession | None = None
    _flip: int = 0
    _hanging: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        server = self._site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self.dead = False

    async def die(self) -> None:
        """Stop listening: new connections are refused."""
        if self._site is not None and not self.dead:
            self.dead = True
            await self._site.stop()

    async def heal(self) -> None:
        """No more rules; listen again if dead; release every hanging request."""
        self.rules.clear()
        for waiter in self._hanging:
            waiter.cancel()
        self._hanging.clear()
        if self.dead:
            await self._listen()

    async def close(self) -> None:
        for waiter in self._hanging:
            waiter.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- one request -----------------------------------------------------------------------

    def _rule(self, method: str, path: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(method, path) and (rule.times is None or rule.hits < rule.times):
                rule.hits += 1
                return rule
        return None

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            return resp.status, out, data

    async def _hang(self) -> web.Response:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hanging.add(waiter)
        try:
            await waiter
        finally:
            self._hanging.discard(waiter)
        raise asyncio.CancelledError

    def _drop(self, request: web.Request) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rule = self._rule(request.method, request.path)
        fault = rule.fault if rule else None
        self.seen.append(Seen(request.method, request.path, fault, time.monotonic()))
        body = await request.read()
        if rule is None:
            return _response(*await self._forward(request, body))
        if fault == "flap":
            self._flip += 1
            if self._flip % 2:
                return self._drop(request)
            return _response(*await self._forward(request, body))
        if fault in ("die", "die-after"):
            if fault == "die-after":
                await self._forward(request, body)
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, self.die())
            return self._drop(request)
        if fault in ("hang", "hang-after"):
            if fault == "hang-after":
                await self._forward(request, body)
            return await self._hang()
        if fault == "slow":
            await asyncio.sleep(rule.delay if rule else 0)
            return _response(*await self._forward(request, body))
        if fault == "5xx":
            return web.json_response({"error": "injected"}, status=rule.status if rule else 503)
        status, _headers, data = await self._forward(request, body)
        if fault == "5xx-after":
            return web.json_response(
                {"error": "injected after"}, status=rule.status if rule else 500
            )
        if fault == "badjson":
            return web.Response(
                body=data[: len(data) // 2], status=status, content_type="application/json"
            )
        if fault == "wrongdigest":
            text = re.sub(
                r'"sha256": ?"[0-9a-f]{64}"',
                f'"sha256": "{hashlib.sha256(b"wrong").hexdigest()}"',
                data.decode(),
            )
            return web.Response(text=text, status=status, content_type="application/json")
        if fault == "huge":
            return await _huge(request, rule.size if rule else 0)
        raise AssertionError(f"unknown fault {fault}")


def _response(status: int, headers: dict[str, str], body: bytes) -> web.Response:
    return web.Response(status=status, headers=headers, body=body)


async def _huge(request: web.Request, size: int) -> web.StreamResponse:
    """A valid-looking JSON inventory whose padding makes it `size` bytes."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    head = json.dumps({"node": "edge-huge", "region": "x", "generation": 1, "pad": ""})[:-2]
    await resp.write(head.encode())
    chunk = b"x" * (1 << 20)
    sent = len(head)
    try:
        while sent < size - 2:
            part = chunk[: min(len(chunk), size - 2 - sent)]
            await resp.write(part)
            sent += len(part)
        await resp.write(b'"}')
    except (ConnectionError, RuntimeError):
        return resp  # the client gave up: fine
    await resp.write_eof()
    return resp


def run_on(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)
