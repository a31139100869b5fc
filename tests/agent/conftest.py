"""Fixtures of the agent tests: a shared runtime, real agents on loopback, a small client."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitopsd.agent import AgentSettings, RunningAgent, Runtime, start_agent
from tests.wasm_modules import handler_wasm

TOKEN = "test-token-0123456789"


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    """One runtime for the whole session, as a benchmark process would share it."""
    shared = Runtime(workers=8)
    yield shared
    shared.close()


@pytest.fixture(scope="session")
def wasm() -> dict[str, bytes]:
    """Compiled handler modules, by behaviour (reply "hello")."""
    behaviours = ("ok", "echo", "trap", "exit1", "loop", "grow", "env")
    return {b: handler_wasm(behaviour=b) for b in behaviours}


def settings_for(data_dir: Path, **overrides: Any) -> AgentSettings:
    """Agent settings on a free loopback port with the test token."""
    values: dict[str, Any] = {
        "name": "edge-test-1",
        "region": "test-region",
        "labels": {"tier": "test"},
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "token": TOKEN,
    }
    values.update(overrides)
    return AgentSettings(**values)


class Client:
    """A thin client of one agent: the requests the tests repeat, and the raw session."""

    def __init__(self, agent: RunningAgent, session: aiohttp.ClientSession) -> None:
        self.agent = agent
        self.session = session
        self.auth = {"Authorization": f"Bearer {agent.token}"}

    async def upload(self, module: bytes) -> str:
        sha = hashlib.sha256(module).hexdigest()
        async with self.session.put(f"/modules/{sha}", data=module, headers=self.auth) as r:
            assert r.status == 201, await r.text()
        return sha

    async def load(
        self, function: str, version: str, module: bytes, **body: Any
    ) -> aiohttp.ClientResponse:
        body.setdefault("sha256", await self.upload(module))
        async with self.session.put(
            f"/functions/{function}/versions/{version}", json=body, headers=self.auth
        ) as r:
            await r.read()
            return r

    async def deploy(self, function: str, version: str, module: bytes, **body: Any) -> None:
        r = await self.load(function, version, module, **body)
        assert r.status == 200, r.status

    async def traffic(self, function: str, **body: Any) -> tuple[int, Any]:
        async with self.session.put(
            f"/functions/{function}/traffic", json=body, headers=self.auth
        ) as r:
            return r.status, await r.json()

    async def call(
        self, function: str, data: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, str | None, bytes]:
        async with self.session.post(f"/fn/{function}", data=data, headers=headers) as r:
            return r.status, r.headers.get("X-Gitopsd-Version"), await r.read()

    async def get_json(self, path: str) -> Any:
        async with self.session.get(path, headers=self.auth) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def inventory(self) -> Any:
        return await self.get_json("/inventory")


@pytest.fixture
async def agent(tmp_path: Path, runtime: Runtime) -> AsyncIterator[RunningAgent]:
    """A running agent on a fresh data dir."""
    running = await start_agent(settings_for(tmp_path / "data"), runtime)
    yield running
    await running.close()


@pytest.fixture
async def client(agent: RunningAgent) -> AsyncIterator[Client]:
    """A client of `agent`."""
    async with aiohttp.ClientSession(base_url=agent.url) as session:
        yield Client(agent, session)
