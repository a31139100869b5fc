"""The status page outside the daemon: served from its own event loop in a thread, for
`gitopsd demo` (which runs its rollouts in the foreground) and the benchmark."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from gitopsd.ui.ports import UiPorts
from gitopsd.ui.server import StatusPage, serve


class PageThread:
    """Serve the page for `ports` on host:port (0: a free one) until `close()`.

    `on_close` coroutines run on the page's loop before it stops (a fleet reader's client
    lives there)."""

    def __init__(
        self,
        ports: UiPorts,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        on_close: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = (),
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._on_close = on_close
        self.page = StatusPage(ports, token)
        self._runner: web.AppRunner = self.run(serve(self.page, host, port))
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{host}:{self.port}"

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the page's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.run(self._runner.cleanup())
        for hook in self._on_close:
            self.run(hook())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
