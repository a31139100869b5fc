"""Answer heads of the daemon's raw connections are parsed by httptools (issue 15 item 4):
the held request (longpoll.py) and the conditional GET (probe.py) read `Connection` as a
token list, refuse what is not HTTP, and keep a connection only when HTTP says they may."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gitopsd.fleet.http_answer import BadAnswer, parse_answer_head
from gitopsd.fleet.longpoll import HeldConnection
from gitopsd.fleet.probe import InventoryProbe


def test_an_answer_head_is_read_as_llhttp_reads_it() -> None:
    answer = parse_answer_head(
        b'HTTP/1.1 304 Not Modified\r\nETag:  "b-1" \r\nX-A: 1\r\nx-a: 2\r\n\r\n'
    )
    assert (answer.status, answer.keep_alive) == (304, True)
    assert answer.headers == {"etag": '"b-1"', "x-a": "2"}


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 304 Not Modified\r\nConnection: keep-alive, Close\r\n\r\n", False),
        (b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n", False),
        (b"HTTP/1.0 304 Not Modified\r\n\r\n", False),
        (b"HTTP/1.0 304 Not Modified\r\nConnection: keep-alive\r\n\r\n", True),
        (b"HTTP/1.1 304 Not Modified\r\nConnection: Keep-Alive\r\n\r\n", True),
    ],
)
def test_keep_alive_follows_the_connection_tokens(head: bytes, keep_alive: bool) -> None:
    assert parse_answer_head(head).keep_alive is keep_alive


@pytest.mark.parametrize(
    "head",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 3040 Not Modified\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nX-A: a\x00b\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\n",  # no blank line: not a whole head
    ],
)
def test_what_is_not_an_answer_head_is_refused(head: bytes) -> None:
    with pytest.raises(BadAnswer):
        parse_answer_head(head)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """Answers each request with the next canned answer; counts connections."""
    answers: list[bytes] = []
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while answers:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(answers.pop(0))
            await writer.drain()
        writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield f"http://127.0.0.1:{port}", answers, connections


CLOSING_304 = b'HTTP/1.1 304 Not Modified\r\nETag: "b-1"\r\nConnection: keep-alive, close\r\n\r\n'
KEPT_304 = b'HTTP/1.1 304 Not Modified\r\nETag: "b-1"\r\n\r\n'


async def test_the_held_request_closes_when_the_agent_says_close_in_a_token_list(
    server: tuple[str, list[bytes], list[int]],
) -> None:
    base, answers, connections = server
    answers += [CLOSING_304, KEPT_304]
    conn = HeldConnection(base, None, 1 << 20)
    try:
        assert (await conn.get('"b-1"', 30, 5)).status == 304
        assert (await conn.get('"b-1"', 30, 5)).status == 304
    finally:
        conn.close()
    assert len(connections) == 2  # the agent said close: the second request connected again


async def test_the_probe_drops_a_connection_the_agent_closes(
    server: tuple[str, list[bytes], list[int]],
) -> None:
    base, answers, connections = server
    answers += [CLOSING_304, KEPT_304, KEPT_304]
    probe = InventoryProbe(lambda _node, _base: None, timeout=5, concurrency=4)
    try:
        assert await probe.unchanged({"n": (base, '"b-1"')}) == {"n"}
        assert await probe.unchanged({"n": (base, '"b-1"')}) == {"n"}
        assert await probe.unchanged({"n": (base, '"b-1"')}) == {"n"}
    finally:
        probe.close()
    # A new connection after the one the agent closed, then that one kept.
    assert len(connections) == 2


async def test_the_probe_counts_a_garbled_answer_as_changed(
    server: tuple[str, list[bytes], list[int]],
) -> None:
    base, answers, _ = server
    answers += [b"HTTP/1.1 304 Not Modified\r\nBad Name: x\r\n\r\n"]
    probe = InventoryProbe(lambda _node, _base: None, timeout=5, concurrency=4)
    try:
        assert await probe.unchanged({"n": (base, '"b-1"')}) == set()
    finally:
        probe.close()
