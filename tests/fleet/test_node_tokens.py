"""Per-node agent tokens (fleet/tokens.py, issue 14 finding 2): each agent holds only its
own token, derived from the fleet secret over its name and address; the controller sends
each node that token alone, never the secret, never to an address outside the allow-list,
never along a redirect; and what a non-agent answers is shown only as a short excerpt."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import subprocess
from pathlib import Path

import aiohttp
import pytest

from gitopsd.errors import AgentAuthError, AgentError, ConfigError
from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.tokens import (
    AddressAllowList,
    AddressNotAllowed,
    FleetAuth,
    canonical_address,
    dial_out_token,
    excerpt,
    node_token,
)
from tests.fleet.recorder import Answer, RecordingListener
from tests.fleetfixture import TOKEN, Fleet, running_fleet


def addresses(fleet: Fleet) -> dict[str, str]:
    return {name: node.url for name, node in fleet.nodes.items()}


async def inventory_status(url: str, token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/inventory", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status


# the formula --------------------------------------------------------------------------------


def test_the_token_is_hmac_sha256_of_the_secret_over_name_newline_canonical_address() -> None:
    expected = hmac.new(b"s3cret", b"edge-a\nhttp://127.0.0.1:9101", hashlib.sha256).hexdigest()
    assert node_token("s3cret", "edge-a", "http://127.0.0.1:9101") == expected
    # One agent, one token, however the address is written.
    for same in ("HTTP://127.0.0.1:9101/", "http://127.0.0.1:9101"):
        assert node_token("s3cret", "edge-a", same) == expected
    assert canonical_address("https://Edge-1.Example.NET/") == "https://edge-1.example.net:443"
    assert canonical_address("http://[::1]:9101/x/") == "http://[::1]:9101/x"
    # Another name, another address, another secret: another token.
    assert node_token("s3cret", "edge-b", "http://127.0.0.1:9101") != expected
    assert node_token("s3cret", "edge-a", "http://127.0.0.1:9102") != expected
    assert node_token("other", "edge-a", "http://127.0.0.1:9101") != expected
    assert dial_out_token("s3cret", "edge-a") == (
        hmac.new(b"s3cret", b"edge-a", hashlib.sha256).hexdigest()
    )


def test_the_documented_openssl_command_gives_the_same_token() -> None:
    done = subprocess.run(
        "printf '%s\\n%s' edge-a http://127.0.0.1:9101 "
        "| openssl dgst -sha256 -hmac s3cret -r | cut -d' ' -f1",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == node_token("s3cret", "edge-a", "http://127.0.0.1:9101")


@pytest.mark.parametrize(
    "address", ["ftp://h:1", "http://", "http://u:p@h:1", "http://h:1/?q=1", "http://h:99999"]
)
def test_an_address_that_is_no_agent_url_has_no_token(address: str) -> None:
    with pytest.raises(ConfigError):
        node_token("s3cret", "edge-a", address)


def test_excerpts_are_short_and_escape_control_characters() -> None:
    text = "\x1b[2J\x1b[31mowned\r\n\u202e" + "x" * 5000
    shown = excerpt(text)
    assert "\x1b" not in shown and "\r" not in shown and "\u202e" not in shown
    assert shown.startswith("\\x1b[2J\\x1b[31mowned\\r\\n\\u202e")
    assert len(shown) < 260 and "more characters" in shown


def test_the_allow_list_takes_networks_and_host_globs_and_resolves_nothing() -> None:
    allowed = AddressAllowList.parse(["127.0.0.0/8", "10.1.2.3", "fd00::/8", "edge-*.example.net"])
    assert allowed.allows("http://127.0.0.5:9101")
    assert allowed.allows("http://10.1.2.3:9101")
    assert allowed.allows("http://[fd00::1]:9101")
    assert allowed.allows("https://EDGE-7.example.net")
    assert not allowed.allows("http://10.1.2.4:9101")
    assert not allowed.allows("http://169.254.169.254/latest")
    assert not allowed.allows("http://localhost:9101")  # a name is never resolved
    assert not allowed.allows("http://edge-7.example.net.evil.test")
    for bad in ("10.0.0.0/33", "http://x", "*", "a b"):
        with pytest.raises(ValueError, match="entry 0"):
            AddressAllowList.parse([bad])


# real agents ----------------------------------------------------------------------------------


async def test_the_agent_of_a_node_refuses_another_nodes_token_and_the_fleet_secret(
    fleet: Fleet,
) -> None:
    a, b = fleet.nodes["edge-a"], fleet.nodes["edge-b"]
    assert await inventory_status(a.url, node_token(TOKEN, "edge-a", a.url)) == 200
    assert await inventory_status(a.url, node_token(TOKEN, "edge-b", b.url)) == 401
    assert await inventory_status(a.url, TOKEN) == 401  # the fleet secret is no agent's token


async def test_the_controller_sends_each_node_its_own_token(fleet: Fleet) -> None:
    async with AgentClient(addresses(fleet), TOKEN) as client:
        live = await client.live_state(fleet.nodes)
    assert set(live.nodes) == set(fleet.nodes) and not live.errors
    # The same agents with the fleet secret itself (today's single shared token): refused.
    async with AgentClient(addresses(fleet), FleetAuth(TOKEN, "shared"), retries=0) as shared:
        refused = await shared.live_state(fleet.nodes)
    assert not refused.nodes and set(refused.errors) == set(fleet.nodes)
    assert all("refused our token" in e for e in refused.errors.values())


async def test_a_node_at_a_listener_of_an_attacker_gets_a_token_valid_nowhere(
    fleet: Fleet,
) -> None:
    garbage = "\x1b[2J<html>" + "A" * 100_000
    with RecordingListener(answer=Answer(500, garbage)) as spy:
        nodes = {**addresses(fleet), "evil": spy.url}
        async with AgentClient(nodes, TOKEN, retries=0) as client:
            live = await client.live_state(nodes)
    sent = {s.authorization for s in spy.seen}
    assert sent == {f"Bearer {node_token(TOKEN, 'evil', spy.url)}"}
    assert all(TOKEN not in (s or "") for s in sent)
    stolen = node_token(TOKEN, "evil", spy.url)
    for node in fleet.nodes.values():  # what it got opens no agent
        assert await inventory_status(node.url, stolen) == 401
    error = live.errors["evil"]
    assert "\x1b" not in error and len(error) < 400 and "A" * 201 not in error
    assert set(live.nodes) == set(fleet.nodes)


async def test_an_address_outside_the_allow_list_receives_nothing(fleet: Fleet) -> None:
    with RecordingListener("127.0.0.2") as spy:
        nodes = {**addresses(fleet), "evil": spy.url}
        auth = FleetAuth(TOKEN, allowed=AddressAllowList.parse(["127.0.0.1/32"]))
        async with AgentClient(nodes, auth) as client:
            live = await client.live_state(nodes)
            with pytest.raises(AddressNotAllowed, match="allowed_addresses"):
                await client.load_version("evil", "fn", "1.0.0", {})
    assert spy.seen == []
    assert "outside [fleet] allowed_addresses" in live.errors["evil"]
    assert set(live.nodes) == set(fleet.nodes)


async def test_a_redirect_is_never_followed(fleet: Fleet) -> None:
    with RecordingListener("127.0.0.2") as elsewhere:
        moved = Answer(307, "", {"Location": f"{elsewhere.url}/inventory"})
        with RecordingListener(answer=moved) as spy:
            async with AgentClient({"edge-x": spy.url}, TOKEN, retries=0) as client:
                with pytest.raises(AgentError, match="not followed"):
                    await client.inventory("edge-x")
    assert len(spy.seen) == 1 and elsewhere.seen == []


async def test_a_moved_node_is_told_to_install_its_new_token(fleet: Fleet) -> None:
    a = fleet.nodes["edge-a"]
    moved = a.url.replace("127.0.0.1", "localhost")  # the same agent, its old token
    async with AgentClient({"edge-a": moved}, TOKEN, retries=0) as client:
        with pytest.raises(AgentAuthError) as caught:
            await client.inventory("edge-a")
    assert f"install `gitopsd agent-token edge-a --address {moved}`" in str(caught.value)


async def test_shared_mode_still_reaches_agents_that_hold_the_shared_token(
    tmp_path: Path,
) -> None:
    with running_fleet(tmp_path / "shared", token_mode="shared") as fleet:
        fleet.add("edge-s", "us-east")
        nodes = addresses(fleet)
        async with AgentClient(nodes, FleetAuth(TOKEN, "shared")) as client:
            live = await client.live_state(nodes)
        assert set(live.nodes) == {"edge-s"}
        async with AgentClient(nodes, TOKEN, retries=0) as per_node:
            refused = await per_node.live_state(nodes)
        assert "refused our token" in refused.errors["edge-s"]


async def test_a_listener_that_does_not_speak_http_is_shown_as_an_excerpt() -> None:
    """aiohttp quotes the bytes of a broken status line in its exception; that text was
    the node's error, whole, and not even an AgentError."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"\x1b[2JNOT HTTP " + b"Z" * 5000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, AgentClient({"x": url}, TOKEN, retries=0) as client:
        live = await client.live_state(["x"])
        with pytest.raises(AgentError, match="not an agent's answer"):
            await client.inventory("x")
    error = live.errors["x"]
    assert "not an agent's answer" in error
    assert len(error) < 400 and "\x1b" not in error and "Z" * 201 not in error
