"""An agent's answer arrives in as many TCP writes as it likes: the controller reads the whole
body (up to its cap), not just the first chunk it happens to have buffered."""

from __future__ import annotations

import asyncio
import json

from gitopsd.fleet.client import AgentClient
from gitopsd.http_body import read_capped
from tests.fleetfixture import TOKEN


def big_inventory(functions: int) -> bytes:
    versions = {"1.0.0": {"sha256": "ab" * 32, "limits": {"memoryMiB": 1, "timeoutMs": 100}}}
    fns = {
        f"fn-{i:04d}": {"versions": versions, "traffic": [{"version": "1.0.0", "percent": 100}]}
        for i in range(functions)
    }
    inventory = {
        "node": "split",
        "region": "r1",
        "labels": {},
        "generation": 5,
        "memoryBudgetMiB": 100_000,
        "memoryUsedMiB": functions,
        "functions": fns,
    }
    return json.dumps(inventory).encode()


async def test_an_inventory_sent_in_several_writes_is_read_whole() -> None:
    body = big_inventory(1200)  # ~200 KB: more than aiohttp has buffered at first
    pieces = [body[i : i + 16_384] for i in range(0, len(body), 16_384)]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(
                b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: "split-5"\r\n'
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.002)  # separate writes, so separate reads
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, AgentClient({"split": url}, TOKEN, retries=0) as client:
        inventory = await client.inventory("split")
        live = await client.live_state(["split"])
    assert len(inventory.functions) == 1200
    assert live.errors == {}
    assert len(live.nodes["split"].functions) == 1200


async def test_read_capped_stops_one_byte_past_the_cap() -> None:
    stream = asyncio.StreamReader()
    for _ in range(10):
        stream.feed_data(b"x" * 1000)
    stream.feed_eof()
    reader = _AsAiohttp(stream)
    assert len(await read_capped(reader, 4_500)) == 4_501  # type: ignore[arg-type]


class _AsAiohttp:
    """asyncio's StreamReader has aiohttp's `read(n)` semantics (what is buffered, up to n)."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream

    async def read(self, n: int) -> bytes:
        return await self.stream.read(n)
