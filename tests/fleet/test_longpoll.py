"""The raw held-request connection reads exactly what an agent sends and refuses the rest
(the watch then ends and the pass asks that agent through the full client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gitopsd.fleet.longpoll import HeldConnection, LongPollError


@pytest.fixture
async def canned() -> AsyncIterator[tuple[str, list[bytes], list[bytes]]]:
    """A server that answers each request with the next canned answer; records requests."""
    answers: list[bytes] = []
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                requests.append(await reader.readuntil(b"\r\n\r\n"))
            except asyncio.IncompleteReadError:
                break
            writer.write(answers.pop(0))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", answers, requests


async def test_304_then_200_on_one_kept_alive_connection(
    canned: tuple[str, list[bytes], list[bytes]],
) -> None:
    base, answers, requests = canned
    body = b'{"node": "n", "generation": 2}'
    answers += [
        b'HTTP/1.1 304 Not Modified\r\nETag: "b-1"\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nETag: "b-2"\r\nContent-Length: %d\r\n\r\n%s' % (len(body), body),
    ]
    conn = HeldConnection(base, "Bearer tok", 1 << 20)
    first = await conn.get('"b-1"', 30, 5)
    second = await conn.get('"b-1"', 30, 5)
    conn.close()
    assert (first.status, first.etag, first.body) == (304, '"b-1"', None)
    assert (second.status, second.etag, second.body) == (
        200,
        '"b-2"',
        {"node": "n", "generation": 2},
    )
    assert requests[0].startswith(b"GET /inventory?wait=30 HTTP/1.1\r\n")
    assert b"Authorization: Bearer tok\r\n" in requests[0]
    assert b'If-None-Match: "b-1"\r\n' in requests[0]
    assert len(requests) == 2  # the second request went over the same connection


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "chunked",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", "answer refused, 2000 bytes"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnot j", "JSONDecodeError"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "IncompleteReadError"),
    ],
)
async def test_what_an_agent_does_not_send_is_an_error(
    canned: tuple[str, list[bytes], list[bytes]], answer: bytes, why: str
) -> None:
    base, answers, _ = canned
    answers.append(answer)
    conn = HeldConnection(base, None, 1000)
    with pytest.raises(LongPollError, match=why):
        await conn.get('"x"', 30, 5)


def test_only_plain_http_addresses() -> None:
    with pytest.raises(LongPollError, match="http://"):
        HeldConnection("https://edge.example:9100", None, 1000)
