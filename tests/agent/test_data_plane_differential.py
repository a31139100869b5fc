"""The fast path answers every request exactly as aiohttp does (issue 15 item 4).

Hypothesis writes requests around what the fast path serves (request lines, headers, line
ends, Content-Length spellings, bodies, with hostile bytes mixed in); each is sent to the
agent's port and to a second port serving only the agent's aiohttp application, and the two
byte streams (without the Date header) must be equal. A plain call with `Connection: close`
follows each request, so that every exchange ends with the server closing.

The agent runs on an event loop in a thread of its own: Hypothesis drives plain sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gitopsd.agent import RunningAgent, Runtime, start_agent
from tests.agent.conftest import TOKEN, settings_for
from tests.agent.test_data_plane import without_date
from tests.wasm_modules import handler_wasm

T = TypeVar("T")


class Ports:
    """The agent's port and the aiohttp-only port."""

    def __init__(self, agent: int, aiohttp_only: int) -> None:
        self.agent = agent
        self.aiohttp_only = aiohttp_only


LIMITS = {"timeoutMs": 10_000}


def _deploy(agent: RunningAgent) -> None:
    module = handler_wasm(behaviour="echo")
    digest = hashlib.sha256(module).hexdigest()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path, body in (
        (f"/modules/{digest}", module),
        # A generous timeout: a call timing out on a busy machine would differ by chance.
        ("/functions/f/versions/1", json.dumps({"sha256": digest, "limits": LIMITS}).encode()),
    ):
        request = urllib.request.Request(agent.url + path, data=body, method="PUT", headers=auth)
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status in (200, 201)


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory, runtime: Runtime) -> Iterator[Ports]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(60)

    data: Path = tmp_path_factory.mktemp("differential") / "data"
    agent: RunningAgent = run(start_agent(settings_for(data), runtime))

    async def second_port() -> asyncio.Server:
        return await loop.create_server(agent._runner.server, "127.0.0.1", 0)

    server: asyncio.Server = run(second_port())
    try:
        _deploy(agent)
        yield Ports(agent.port, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        run(agent.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def exchange(port: int, request: bytes) -> bytes:
    """Everything the server writes until it closes (or, failing that, b"<no close>")."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<no close>")
        except ConnectionResetError:
            chunks.append(b"<reset>")
    return b"".join(chunks)


PLAIN = b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nContent-Length: 4\r\n\r\nping"
CLOSING_CALL = (
    b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nConnection: close\r\nContent-Length: 3\r\n\r\nend"
)

TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Bytes of a header value without CR and LF (those come from LINE_ENDS and VALUES only,
# so that a request never ends half-way through a head both servers keep waiting for).
VALUE_BYTES = bytes(b for b in range(256) if b not in b"\r\n")

METHODS = st.sampled_from([b"POST"] * 8 + [b"GET", b"PUT", b"post", b"POS", b"POST\x00"])
SPACES = st.sampled_from([b" "] * 8 + [b"  ", b"\t"])
TARGETS = st.one_of(
    st.sampled_from(
        [
            b"/fn/f",
            b"/fn/f?w=10&h=2",
            b"/fn/%66",
            b"/fn/f?a=%20",
            b"/fn/f?a+b",
            b"/fn/f#frag",
            b"/fn/.hidden",
            b"/fn/f/more",
            b"/fn/nope",
            b"/healthz",
            b"/fn/f?a=\xff",
            b"/fn/f?a=\xc3\xa9",
            b"http://edge/fn/f",
            b"*",
            b"/fn/" + b"f" * 200,
            b"/fn/f?" + b"q" * 9000,
        ]
    ),
    st.builds(lambda q: b"/fn/f?" + q, st.binary(max_size=16).filter(lambda q: b" " not in q)),
)
VERSIONS = st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1"])
LINE_ENDS = st.sampled_from([b"\r\n"] * 12 + [b"\n", b" \r\n", b"\r\r\n"])
NAMES = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"host",
            b"X-User-Id",
            b"Connection",
            b"Content-Type",
            b"ETag",
            b"User-Agent",
            b"Max-Forwards",
            b"Transfer-Encoding",
            b"Expect",
            b"Upgrade",
            b"Cookie",
            b"X Bad",
            b"X-Bad ",
            b"",
            b"X-" + b"n" * 8200,
        ]
    ),
    st.binary(min_size=1, max_size=8).filter(lambda n: all(b in TOKEN_CHARS for b in n)),
)
VALUES = st.one_of(
    st.sampled_from(
        [
            b"edge",
            b"close",
            b"keep-alive, Close",
            b"keep-alive",
            b"upgrade",
            b"websocket",
            b"chunked",
            b"100-continue",
            b"\xc3\xa9t\xc3\xa9",
            b"\xff\xfe",
            b"  spaced \t ",
            b"a\x00b",
            b"a\rb",
            b"a\x7fb",
            b"",
            b"a\tb",
            b"v" * 8190,
        ]
    ),
    st.binary(max_size=12).map(lambda v: bytes(b for b in v if b in VALUE_BYTES)),
)
# How Content-Length is spelled for a body of n bytes (never more than the body holds, so
# that neither server waits for bytes that never come).
LENGTHS = st.sampled_from(
    [
        lambda n: str(n).encode(),
        lambda n: str(n).encode(),
        lambda n: b"0" + str(n).encode(),
        lambda n: str(n).encode() + b" ",
        lambda n: b"+" + str(n).encode(),
        lambda n: b"-1",
        lambda n: b"0x" + str(n).encode(),
        lambda n: b"",
        lambda n: b"9" * 20,
        lambda n: b"1" * 5000,
        lambda n: b"0",
        lambda n: str(n).encode() + b", " + str(n).encode(),
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    line = draw(METHODS) + draw(SPACES) + draw(TARGETS) + draw(SPACES) + draw(VERSIONS)
    body = draw(st.binary(max_size=64))
    fields = draw(st.lists(st.tuples(NAMES, VALUES, LINE_ENDS), max_size=5))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", b"edge", b"\r\n"))
    if draw(st.booleans()):
        spelled = draw(LENGTHS)(len(body))
        fields.insert(draw(st.integers(0, len(fields))), (b"Content-Length", spelled, b"\r\n"))
    separator = draw(st.sampled_from([b": ", b":", b":  ", b": \t", b" : "]))
    head = line + draw(LINE_ENDS)
    for name, value, end in fields:
        head += name + separator + value + end
    return head + draw(LINE_ENDS) + body


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
# Found by this test on the hand-written parser: aiohttp answers a read that holds a bad
# request with a 400 alone, dropping the good requests before it in that read.
@example(request=PLAIN + b"\x00")
@example(request=PLAIN + b"GET /inventory HTTP/1.1\r\nHost: edge\r\nHost: edge\r\n\r\n")
@example(request=PLAIN + b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nX-Long: " + b"v" * 9000)
@example(request=PLAIN + b"POST /fn/f HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
@example(request=b"\r\n" + PLAIN)
def test_every_request_gets_exactly_aiohttp_s_answer(ports: Ports, request: bytes) -> None:
    through_agent = exchange(ports.agent, request + CLOSING_CALL)
    through_aiohttp = exchange(ports.aiohttp_only, request + CLOSING_CALL)
    assert without_date(through_agent) == without_date(through_aiohttp), request[:300]
