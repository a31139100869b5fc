"""A listener that is not an agent: a plain aiohttp server, on its own thread and event
loop (CLI commands run their own loops), that records every request it gets and answers
whatever the test tells it to, as a metadata service, a database or an attacker would."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class Answer:
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/plain"


class RecordingListener:
    """`with RecordingListener("127.0.0.2") as spy:` ... `spy.seen`, `spy.url`."""

    def __init__(self, host: str = "127.0.0.1", answer: Answer | None = None) -> None:
        self.host = host
        self.answer = answer or Answer()
        self.seen: list[Seen] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            Seen(request.method, request.path_qs, request.headers.get("Authorization"))
        )
        return web.Response(
            status=self.answer.status,
            text=self.answer.body,
            headers=self.answer.headers,
            content_type=self.answer.content_type,
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        assert self._runner.addresses
        self.port = int(self._runner.addresses[0][1])

    def __enter__(self) -> RecordingListener:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
