"""A fleet of real agents on free loopback ports in this process, served from a background
event loop so that other code (the CLI, the engine, a daemon subprocess) reaches them over
real HTTP. Used by `gitopsd demo` and by the tests.

`TOKEN` is the fleet secret (the controller's token file, `token_file`); each agent is
started with its own token derived from it, exactly what `gitopsd agent-token NAME
--address URL` prints, so the fleet checks per-node authentication in every test that uses
it. `LocalFleet(root, token_mode="shared")` starts every agent with the secret itself.

The fleet also plays the controller's tunnel listener (fleet/tunnel.py) on a free loopback
port, `relay`: `add_dial_out` starts an agent that dials out to it (EdgeNode
`spec.connect: dial-out`), and `auth()` is the FleetAuth a controller uses to reach both kinds.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from gitopsd.agent.main import RunningAgent, start_agent
from gitopsd.agent.settings import AgentSettings
from gitopsd.errors import ConfigError
from gitopsd.fleet.tokens import FleetAuth, dial_out_token, node_token
from gitopsd.fleet.tunnel import TunnelRegistry, serve_tunnel

TOKEN = "local-fleet-token-0123456789abcdef"


@dataclass
class Node:
    name: str
    region: str
    labels: dict[str, str]
    data_dir: Path
    agent: RunningAgent | None = None
    port: int = 0
    address: str | None = None  # where the controller reaches it, when not `url` (a proxy)
    dial_out: bool = False  # the agent connects to the fleet's tunnel listener
    controller: str | None = None  # where it dials out to, when not the fleet's own listener

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class LocalFleet:
    """Start, stop and restart agents; invoke functions; read inventories."""

    def __init__(self, root: Path, token_mode: Literal["per-node", "shared"] = "per-node") -> None:
        self.root = root
        self.token_mode = token_mode
        self.nodes: dict[str, Node] = {}
        root.mkdir(parents=True, exist_ok=True)
        self.token_file = root / "agent-token"
        self.token_file.write_text(TOKEN + "\n")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.registry = TunnelRegistry(FleetAuth(TOKEN, token_mode))
        self._tunnel, port = self._run(self._serve_tunnel())
        self.relay = f"http://127.0.0.1:{port}"

    async def _serve_tunnel(self) -> Any:
        return await serve_tunnel(self.registry, "127.0.0.1:0")

    def auth(self) -> FleetAuth:
        """What a controller of this fleet holds: the secret, and the tunnel's relay."""
        return FleetAuth(TOKEN, self.token_mode, relay=self.relay)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def add(self, name: str, region: str, **labels: str) -> Node:
        node = Node(name, region, dict(labels), self.root / name)
        self.nodes[name] = node
        self.start(name)
        return node

    def add_dial_out(
        self, name: str, region: str, controller: str | None = None, **labels: str
    ) -> Node:
        """An agent that dials out (`spec.connect: dial-out`) to `controller`, by default the
        fleet's tunnel listener; Git names it from now on (the registry's known names)."""
        node = Node(name, region, dict(labels), self.root / name, dial_out=True)
        node.controller = controller
        self.nodes[name] = node
        self.declare_dial_out()
        self.start(name)
        return node

    def declare_dial_out(self, *extra: str) -> None:
        """Tell the tunnel which dial-out names Git declares (every dial-out node, `extra`)."""
        names = {n for n, node in self.nodes.items() if node.dial_out} | set(extra)
        self.loop.call_soon_threadsafe(self.registry.set_known, names)

    def connected(self, name: str) -> bool:
        """True when `name`'s agent holds a tunnel to the fleet's listener."""
        return name in self.registry.sessions

    def wait_connected(self, *names: str, seconds: float = 20.0) -> set[str]:
        """Wait until the dial-out agents `names` hold their tunnels; those that do not."""
        missing: set[str] = self._run(self.registry.wait_connected(names, seconds))
        return missing

    def drop(self, name: str) -> None:
        """Cut `name`'s tunnel (its agent reconnects after its backoff), as a flaky link does."""
        agent = self.nodes[name].agent
        if agent is not None and agent.dialout is not None:
            self._run(agent.dialout.drop())

    def token(self, name: str) -> str:
        """The token `name`'s agent holds: derived from its name and address (per-node), or
        from its name alone for a dial-out node."""
        node = self.nodes[name]
        if self.token_mode == "shared":
            return TOKEN
        if node.dial_out:
            return dial_out_token(TOKEN, name)
        return node_token(TOKEN, name, node.address or node.url)

    def readdress(self, name: str, address: str) -> None:
        """The controller reaches `name` at `address` (a proxy in front of it): restart its
        agent (same port and data dir) with the token of that address, as an operator
        installs `gitopsd agent-token NAME --address ADDRESS` on a node behind a proxy."""
        self.nodes[name].address = address
        self.stop(name)
        self.start(name)

    def start(self, name: str) -> None:
        """Start (or restart, on the same port: same address, same token) `name`'s agent."""
        node = self.nodes[name]
        restart = node.port != 0
        # The token is derived from the address, so the port is chosen before the agent
        # starts; another process may take that free port first: choose again.
        for attempt in range(20):
            if not restart:
                node.port = _free_port()
            settings = AgentSettings(
                name=node.name,
                region=node.region,
                labels=node.labels,
                host="127.0.0.1",
                port=node.port,
                data_dir=node.data_dir,
                token=self.token(name),
                controller=(node.controller or self.relay) if node.dial_out else None,
            )
            try:
                node.agent = self._run(start_agent(settings))
                return
            except ConfigError as exc:
                if restart or "cannot listen" not in str(exc) or attempt == 19:
                    raise

    def stop(self, name: str) -> None:
        node = self.nodes[name]
        if node.agent is not None:
            self._run(node.agent.close())
            node.agent = None

    def close(self) -> None:
        for name in list(self.nodes):
            self.stop(name)
        self._run(self._tunnel.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def manifests(self) -> str:
        """EdgeNode manifests for every node of the fleet."""
        docs = []
        for node in self.nodes.values():
            labels = ", ".join(f"{k}: {v}" for k, v in node.labels.items())
            where = "connect: dial-out" if node.dial_out else f'address: "{node.url}"'
            docs.append(
                "apiVersion: gitopsd/v1\nkind: EdgeNode\n"
                f"metadata: {{name: {node.name}, labels: {{{labels}}}}}\n"
                f"spec: {{{where}, region: {node.region}}}\n"
            )
        return "---\n".join(docs)

    # talking to agents --------------------------------------------------------------------

    async def _request(self, method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], str]:
        async with aiohttp.ClientSession() as session, session.request(method, url, **kw) as r:
            return r.status, dict(r.headers), await r.text()

    def invoke(
        self, node: str, function: str, body: bytes = b"", **headers: str
    ) -> tuple[int, str | None, str]:
        """(status, X-Gitopsd-Version, body) of `POST /fn/{function}` on `node`."""
        status, hdrs, text = self._run(
            self._request(
                "POST", f"{self.nodes[node].url}/fn/{function}", data=body, headers=headers
            )
        )
        return status, hdrs.get("X-Gitopsd-Version"), text

    def inventory(self, node: str) -> dict[str, Any]:
        import json

        status, _, text = self._run(
            self._request(
                "GET",
                f"{self.nodes[node].url}/inventory",
                headers={"Authorization": f"Bearer {self.token(node)}"},
            )
        )
        assert status == 200, text
        data: dict[str, Any] = json.loads(text)
        return data

    def inventory_status(self, node: str, token: str) -> int:
        """The status `node`'s agent answers to `GET /inventory` with `token` (401: refused)."""
        status, _, _ = self._run(
            self._request(
                "GET",
                f"{self.nodes[node].url}/inventory",
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        return int(status)

    def serving(self, function: str) -> dict[str, str | None]:
        """Per node, the version that answers an invocation of `function` (None: 404/down)."""
        out: dict[str, str | None] = {}
        for name, node in self.nodes.items():
            if node.agent is None:
                out[name] = None
                continue
            status, version, _ = self.invoke(name, function)
            out[name] = version if status == 200 else None
        return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_fleet(
    root: Path, token_mode: Literal["per-node", "shared"] = "per-node"
) -> Iterator[LocalFleet]:
    """A LocalFleet that is closed on exit."""
    fleet = LocalFleet(root, token_mode)
    try:
        yield fleet
    finally:
        fleet.close()


class TrafficGenerator:
    """Background requests to one function on every node, as real users would send them."""

    def __init__(self, fleet: LocalFleet, function: str) -> None:
        self.fleet = fleet
        self.function = function
        self.sent = 0
        self._stop = asyncio.Event()
        self._future: Any = None

    async def _loop(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                for i, node in enumerate(list(self.fleet.nodes.values())):
                    if node.agent is None:
                        continue
                    url = f"{node.url}/fn/{self.function}"
                    try:
                        async with session.post(url, headers={"X-User-Id": f"u{i}-{self.sent}"}):
                            self.sent += 1
                    except aiohttp.ClientError:
                        pass
                await asyncio.sleep(0.005)

    def __enter__(self) -> TrafficGenerator:
        self._stop = asyncio.Event()
        self._future = asyncio.run_coroutine_threadsafe(self._loop(), self.fleet.loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.fleet.loop.call_soon_threadsafe(self._stop.set)
        self._future.result(timeout=30)
