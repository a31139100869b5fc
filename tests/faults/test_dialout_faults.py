"""Dial-out agents misbehaving (issue 19 item 5): an agent gone mid-deploy, a tunnel that
flaps through a rollout, a reconnect from a new address, garbage frames. No node is left on
a version its rollout did not end on, and the controller holds nothing for dead connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitopsd.fleet.tokens import dial_out_token
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.tunnel_frames import MAX_FRAME_BYTES, Request, Response, encode
from tests.fleet.tunnelsupport import mixed_fleet, tunnel_syncer, wait_connected, wait_until
from tests.fleetfixture import TOKEN, Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, push

ROLLING = "{type: rolling, batchSize: 1, batchDelay: PT30S}"
NAT = "edge-nat-1"


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(tmp_path / "fleet") as fleet:
        mixed_fleet(fleet)
        yield fleet


def consistent(fleet: Fleet, state: str, old: str, new: str) -> None:
    """Every node serves the version the rollout ended on: the new one if it completed."""
    expected = new if state == "COMPLETED" else old
    assert fleet.serving("fn") == {n: expected for n in fleet.nodes}


def nothing_held(fleet: Fleet) -> None:
    """The controller keeps no request of a dead connection, one session per live agent."""
    sessions = dict(fleet.registry.sessions)
    assert set(sessions) <= set(fleet.nodes)
    assert all(not s.pending for s in sessions.values())


def test_an_agent_gone_mid_deploy_is_left_on_no_unintended_version(
    remote: GitRemote, mixed: Fleet, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", mixed.manifests())
    sync = tunnel_syncer(tmp_path / "state", remote, mixed, HookClock())
    push(remote, "fn", "1.0.0", ROLLING)
    assert sync().ok

    def kill_at_its_deploy(event: RolloutEvent) -> None:
        nodes = getattr(event.step, "nodes", ())
        if event.outcome is None and event.step.kind == "deploy" and NAT in nodes:
            mixed.stop(NAT)  # the agent's process dies: its tunnel ends with it

    sync.reconciler.on_event = kill_at_its_deploy
    push(remote, "fn", "2.0.0", ROLLING)
    report = sync()
    state = report.results[0].state
    assert state != "COMPLETED"
    assert mixed.nodes[NAT].agent is None
    assert not mixed.connected(NAT)
    others = {n: v for n, v in mixed.serving("fn").items() if n != NAT}
    assert others == {n: "1.0.0" for n in others}
    # it comes back (same data dir), dials in again, and the next pass leaves it consistent
    sync.reconciler.on_event = None
    mixed.start(NAT)
    wait_connected(mixed, NAT)
    again = sync()  # a node that was unreachable is no verdict on 2.0.0: it may roll out anew
    state = again.results[0].state if again.results else state
    consistent(mixed, state, "1.0.0", "2.0.0")
    nothing_held(mixed)


@pytest.mark.parametrize("strategy", [ROLLING, "{type: blue-green, blueRetentionPeriod: PT0S}"])
def test_a_flapping_tunnel_through_a_rollout(
    strategy: str, remote: GitRemote, mixed: Fleet, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", mixed.manifests())
    sync = tunnel_syncer(tmp_path / "state", remote, mixed, HookClock())
    push(remote, "fn", "1.0.0", strategy)
    assert sync().ok
    drops = 0

    def flap(event: RolloutEvent) -> None:
        nonlocal drops
        if event.outcome is None:  # every step starts with both tunnels cut
            mixed.drop(NAT)
            mixed.drop("edge-nat-2")
            drops += 1

    sync.reconciler.on_event = flap
    push(remote, "fn", "2.0.0", strategy)
    report = sync()
    assert drops >= 3
    state = report.results[0].state
    assert state in ("COMPLETED", "ROLLED_BACK", "FAILED")
    # The next pass, tunnels steady, leaves every node on the version the rollout ended on.
    sync.reconciler.on_event = None
    wait_connected(mixed, NAT, "edge-nat-2")
    again = sync()
    state = again.results[0].state if again.results else state
    consistent(mixed, state, "1.0.0", "2.0.0")
    nothing_held(mixed)


class Rebinder:
    """A TCP relay in front of the controller whose outgoing source address can change, as
    a NAT rebinding a node to a new public address does; `cut()` kills live connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.source = "127.0.0.2"
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port, local_addr=(self.source, 0)
        )
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()


def test_a_reconnect_from_a_new_address_takes_over_the_name(
    remote: GitRemote, tmp_path: Path
) -> None:
    with running_fleet(tmp_path / "fleet") as fleet:
        port = int(fleet.relay.rsplit(":", 1)[1])
        nat = Rebinder(port)
        fleet._run(nat.start())
        fleet.add("edge-a", "us-east")
        fleet.add_dial_out("edge-roam", "us-east", controller=f"http://127.0.0.1:{nat.port}")
        wait_connected(fleet, "edge-roam")
        assert fleet.registry.sessions["edge-roam"].peer.startswith("127.0.0.2:")
        remote.write("nodes.yaml", fleet.manifests())
        sync = tunnel_syncer(tmp_path / "state", remote, fleet, HookClock())
        push(remote, "fn", "1.0.0", ROLLING)
        assert sync().ok

        nat.source = "127.0.0.3"  # the NAT now sends this node out from a new address
        fleet._run(nat.cut())
        wait_until(
            lambda: getattr(fleet.registry.sessions.get("edge-roam"), "peer", "").startswith(
                "127.0.0.3:"
            ),
            "the reconnect from 127.0.0.3",
        )
        push(remote, "fn", "2.0.0", ROLLING)
        assert [r.state for r in sync().results] == ["COMPLETED"]
        assert fleet.serving("fn") == {"edge-a": "2.0.0", "edge-roam": "2.0.0"}
        assert fleet.registry.refused["duplicate"] == 0
        fleet._run(nat.close())


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def framed(header: dict[str, Any]) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack(">I", len(raw)) + raw


GARBAGE: dict[str, Any] = {
    "text message": "hello",
    "too short": b"\x00\x00",
    "length past the end": struct.pack(">I", 1000) + b"{}",
    "not json": struct.pack(">I", 3) + b"{{{",
    "not an object": struct.pack(">I", 2) + b"[]",
    "unknown kind": struct.pack(">I", 10) + b'{"t":"zz"}',
    "request from an agent": encode(
        Request(t="req", id=1, method="GET", path="/inventory", headers={})
    ),
    "answer with CRLF in a header name": framed(
        {"t": "res", "id": 1, "status": 200, "headers": {"a\r\nb": "c"}}
    ),
    "answer with CRLF in a header value": framed(
        {"t": "res", "id": 1, "status": 200, "headers": {"X-A": "b\r\nSet-Cookie: x"}}
    ),
    "status out of range": encode(Response(t="res", id=1, status=200, headers={})).replace(
        b'"status":200', b'"status":999'
    ),
}


def test_garbage_frames_close_that_connection_and_memory_stays_bounded(tmp_path: Path) -> None:
    with running_fleet(tmp_path / "fleet") as fleet:
        fleet.add_dial_out("edge-good", "us-east")
        wait_connected(fleet, "edge-good")
        fleet.declare_dial_out("edge-evil")  # Git names it: its frames are read
        headers = {
            "Authorization": f"Bearer {dial_out_token(TOKEN, 'edge-evil')}",
            "X-Gitopsd-Node": "edge-evil",
        }
        url = f"{fleet.relay}/agents/connect"

        async def send(payload: Any) -> int | None:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(url, headers=headers, max_msg_size=0)
                await ws.receive()  # hello
                try:
                    if isinstance(payload, str):
                        await ws.send_str(payload)
                    else:
                        await ws.send_bytes(payload)
                except ConnectionError:
                    return None  # closed before all of it was written: refused early
                message = await asyncio.wait_for(ws.receive(), 10)
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                await ws.close()
                return ws.close_code

        for what, payload in GARBAGE.items():
            code = fleet._run(send(payload))
            assert code == 1002, what
        assert fleet.registry.refused["garbage"] == len(GARBAGE)

        before = rss_mib()
        oversize = b"\x00" * (MAX_FRAME_BYTES + 1)
        for _ in range(40):  # 40 x 8 MiB offered: refused by its length, never buffered
            assert fleet._run(send(oversize)) in (1009, None)
        grown = rss_mib() - before
        assert grown < 64, f"controller grew {grown:.0f} MiB on refused frames"
        wait_until(lambda: "edge-evil" not in fleet.registry.sessions, "the garbage sessions")
        # the well-behaved agent was never disturbed
        assert fleet.registry.sessions["edge-good"].pending == {}
        assert fleet.inventory("edge-good")["node"] == "edge-good"


def test_an_agent_that_never_answers_holds_nothing_after_its_callers_give_up(
    tmp_path: Path,
) -> None:
    with running_fleet(tmp_path / "fleet") as fleet:
        fleet.declare_dial_out("edge-mute")
        headers = {
            "Authorization": f"Bearer {dial_out_token(TOKEN, 'edge-mute')}",
            "X-Gitopsd-Node": "edge-mute",
        }

        async def go() -> tuple[int, int, int]:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{fleet.relay}/agents/connect", headers=headers)
                await ws.receive()  # hello
                url = f"{fleet.relay}/agents/edge-mute/api/inventory"
                timeout = aiohttp.ClientTimeout(total=0.1)
                for _ in range(40):  # callers that time out, one after another
                    with contextlib.suppress(TimeoutError):
                        async with session.get(url, headers=headers, timeout=timeout):
                            pass
                session_ = fleet.registry.sessions["edge-mute"]
                await asyncio.sleep(0.1)
                requests = cancels = 0
                while True:  # what the agent was sent: each request, then its cancel
                    try:
                        message = await asyncio.wait_for(ws.receive(), 0.5)
                    except TimeoutError:
                        break
                    kind = message.data[4:20]
                    requests += b'"t":"req"' in kind
                    cancels += b'"t":"cancel"' in kind
                pending = len(session_.pending)
                await ws.close()
                return pending, requests, cancels

        pending, requests, cancels = fleet._run(go())
        assert pending == 0
        assert requests == cancels == 40
