"""Who may hold a tunnel: a wrong token is refused, a second connection under a live name is
refused, an agent Git does not name is kept waiting and sent nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.tokens import dial_out_token
from gitopsd.fleet.tunnel import listing_token, relay_base
from gitopsd.tunnel_frames import Hello, decode
from tests.fleet.tunnelsupport import wait_connected, wait_until
from tests.fleetfixture import TOKEN, Fleet, running_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path / "fleet") as f:
        f.add_dial_out("edge-nat", "eu-central")
        wait_connected(f, "edge-nat")
        yield f


def connect_status(fleet: Fleet, name: str, token: str) -> int:
    """The status the controller answers a tunnel upgrade claiming `name` with `token`."""

    async def go() -> int:
        headers = {"Authorization": f"Bearer {token}", "X-Gitopsd-Node": name}
        async with aiohttp.ClientSession() as session:
            try:
                ws = await session.ws_connect(f"{fleet.relay}/agents/connect", headers=headers)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            await ws.close()
            return 101

    return int(fleet._run(go()))


def inventory_via(fleet: Fleet, node: str) -> Any:
    async def go() -> Any:
        async with AgentClient({node: f"dial-out://{node}"}, fleet.auth(), retries=0) as client:
            return await client.inventory(node)

    return asyncio.run(go())


def test_a_wrong_token_is_refused_and_counted(fleet: Fleet) -> None:
    assert connect_status(fleet, "edge-other", "0" * 64) == 401
    # the token of another node, or the fleet secret itself, is no better
    assert connect_status(fleet, "edge-other", dial_out_token(TOKEN, "edge-nat")) == 401
    assert connect_status(fleet, "edge-other", TOKEN) == 401
    assert fleet.registry.refused["token"] == 3
    assert "edge-other" not in fleet.registry.sessions


def test_a_second_connection_under_a_live_name_is_refused(fleet: Fleet) -> None:
    first = fleet.registry.sessions["edge-nat"]
    assert connect_status(fleet, "edge-nat", fleet.token("edge-nat")) == 409
    assert fleet.registry.refused["duplicate"] == 1
    # the first connection is untouched and still serves
    assert fleet.registry.sessions["edge-nat"] is first
    assert inventory_via(fleet, "edge-nat").name == "edge-nat"
    # once the first is gone, the name is free again: the agent's own reconnect takes it
    fleet.drop("edge-nat")
    wait_until(
        lambda: fleet.registry.sessions.get("edge-nat") not in (None, first), "the reconnect"
    )
    assert inventory_via(fleet, "edge-nat").name == "edge-nat"


def test_an_agent_git_does_not_name_waits_and_gets_nothing(fleet: Fleet) -> None:
    async def intruder() -> tuple[list[str], int]:
        """Connect as `edge-stray` (a valid token: an operator issued it, Git lists no such
        node), read every frame for a while, and ask the relay for its inventory."""
        name = "edge-stray"
        headers = {"Authorization": f"Bearer {dial_out_token(TOKEN, name)}", "X-Gitopsd-Node": name}
        seen: list[str] = []
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{fleet.relay}/agents/connect", headers=headers)
            hello = decode((await ws.receive()).data).header
            assert isinstance(hello, Hello)
            seen.append(hello.state)
            async with session.get(
                relay_base(fleet.relay, name) + "/inventory", headers=headers
            ) as resp:
                status = resp.status
            listing = await session.get(
                f"{fleet.relay}/agents",
                headers={"Authorization": f"Bearer {listing_token(TOKEN)}"},
            )
            presence = json.loads(await listing.text())
            seen.append(",".join(u["name"] for u in presence["unknown"]))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.receive(), 0.3)  # nothing was sent to it
            await ws.close()
        return seen, status

    seen, status = fleet._run(intruder())
    assert seen == ["waiting", "edge-stray"]
    assert status == 503


def test_an_agent_named_in_git_later_is_served_on_the_same_connection(
    tmp_path: Path,
) -> None:
    with running_fleet(tmp_path / "fleet") as fleet:
        fleet.add_dial_out("edge-late", "eu-central")
        wait_connected(fleet, "edge-late")
        fleet.loop.call_soon_threadsafe(fleet.registry.set_known, set())
        wait_until(lambda: fleet.registry.connected("edge-late") is None, "the demotion")
        with pytest.raises(Exception, match="not a dial-out EdgeNode in Git"):
            inventory_via(fleet, "edge-late")
        session = fleet.registry.sessions["edge-late"]
        fleet.declare_dial_out()
        wait_until(lambda: fleet.registry.connected("edge-late") is not None, "the promotion")
        assert inventory_via(fleet, "edge-late").name == "edge-late"
        assert fleet.registry.sessions["edge-late"] is session


def test_the_relay_refuses_a_wrong_token_and_the_agent_checks_it_too(fleet: Fleet) -> None:
    async def go(token: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                relay_base(fleet.relay, "edge-nat") + "/inventory",
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            return resp.status

    assert fleet._run(go(fleet.token("edge-nat"))) == 200
    assert fleet._run(go(dial_out_token(TOKEN, "edge-other"))) == 401
    relayed = fleet.registry.relayed
    assert fleet._run(go("f" * 64)) == 401
    assert fleet.registry.relayed == relayed  # refused before anything reached the tunnel


def test_the_listing_needs_its_own_token(fleet: Fleet) -> None:
    async def go(token: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{fleet.relay}/agents", headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            return resp.status, await resp.json()

    status, body = fleet._run(go(listing_token(TOKEN)))
    assert status == 200
    assert list(body["connected"]) == ["edge-nat"]
    assert body["connected"]["edge-nat"]["from"].startswith("127.0.0.1:")
    assert fleet._run(go(fleet.token("edge-nat")))[0] == 401


def test_a_name_that_is_no_edge_node_name_is_refused_even_with_the_shared_token(
    tmp_path: Path,
) -> None:
    # token_mode = "shared": every agent holds the secret, so only the name's form is left
    # to check; a name that cannot be an EdgeNode's never gets a connection.
    with running_fleet(tmp_path / "fleet", token_mode="shared") as fleet:
        for bad in ("Edge_1", "edge-", "x" * 64, "../edge", "edge.nat"):
            assert connect_status(fleet, bad, TOKEN) == 401, bad
        assert connect_status(fleet, "edge-ok", TOKEN) == 101
        assert fleet.registry.refused["token"] == 5


def test_a_relayed_head_answer_keeps_the_connection(fleet: Fleet) -> None:
    """HEAD /modules through the relay says where its answer ends (Content-Length: 0), so
    the controller's client keeps the connection for the deploy's next request."""

    async def go() -> tuple[list[tuple[int, str | None]], int]:
        made: list[str] = []
        trace = aiohttp.TraceConfig()

        async def created(*_: object) -> None:
            made.append("connection")

        trace.on_connection_create_end.append(created)
        headers = {"Authorization": f"Bearer {fleet.token('edge-nat')}"}
        base = relay_base(fleet.relay, "edge-nat")
        answers: list[tuple[int, str | None]] = []
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            async with session.head(f"{base}/modules/{'a' * 64}", headers=headers) as resp:
                answers.append((resp.status, resp.headers.get("Content-Length")))
            async with session.get(f"{base}/inventory", headers=headers) as resp:
                await resp.read()
                answers.append((resp.status, None))
        return answers, len(made)

    answers, connections = fleet._run(go())
    assert answers == [(404, "0"), (200, None)]
    assert connections == 1
