"""The page's own reads of the agents' inventories.

A fleet client of the page's own, one read at a time: the daemon's client answers one
caller at a time (its probe keeps one request in flight per agent connection), and the
daemon does not read the fleet back after its own steps, so its view lags a rollout. A
read of an unchanged agent is one bodiless 304 over a kept-alive connection
(fleet/probe.py), so reading 500 agents per page view costs milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.live import LiveState
from gitopsd.manifest.desired import DesiredState


class FleetReader:
    """`live()` reads the nodes of `desired()`; `aclose()` closes the client (if opened)."""

    def __init__(
        self,
        desired: Callable[[], DesiredState | None],
        make_client: Callable[[], AgentClient],
    ) -> None:
        self._desired = desired
        self._make_client = make_client
        self._client: AgentClient | None = None
        self._reading: asyncio.Lock | None = None

    async def live(self) -> LiveState:
        desired = self._desired()
        if desired is None:
            return LiveState()
        addresses = {n: d.address for n, d in desired.nodes.items()}
        if self._reading is None:
            self._reading = asyncio.Lock()
        async with self._reading:
            if self._client is None:
                self._client = await self._make_client().__aenter__()
            self._client.addresses = addresses
            return await self._client.live_state(addresses)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)
