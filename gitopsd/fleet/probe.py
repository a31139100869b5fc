"""The cheap question of an unchanged pass: "agent, is your inventory still at this ETag?"

aiohttp's client costs ~65 µs of CPU per request here, so asking 500 agents through it costs
~40 ms a pass even when every answer is a bodiless 304. This probe keeps one raw HTTP/1.1
connection per agent open and writes a prepared conditional GET on each: ~10 µs a node.
It only ever answers "unchanged" (304); anything else (a changed inventory, an error, no
answer in time, https) leaves the node to the full aiohttp path, which reads, retries and
reports as before. Connections that misbehave are closed and made again next time. Answer
heads are parsed by httptools (http_answer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from gitopsd.errors import AgentError
from gitopsd.fleet.http_answer import BadAnswer, parse_answer_head


class _Batch:
    """Counts the replies of one round; `done` resolves when every node has answered."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.unchanged: set[str] = set()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def reply(self, node: str, unchanged: bool) -> None:
        if unchanged:
            self.unchanged.add(node)
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


class _Connection(asyncio.Protocol):
    """One kept-alive connection to one agent, one request in flight at a time."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.batch: _Batch | None = None
        self.usable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > 16384:
                self._finish(False)
            return
        head = bytes(self.buffer[: end + 4])
        del self.buffer[: end + 4]
        try:
            answer = parse_answer_head(head)
        except BadAnswer:
            self._finish(False)
            return
        unchanged = answer.status == 304
        # A 304 has no body. Anything else may have one we will not read: drop the
        # connection rather than parse it, the full path asks again.
        keep = unchanged and answer.keep_alive and not self.buffer
        self._finish(unchanged, keep)

    def _finish(self, unchanged: bool, keep: bool = False) -> None:
        batch, self.batch = self.batch, None
        if not keep:
            self.close()
        if batch is not None:
            batch.reply(self.node, unchanged)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._finish(False)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


class InventoryProbe:
    """Conditional `GET /inventory` to many agents over kept-alive raw connections."""

    def __init__(
        self,
        authorization: Callable[[str, str], str | None],
        timeout: float,
        concurrency: int,
    ) -> None:
        """`authorization(node, base)` is the node's own header value (fleet/tokens.py);
        an AgentError from it (an address outside the allow-list) skips the node."""
        self._authorization = authorization
        self._timeout = timeout
        self._concurrency = max(1, concurrency)
        self._conns: dict[str, tuple[str, _Connection]] = {}
        self._requests: dict[tuple[str, str, str], bytes] = {}

    async def unchanged(self, etags: Mapping[str, tuple[str, str]]) -> set[str]:
        """Of `etags` (node -> (base URL, ETag)), the nodes that answered 304 Not Modified."""
        nodes = list(etags)
        found: set[str] = set()
        for start in range(0, len(nodes), self._concurrency):
            chunk = {n: etags[n] for n in nodes[start : start + self._concurrency]}
            found |= await self._round(chunk)
        return found

    def _request(self, node: str, base: str, etag: str) -> bytes | None:
        """The conditional GET for this node, agent and ETag (prepared once per triple)."""
        key = (node, base, etag)
        found = self._requests.get(key)
        if found is None:
            url = urlsplit(base)
            if url.scheme != "http" or not url.hostname:
                return None
            try:
                authorization = self._authorization(node, base)
            except AgentError:
                return None  # the full path says why
            auth = f"Authorization: {authorization}\r\n" if authorization else ""
            host = url.netloc.rpartition("@")[2]
            found = (
                f"GET {url.path.rstrip('/')}/inventory HTTP/1.1\r\nHost: {host}\r\n"
                f"{auth}If-None-Match: {etag}\r\n\r\n"
            ).encode("latin-1")
            if len(self._requests) > 65536:
                self._requests.clear()
            self._requests[key] = found
        return found

    async def _round(self, etags: Mapping[str, tuple[str, str]]) -> set[str]:
        requests: dict[str, bytes] = {}
        for node, (base, etag) in etags.items():
            request = self._request(node, base, etag)
            if request is not None:
                requests[node] = request
        await self._connect([n for n in requests if not self._open(n, etags[n][0])], etags)
        batch = _Batch(0)
        for node, request in requests.items():
            held = self._conns.get(node)
            if held is None or held[1].transport is None or not held[1].usable:
                continue
            conn = held[1]
            conn.buffer.clear()
            conn.batch = batch
            batch.left += 1
            assert conn.transport is not None
            conn.transport.write(request)
        if batch.left:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(batch.done), self._timeout)
        for node in requests:
            held = self._conns.get(node)
            if held is not None and held[1].batch is batch:  # no answer in time
                held[1].batch = None
                held[1].close()
        return set(batch.unchanged)

    def _open(self, node: str, base: str) -> bool:
        held = self._conns.get(node)
        return held is not None and held[0] == base and held[1].usable

    async def _connect(self, nodes: list[str], etags: Mapping[str, tuple[str, str]]) -> None:
        loop = asyncio.get_running_loop()

        async def one(node: str) -> None:
            base = etags[node][0]
            old = self._conns.pop(node, None)
            if old is not None:
                old[1].close()
            url = urlsplit(base)
            host, port = url.hostname or "", url.port or 80
            with contextlib.suppress(OSError, TimeoutError):
                _transport, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Connection(node), host, port),
                    self._timeout,
                )
                self._conns[node] = (base, conn)

        if nodes:
            await asyncio.gather(*(one(n) for n in nodes))

    def close(self) -> None:
        for _base, conn in self._conns.values():
            conn.close()
        self._conns.clear()
