"""The daemon's fleet client holds one inventory request per agent (fleet/watch.py): an
unchanged pass asks no agent anything, and a change made by anyone else is reported at once."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from aiohttp import web

from gitopsd.fleet.client import AgentClient
from tests.fleetfixture import TOKEN, Fleet
from tests.wasm_modules import handler_wasm

WASM = handler_wasm("hello")
SHA = hashlib.sha256(WASM).hexdigest()


def addresses(fleet: Fleet) -> dict[str, str]:
    return {name: node.url for name, node in fleet.nodes.items()}


class ProbeSpy:
    """Records which nodes each pass still had to ask over the network."""

    def __init__(self, client: AgentClient) -> None:
        self.asked: list[set[str]] = []
        self._real = client._probe.unchanged
        client._probe.unchanged = self._unchanged  # type: ignore[method-assign]

    async def _unchanged(self, etags: Mapping[str, tuple[str, str]]) -> set[str]:
        self.asked.append(set(etags))
        return await self._real(etags)


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def watching(fleet: Fleet) -> AsyncIterator[tuple[AgentClient, list[str]]]:
    changed: list[str] = []
    async with AgentClient(addresses(fleet), TOKEN, watch_seconds=30) as client:
        client.on_change = changed.append
        yield client, changed


async def deploy(client: AgentClient, node: str, function: str, version: str) -> None:
    await client.ensure_module(node, SHA, WASM)
    await client.load_version(node, function, version, {"sha256": SHA})


async def all_held(client: AgentClient, fleet: Fleet) -> None:
    await until(lambda: set(client.watch.held) == set(fleet.nodes), "every node watched")


async def test_an_unchanged_pass_asks_no_agent(
    fleet: Fleet, watching: tuple[AgentClient, list[str]]
) -> None:
    client, changed = watching
    first = await client.live_state(fleet.nodes)
    assert set(first.nodes) == set(fleet.nodes) and not first.errors
    await all_held(client, fleet)
    spy = ProbeSpy(client)
    again = await client.live_state(fleet.nodes)
    assert spy.asked == []  # no request at all: every cache entry is held at its ETag
    assert again.generations() == first.generations()
    assert changed == []


async def test_a_change_by_someone_else_is_reported_and_read_from_the_watch(
    fleet: Fleet, watching: tuple[AgentClient, list[str]]
) -> None:
    client, changed = watching
    await client.live_state(fleet.nodes)
    await all_held(client, fleet)
    async with AgentClient(addresses(fleet), TOKEN) as operator:
        await deploy(operator, "edge-b", "hand-made", "9.9.9")
    await until(lambda: changed == ["edge-b"], "the change to be reported")
    await all_held(client, fleet)
    spy = ProbeSpy(client)
    live = await client.live_state(fleet.nodes)
    assert spy.asked == []  # the watch's answer already is the new inventory
    assert "hand-made" in live.nodes["edge-b"].functions
    assert "hand-made" not in live.nodes["edge-a"].functions


async def test_its_own_changes_are_not_reported_and_are_read_again(
    fleet: Fleet, watching: tuple[AgentClient, list[str]]
) -> None:
    client, changed = watching
    await client.live_state(fleet.nodes)
    await all_held(client, fleet)
    await deploy(client, "edge-a", "mine", "1.0.0")
    # The watch sees the new ETag (its held request was answered) ...
    etag = f'"{fleet.nodes["edge-a"].agent.service._boot}-1"'  # type: ignore[union-attr]
    await until(lambda: client.watch.held.get("edge-a") == etag, "the watch to move on")
    assert changed == []  # ... but a change this client made is not news to it
    spy = ProbeSpy(client)
    live = await client.live_state(fleet.nodes)
    assert spy.asked == [{"edge-a"}]  # read again once before its cache is trusted
    assert "mine" in live.nodes["edge-a"].functions
    spy.asked.clear()
    await client.live_state(fleet.nodes)
    assert spy.asked == []


async def test_a_stopped_agent_ends_its_watch_and_a_restart_starts_a_new_one(
    fleet: Fleet, watching: tuple[AgentClient, list[str]]
) -> None:
    client, changed = watching
    await client.live_state(fleet.nodes)
    await all_held(client, fleet)
    # Stop it only once its held request is waiting inside it (in this process a request
    # still in flight at that moment can be left unanswered; a real agent's exit closes it).
    service = fleet.nodes["edge-c"].agent.service  # type: ignore[union-attr]
    await until(lambda: bool(service._moved._waiters), "the request to reach the agent")
    await asyncio.to_thread(fleet.stop, "edge-c")
    await until(lambda: "edge-c" in changed, "the lost agent to be reported")
    assert "edge-c" not in client.watch.held
    live = await client.live_state(fleet.nodes)
    assert "edge-c" in live.errors
    await asyncio.to_thread(fleet.start, "edge-c")
    live = await client.live_state(fleet.nodes)
    assert "edge-c" in live.nodes
    await all_held(client, fleet)


async def test_an_agent_that_does_not_hold_requests_is_asked_every_pass(
    fleet: Fleet, unused_tcp_port: int
) -> None:
    """An older agent, or a proxy, that answers `?wait=` at once: no busy loop of requests."""
    waits = 0

    async def inventory(request: web.Request) -> web.Response:
        nonlocal waits
        waits += "wait" in request.query
        if request.headers.get("If-None-Match") == '"old-1"':
            return web.Response(status=304, headers={"ETag": '"old-1"'})
        return web.json_response(_old_inventory(), headers={"ETag": '"old-1"'})

    app = web.Application()
    app.router.add_get("/inventory", inventory)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        nodes = {"old": f"http://127.0.0.1:{unused_tcp_port}"}
        async with AgentClient(nodes, TOKEN, watch_seconds=30) as client:
            for tries in (1, 2):  # a second early end in a row gives up for a while
                await client.live_state(nodes)
                await until(
                    lambda n=tries: waits == n and not client.watch._tasks,  # type: ignore[misc]
                    "the watch to end",
                )
            spy = ProbeSpy(client)
            for _ in range(3):
                live = await client.live_state(nodes)
                assert "old" in live.nodes
            assert spy.asked == [{"old"}] * 3
            assert waits == 2  # not watched again for REWATCH_AFTER_S
    finally:
        await runner.cleanup()


def _old_inventory() -> dict[str, Any]:
    return {
        "node": "old",
        "region": "r",
        "labels": {},
        "generation": 1,
        "memoryBudgetMiB": 1024,
        "memoryUsedMiB": 0,
        "functions": {},
    }
