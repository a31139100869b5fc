"""EdgeCluster: the fleet of edge agents as the Python API sees it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

import aiohttp

from gitopsd.api._run import run_blocking
from gitopsd.api.models import EdgeNode, EdgeNodeStatus
from gitopsd.errors import AgentError
from gitopsd.fleet.client import AgentClient, gather_nodes
from gitopsd.fleet.live import LiveNode


class Invocation(NamedTuple):
    """The answer of `POST /fn/{function}`: status, the version that served, the body."""

    status: int
    version: str | None
    body: bytes


class EdgeCluster:
    """A set of edge nodes reached through their agents' HTTP API with one bearer token.

    Synchronous methods run their own event loop: do not call them from inside a running
    event loop (they raise RuntimeError); use AgentClient there.
    """

    def __init__(
        self,
        nodes: Sequence[EdgeNode],
        token: str | None = None,
        *,
        timeout: float = 10.0,
        concurrency: int = 64,
    ) -> None:
        self._nodes: dict[str, EdgeNode] = {}
        for node in nodes:
            if node.name in self._nodes:
                raise ValueError(f"two edge nodes are named {node.name!r}")
            self._nodes[node.name] = node
        self.token = token
        self.timeout = timeout
        self.concurrency = concurrency
        self._inventories: dict[str, LiveNode] = {}

    # the nodes ----------------------------------------------------------------------------

    @property
    def nodes(self) -> list[EdgeNode]:
        """Every node, in the order given, with the status of the last refresh."""
        return list(self._nodes.values())

    def node(self, name: str) -> EdgeNode:
        """The node called `name`; KeyError if the cluster has none."""
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no edge node named {name!r} in the cluster") from None

    def online_nodes(self) -> list[EdgeNode]:
        """Nodes whose agent answered the last refresh."""
        return [n for n in self._nodes.values() if n.status is EdgeNodeStatus.ONLINE]

    @property
    def addresses(self) -> dict[str, str]:
        return {n.name: n.address for n in self._nodes.values()}

    def client(self, names: Iterable[str] | None = None) -> AgentClient:
        """An AgentClient (use `async with`) for `names`, default every node."""
        wanted = self._nodes if names is None else [self.node(n).name for n in names]
        addresses = {n: self._nodes[n].address for n in wanted}
        return AgentClient(addresses, self.token, self.timeout, self.concurrency)

    # inventories --------------------------------------------------------------------------

    def refresh(self) -> list[EdgeNode]:
        """Ask every agent for its inventory; set each node ONLINE, DEGRADED or OFFLINE."""
        return run_blocking("EdgeCluster.refresh", self.refresh_async)

    async def refresh_async(self) -> list[EdgeNode]:
        async with self.client() as client:
            await self.read_inventories(client)
        return self.nodes

    async def read_inventories(self, client: AgentClient) -> dict[str, LiveNode | Exception]:
        """Inventories of the client's nodes; also updates their status and the cache."""
        results = await gather_nodes(client.addresses, client.inventory)
        for name, result in results.items():
            if isinstance(result, LiveNode):
                self._inventories[name] = result
                status = EdgeNodeStatus.ONLINE
            else:
                self._inventories.pop(name, None)
                answered = isinstance(result, AgentError) and result.status is not None
                status = EdgeNodeStatus.DEGRADED if answered else EdgeNodeStatus.OFFLINE
            if name in self._nodes:
                self._nodes[name] = replace(self._nodes[name], status=status)
        return results

    def inventory(self, name: str) -> LiveNode:
        """What the agent on `name` runs now (read fresh); AgentError if it does not answer."""
        self.node(name)

        async def read() -> LiveNode:
            async with self.client([name]) as client:
                result = (await self.read_inventories(client))[name]
            if isinstance(result, Exception):
                raise result
            return result

        return run_blocking("EdgeCluster.inventory", read)

    @property
    def inventories(self) -> Mapping[str, LiveNode]:
        """The inventories read by the last refresh (nodes that answered)."""
        return dict(self._inventories)

    # the data plane -----------------------------------------------------------------------

    def invoke(
        self,
        node: str,
        function: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Invocation:
        """Call `function` on `node` as a user would (`POST /fn/{function}`, no token)."""
        url = f"{self.node(node).address.rstrip('/')}/fn/{function}"

        async def call() -> Invocation:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.post(url, data=body, headers=dict(headers or {})) as resp,
                ):
                    data = await resp.read()
                    return Invocation(resp.status, resp.headers.get("X-Gitopsd-Version"), data)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise AgentError(node, f"unreachable at {url}: {exc!r}") from exc

        return run_blocking("EdgeCluster.invoke", call)
