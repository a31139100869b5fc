"""Held inventory requests: the daemon learns of every agent change as it happens.

For each node whose inventory is cached with an ETag, one `GET /inventory?wait=SECONDS` with
`If-None-Match: <that ETag>` stays open. The agent answers as soon as its inventory changes
(200, the new inventory) or when the wait ends (304, asked again at once). While such a
request is open at the cached ETag, the cache *is* the agent's state, so a reconcile pass
needs no request for that node at all (Kubernetes informers and Argo CD's cluster cache work
the same way: watch, and reconcile from the cache).

Anything unexpected ends the watch of a node: an error, a closed connection, a 503 (an agent
that stops answers its held requests so), or a 304 long before the wait is over (an older
agent, or a proxy, that does not hold requests). The pass then asks that node directly
again, as it would without watches, and the next successful read starts a new watch. When
two watches of a node in a row end early, the node is not watched again for
REWATCH_AFTER_S: a node that cannot be watched never turns into a busy loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from gitopsd.log import get_logger

REWATCH_AFTER_S = 60.0


class Watched(Protocol):
    """What a watch needs from the client that owns the cache."""

    def watch_target(self, node: str) -> tuple[str, str] | None:
        """(base URL, cached ETag) to watch, or None when the node is no longer wanted."""

    async def held_inventory(self, node: str, base: str, etag: str, seconds: float) -> bool:
        """One held request; True when the inventory changed (and the cache was updated)."""

    def watch_lost(self, node: str, reason: str) -> None:
        """The watch of `node` ended by an error: its cache may be stale from now on."""


class InventoryWatch:
    """One background task per watched node; `held` says which ETag each one holds."""

    def __init__(self, client: Watched, seconds: float) -> None:
        self.seconds = seconds
        self.held: dict[str, str] = {}  # node -> ETag of its open request
        self._client = client
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._not_before: dict[str, float] = {}  # node -> loop time of its next watch
        self._early: dict[str, int] = {}  # node -> watches in a row that ended early
        self._closed = False
        self._log = get_logger(component="fleet")

    def ensure(self, node: str) -> None:
        """Watch `node` (its inventory was just read) unless it is watched already."""
        if self.seconds <= 0 or self._closed or node in self._tasks:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._not_before.get(node, 0.0):
            return
        self._tasks[node] = loop.create_task(self._run(node), name=f"watch {node}")

    async def _run(self, node: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed and (target := self._client.watch_target(node)) is not None:
                base, etag = target
                started = loop.time()
                self.held[node] = etag
                try:
                    changed = await self._client.held_inventory(node, base, etag, self.seconds)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # every failure only ends this node's watch
                    self._ended(node, early=loop.time() - started < self.seconds / 2)
                    self._client.watch_lost(node, str(exc) or exc.__class__.__name__)
                    return
                finally:
                    self.held.pop(node, None)
                if not changed and loop.time() - started < self.seconds / 2:
                    self._ended(node, early=True)
                    return
                self._early.pop(node, None)
        finally:
            self._tasks.pop(node, None)

    def _ended(self, node: str, early: bool) -> None:
        count = self._early[node] = self._early.get(node, 0) + 1 if early else 0
        if count >= 2:
            self._early.pop(node)
            self._not_before[node] = asyncio.get_running_loop().time() + REWATCH_AFTER_S
            self._log.info(
                "inventory watch keeps ending early; asking this agent every pass for a while",
                node=node,
                seconds=REWATCH_AFTER_S,
            )

    async def close(self) -> None:
        """Cancel every watch and wait for them to end."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.held.clear()
