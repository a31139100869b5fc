"""The listening socket: plain invocations on the agent's own HTTP/1.1 path, the rest on aiohttp.

Raw sockets, so each test says byte by byte what the client sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from gitopsd.agent import RunningAgent, Runtime, start_agent
from gitopsd.agent.data_plane import MAX_HEADERS, parse_head
from tests.agent.conftest import Client, settings_for
from tests.wasm_modules import handler_wasm


def post(path: str, body: bytes = b"", headers: str = "") -> bytes:
    """A plain call's bytes; `headers` are extra "Name: value\\r\\n" lines."""
    head = f"POST {path} HTTP/1.1\r\nHost: edge\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


PLAIN_CALL = post("/fn/f", b"ping")


class Answer:
    """One HTTP/1.1 answer read off a raw connection."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @classmethod
    async def read(cls, reader: asyncio.StreamReader) -> Answer:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return cls(int(status_line.split(" ")[1]), headers, body)


async def connect(agent: RunningAgent) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", agent.port)


async def exchange(agent: RunningAgent, request: bytes) -> Answer:
    reader, writer = await connect(agent)
    writer.write(request)
    try:
        return await Answer.read(reader)
    finally:
        writer.close()


def fast_connections(agent: RunningAgent) -> int:
    """Connections the agent's own path holds (not handed to aiohttp)."""
    return sum(1 for c in agent._plane.connections if c.delegate is None)


# --- which requests the fast path takes ------------------------------------------------


def test_a_plain_call_is_parsed() -> None:
    head = parse_head(
        b"POST /fn/img.resize-2?w=10&h=2 HTTP/1.1\r\nHost: edge\r\n"
        b"X-User-Id:  u-7 \r\nContent-Length: 12\r\nConnection: keep-alive, Close\r\n"
    )
    assert head is not None
    assert (head.function, head.path, head.query) == (
        "img.resize-2",
        "/fn/img.resize-2",
        "w=10&h=2",
    )
    assert head.headers == [
        ("Host", "edge"),
        ("X-User-Id", "u-7"),
        ("Content-Length", "12"),
        ("Connection", "keep-alive, Close"),
    ]
    assert (head.content_length, head.close) == (12, True)


HOST = b"Host: edge\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"POST /fn/f HTTP/1.1\r\nContent-Length: 0\r\n",  # no Host: aiohttp answers 400
        b"GET /fn/f HTTP/1.1\r\n" + HOST,  # another method: aiohttp answers 405
        b"POST /fn/f HTTP/1.0\r\n" + HOST,  # HTTP/1.0 keep-alive rules
        b"POST /fn/%66 HTTP/1.1\r\n" + HOST,  # percent-escapes need decoding
        b"POST /fn/f?a=%20 HTTP/1.1\r\n" + HOST,
        b"POST /fn/f?a+b HTTP/1.1\r\n" + HOST,
        b"POST /fn/f/more HTTP/1.1\r\n" + HOST,  # not the /fn/{fn} route
        b"POST /fn/.hidden HTTP/1.1\r\n" + HOST,  # not a function name
        b"POST /healthz HTTP/1.1\r\n" + HOST,
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n",
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\n",
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"Upgrade: websocket\r\n",
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\ncontent-length: 1\r\n",
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n",
        b"POST /fn/f HTTP/1.1\r\n" + HOST + HOST,  # aiohttp refuses a repeated Host
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"X-Note value\r\n",  # no colon
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"X-Note: a\r\n folded\r\n",  # obsolete folding
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"X-Note: a\rb\r\n",  # a lone CR
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"X-Note: a\x00b\r\n",  # a control character
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"X-A: b\r\n" * MAX_HEADERS,  # too many
    ],
)
def test_anything_else_is_left_to_aiohttp(head: bytes) -> None:
    assert parse_head(head) is None
    assert parse_head(b"POST /fn/f HTTP/1.1\r\n" + HOST) is not None  # the same, plain


# --- served on the fast path -------------------------------------------------------------


async def test_pipelined_calls_are_answered_in_order_on_one_connection(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("f", "1.0.0", wasm["echo"])
    reader, writer = await connect(agent)
    writer.write(PLAIN_CALL + post("/fn/f?x=1", b"two"))
    first_answer, second_answer = await Answer.read(reader), await Answer.read(reader)
    assert (first_answer.status, first_answer.body) == (200, b"helloping")
    assert (second_answer.status, second_answer.body) == (200, b"hellotwo")
    assert first_answer.headers["x-gitopsd-version"] == "1.0.0"
    assert first_answer.headers["content-type"] == "application/octet-stream"
    assert "date" in first_answer.headers
    assert fast_connections(agent) == 1  # served without aiohttp
    writer.close()


async def test_a_body_that_arrives_late_is_waited_for(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("f", "1", wasm["echo"])
    reader, writer = await connect(agent)
    writer.write(post("/fn/f", b"first-half")[:-5])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"-half")
    answer = await Answer.read(reader)
    assert (answer.status, answer.body) == (200, b"hellofirst-half")
    writer.close()


async def test_a_client_pipelining_behind_a_slow_call_is_paused_then_served(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("spin", "1", wasm["loop"], limits={"memoryMiB": 1, "timeoutMs": 200})
    await client.deploy("echo", "1", wasm["echo"])
    reader, writer = await connect(agent)
    writer.write(post("/fn/spin"))
    # More than a request head's worth of pipelined calls while the slow one runs: the
    # agent stops reading until it has answered, then serves them all in order.
    bodies = [bytes([65 + i]) * 65536 for i in range(20)]
    for body in bodies:
        writer.write(post("/fn/echo", body))
    assert (await Answer.read(reader)).status == 504
    for body in bodies:
        answer = await Answer.read(reader)
        assert (answer.status, answer.body) == (200, b"hello" + body)
    writer.close()


async def test_connection_close_is_honoured(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("f", "1", wasm["ok"])
    reader, writer = await connect(agent)
    writer.write(
        b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    answer = await Answer.read(reader)
    assert (answer.status, answer.headers["connection"]) == (200, "close")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the agent
    writer.close()


async def test_fast_path_failures_keep_the_contract(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("trap", "2.0.0", wasm["trap"])
    unknown = await exchange(
        agent, b"POST /fn/nope HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\n\r\n"
    )
    assert unknown.status == 404
    assert unknown.headers["content-type"] == "application/json; charset=utf-8"
    assert "nope" in json.loads(unknown.body)["error"]
    assert "x-gitopsd-version" not in unknown.headers
    trapped = await exchange(
        agent, b"POST /fn/trap HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\n\r\n"
    )
    assert (trapped.status, trapped.headers["x-gitopsd-version"]) == (500, "2.0.0")
    assert "trap" in json.loads(trapped.body)["error"]


async def test_an_answer_without_a_body_keeps_the_connection_in_step(
    client: Client, agent: RunningAgent
) -> None:
    # What a module writes after `status: 204` must not reach the client, who would read
    # it as the start of the next answer; aiohttp answers the same on a handed-over call.
    await client.deploy("f", "1", handler_wasm(reply="status: 204\n\nstray"))
    chunked = b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    for first in (PLAIN_CALL, chunked):
        reader, writer = await connect(agent)
        writer.write(first + PLAIN_CALL)
        for _ in range(2):
            answer = await Answer.read(reader)
            assert (answer.status, answer.headers["x-gitopsd-version"]) == (204, "1")
            assert "content-length" not in answer.headers
        writer.write(b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        assert (await Answer.read(reader)).status == 204
        assert await asyncio.wait_for(reader.read(), 10) == b""  # nothing stray after it
        writer.close()


# --- handed to aiohttp ---------------------------------------------------------------------


async def test_either_path_gives_the_same_answer(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("f", "1", wasm["echo"])
    fast = await exchange(agent, PLAIN_CALL)
    chunked = await exchange(
        agent,
        b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\npi\r\n2\r\nng\r\n0\r\n\r\n",
    )
    escaped = await exchange(agent, PLAIN_CALL.replace(b"/fn/f", b"/fn/%66"))
    for other in (chunked, escaped):
        assert (other.status, other.body) == (fast.status, fast.body) == (200, b"helloping")
        for header in ("content-type", "x-gitopsd-version"):
            assert other.headers[header] == fast.headers[header]


async def test_a_connection_moves_to_aiohttp_at_its_first_other_request(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("f", "1", wasm["ok"])
    reader, writer = await connect(agent)
    writer.write(PLAIN_CALL)
    assert (await Answer.read(reader)).status == 200
    assert fast_connections(agent) == 1
    # A control request and a call pipelined behind it: aiohttp serves both, in order.
    writer.write(
        b"GET /inventory HTTP/1.1\r\nHost: edge\r\n"
        + f"Authorization: Bearer {agent.token}\r\n\r\n".encode()
        + PLAIN_CALL
    )
    inventory = await Answer.read(reader)
    assert (inventory.status, json.loads(inventory.body)["node"]) == (200, "edge-test-1")
    call = await Answer.read(reader)
    assert (call.status, call.body, call.headers["x-gitopsd-version"]) == (200, b"hello", "1")
    assert fast_connections(agent) == 0
    writer.close()


async def test_control_requests_still_need_the_token(agent: RunningAgent) -> None:
    answer = await exchange(agent, b"GET /inventory HTTP/1.1\r\nHost: edge\r\n\r\n")
    assert answer.status == 401
    assert "bearer token" in json.loads(answer.body)["error"]


async def test_a_body_over_the_cap_is_refused_by_aiohttp(
    tmp_path: Path, runtime: Runtime, wasm: dict[str, bytes]
) -> None:
    agent = await start_agent(settings_for(tmp_path / "d", max_module_bytes=4096), runtime)
    try:
        answer = await exchange(
            agent,
            b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000,
        )
        assert answer.status == 413
        assert "4096-byte size cap" in json.loads(answer.body)["error"]
    finally:
        await agent.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        post("/fn/f").replace(b"Content-Length: 0", b"Content-Length: x"),
        post("/fn/f").replace(b"Host: edge", b"Host: a\r\nHost: b"),
        post("/fn/f").replace(b"Host: edge\r\n", b""),
    ],
)
async def test_a_malformed_request_gets_aiohttp_s_400(
    agent: RunningAgent, request_bytes: bytes
) -> None:
    assert (await exchange(agent, request_bytes)).status == 400


# --- stopping ---------------------------------------------------------------------------


@pytest.fixture
async def stoppable(tmp_path: Path, runtime: Runtime) -> AsyncIterator[RunningAgent]:
    running = await start_agent(settings_for(tmp_path / "data"), runtime)
    yield running
    await running.close()  # idempotent: the tests close it themselves


async def test_stopping_finishes_the_call_in_flight_and_closes_idle_connections(
    stoppable: RunningAgent, wasm: dict[str, bytes]
) -> None:
    agent = stoppable
    async with aiohttp.ClientSession(base_url=agent.url) as session:
        client = Client(agent, session)
        await client.deploy("spin", "1", wasm["loop"], limits={"memoryMiB": 1, "timeoutMs": 300})
        await client.deploy("ok", "1", wasm["ok"])
    idle_reader, idle_writer = await connect(agent)
    idle_writer.write(post("/fn/ok"))
    assert (await Answer.read(idle_reader)).status == 200
    busy_reader, busy_writer = await connect(agent)
    busy_writer.write(post("/fn/spin"))
    await asyncio.sleep(0.05)  # the call is running
    closing = asyncio.create_task(agent.close())
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""
    answer = await Answer.read(busy_reader)
    assert (answer.status, answer.headers["connection"]) == (504, "close")
    assert await asyncio.wait_for(busy_reader.read(), 10) == b""
    await closing
    with pytest.raises(OSError):
        await connect(agent)
    idle_writer.close()
    busy_writer.close()


# --- hostile heads: the same answer as aiohttp's (issue 14, finding 8) ----------------------


@pytest.fixture
async def aiohttp_only(agent: RunningAgent) -> AsyncIterator[int]:
    """A second port serving the agent's aiohttp application without the fast path."""
    server = await asyncio.get_running_loop().create_server(agent._runner.server, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def raw_answer(port: int, request: bytes) -> bytes:
    """Everything the server writes until it closes (aiohttp closes after a 400)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def without_date(answer: bytes) -> bytes:
    return b"\r\n".join(
        line for line in answer.split(b"\r\n") if not line.lower().startswith(b"date:")
    )


HOSTILE = {
    "content-length-of-5000-digits": post("/fn/f").replace(b": 0", b": " + b"1" * 5000),
    "content-length-of-20-digits": post("/fn/f").replace(b": 0", b": " + b"9" * 20),
    "query-byte-0xff": post("/fn/f?a=0").replace(b"a=0", b"a=\xff"),
    "query-in-utf-8": post("/fn/f?a=é"),
    "bare-lf-everywhere": b"POST /fn/f HTTP/1.1\nHost: edge\nContent-Length: 0\n\n",
    "bare-lf-ending-the-head": b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\n\n",
    "bare-lf-after-a-header": b"POST /fn/f HTTP/1.1\r\nHost: edge\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_head_gets_exactly_aiohttp_s_answer(
    client: Client, agent: RunningAgent, aiohttp_only: int, request_bytes: bytes
) -> None:
    await client.deploy("f", "1", handler_wasm())
    through_agent = await raw_answer(agent.port, request_bytes)
    through_aiohttp = await raw_answer(aiohttp_only, request_bytes)
    assert through_agent.startswith(b"HTTP/1.0 400 Bad Request\r\n"), through_agent[:200]
    assert without_date(through_agent) == without_date(through_aiohttp)


# Headers sent twice: the fast path's list of headers aiohttp refuses to see twice
# (data_plane.SINGLETON_HEADERS, its own copy) and common ones aiohttp accepts twice.
REPEATABLE = [
    "Accept",
    "Age",
    "Authorization",
    "Content-Encoding",
    "Content-Language",
    "Content-Location",
    "Content-Range",
    "Content-Type",
    "Cookie",
    "Date",
    "ETag",
    "Expires",
    "From",
    "If-Match",
    "If-None-Match",
    "If-Range",
    "Last-Modified",
    "Location",
    "Max-Forwards",
    "Range",
    "Referer",
    "Retry-After",
    "Server",
    "User-Agent",
    "Via",
    "Warning",
    "X-Forwarded-For",
]


@pytest.mark.parametrize("name", REPEATABLE)
async def test_a_header_sent_twice_gets_exactly_aiohttp_s_answer(
    client: Client, agent: RunningAgent, aiohttp_only: int, name: str
) -> None:
    # A generous timeout: a call timing out on a busy machine would differ by chance.
    await client.deploy("f", "1", handler_wasm(), limits={"timeoutMs": 10_000})
    request_bytes = post("/fn/f", headers=f"{name}: a\r\n{name.lower()}: a\r\n")
    through_agent = await raw_answer(agent.port, request_bytes + post("/fn/f", headers=_CLOSE))
    through_aiohttp = await raw_answer(aiohttp_only, request_bytes + post("/fn/f", headers=_CLOSE))
    assert without_date(through_agent) == without_date(through_aiohttp)


_CLOSE = "Connection: close\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"1" * 5000 + b"\r\n",
        b"POST /fn/f?a=\xff HTTP/1.1\r\n" + HOST,
        b"POST /fn/f?a=\xc3\xa9 HTTP/1.1\r\n" + HOST,
        b"POST /fn/f HTTP/1.1\r\n" + HOST + b"X-Name: \xff\xfe\r\n",  # not UTF-8
    ],
)
def test_heads_aiohttp_must_judge_are_left_to_it(head: bytes) -> None:
    assert parse_head(head) is None


async def test_a_head_trickling_in_is_still_served(
    client: Client, agent: RunningAgent, wasm: dict[str, bytes]
) -> None:
    await client.deploy("f", "1", wasm["echo"])
    reader, writer = await connect(agent)
    for byte in post("/fn/f", b"ping"):
        writer.write(bytes([byte]))
        await writer.drain()
    answer = await Answer.read(reader)
    assert (answer.status, answer.body) == (200, b"helloping")
    assert fast_connections(agent) == 1
    writer.close()


# --- what one client can hold (issue 14, finding 6) ---------------------------------------

QUICK = {"head_timeout_s": 0.2, "body_timeout_s": 0.2, "idle_timeout_s": 0.2}


@pytest.fixture
async def quick(tmp_path: Path, runtime: Runtime) -> AsyncIterator[RunningAgent]:
    """An agent whose deadlines pass in a fifth of a second."""
    running = await start_agent(settings_for(tmp_path / "quick", **QUICK), runtime)
    yield running
    await running.close()


async def read_to_close(reader: asyncio.StreamReader) -> bytes:
    """What the agent writes until it closes the connection."""
    return await asyncio.wait_for(reader.read(), 10)


def refused(agent: RunningAgent, reason: str) -> int:
    return agent._plane.counters.refused[reason]


@pytest.mark.parametrize("first", [b"", PLAIN_CALL[:20], b"GET /healthz HTTP/1.1\r\nHost: e"])
async def test_a_head_that_does_not_arrive_in_time_is_closed(
    quick: RunningAgent, first: bytes
) -> None:
    reader, writer = await connect(quick)
    writer.write(first)
    answer = await read_to_close(reader)
    if first:  # part of a head came: the client is told why
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"request head not complete within 0.2 s" in answer
    else:
        assert answer == b""
    assert refused(quick, "head_timeout") == 1
    assert not quick._plane.connections
    writer.close()


async def test_a_head_on_a_connection_aiohttp_serves_has_the_same_deadline(
    tmp_path: Path, runtime: Runtime
) -> None:
    settings = settings_for(tmp_path / "d", head_timeout_s=0.2, idle_timeout_s=30)
    quick = await start_agent(settings, runtime)
    reader, writer = await connect(quick)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n")
    assert (await Answer.read(reader)).status == 200
    writer.write(b"GET /healthz HTTP/1.1\r\nHost:")
    assert b"HTTP/1.1 408 " in await read_to_close(reader)
    assert refused(quick, "head_timeout") == 1
    writer.close()
    await quick.close()


@pytest.mark.parametrize("request_bytes", [PLAIN_CALL, b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n"])
async def test_an_idle_kept_alive_connection_is_closed(
    quick: RunningAgent, wasm: dict[str, bytes], request_bytes: bytes
) -> None:
    async with aiohttp.ClientSession(base_url=quick.url) as session:
        await Client(quick, session).deploy("f", "1", wasm["echo"])
    reader, writer = await connect(quick)
    writer.write(request_bytes)
    assert (await Answer.read(reader)).status == 200
    assert await read_to_close(reader) == b""
    assert refused(quick, "idle_timeout") == 1
    writer.close()


async def test_a_held_inventory_request_outlives_the_deadlines(quick: RunningAgent) -> None:
    # A request in progress (the controller's long poll) has no deadline of the plane's.
    async with aiohttp.ClientSession(base_url=quick.url) as session:
        client = Client(quick, session)
        async with session.get("/inventory", headers=client.auth) as r:
            etag = r.headers["ETag"]
        headers = {**client.auth, "If-None-Match": etag}
        async with session.get("/inventory?wait=0.6", headers=headers) as r:
            assert r.status == 304


@pytest.mark.parametrize("chunked", [False, True], ids=["fast", "aiohttp"])
async def test_a_body_that_does_not_arrive_in_time_is_refused_with_408(
    quick: RunningAgent, wasm: dict[str, bytes], chunked: bool
) -> None:
    async with aiohttp.ClientSession(base_url=quick.url) as session:
        await Client(quick, session).deploy("f", "1", wasm["echo"])
    reader, writer = await connect(quick)
    if chunked:
        writer.write(b"POST /fn/f HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab")
    else:
        writer.write(post("/fn/f", b"ping")[:-2])
    answer = await read_to_close(reader)
    assert b" 408 " in answer.split(b"\r\n")[0]
    assert b"request body not complete within 0.2 s" in answer
    assert refused(quick, "body_timeout") == 1
    assert quick._plane.body_held == 0
    writer.close()


async def test_bodies_held_at_once_are_bounded(
    tmp_path: Path, runtime: Runtime, wasm: dict[str, bytes]
) -> None:
    size = 64 * 1024
    agent = await start_agent(
        settings_for(tmp_path / "d", max_module_bytes=size, body_buffer_bytes=2 * size), runtime
    )
    try:
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            await Client(agent, session).deploy("f", "1", wasm["echo"])
        stalled = []
        for _ in range(2):  # two bodies fill the budget, stalled halfway
            reader, writer = await connect(agent)
            writer.write(post("/fn/f", b"x" * size)[: -size // 2])
            stalled.append((reader, writer))
        await wait_for_held(agent, 2 * size)
        for path in ("/fn/f", "/fn/%66"):  # on either path, before any of the body is read
            reader, writer = await connect(agent)
            writer.write(post(path, b"x")[:-1])
            answer = await Answer.read(reader)
            assert (answer.status, answer.headers["connection"]) == (503, "close")
            assert f"holds {2 * size} bytes of request bodies" in json.loads(answer.body)["error"]
            writer.close()
        assert refused(agent, "body_budget") == 2
        for _, writer in stalled:  # once they go, the budget is free again
            writer.close()
        await wait_for_held(agent, 0)
        assert (await exchange(agent, post("/fn/f", b"ok"))).status == 200
    finally:
        await agent.close()


async def settled(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) until the agent's event loop has made `condition` true."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the agent never got there")


async def wait_for_held(agent: RunningAgent, size: int) -> None:
    await settled(lambda: agent._plane.body_held == size)


async def test_at_the_cap_the_oldest_connection_without_a_request_makes_room(
    tmp_path: Path, runtime: Runtime
) -> None:
    agent = await start_agent(
        settings_for(tmp_path / "d", max_connections=4, control_connections=1), runtime
    )
    try:
        stalled = []
        for _ in range(4):
            reader, writer = await connect(agent)
            writer.write(b"POST /fn/f HTTP/1.1\r\n")
            stalled.append((reader, writer))
        await settled(lambda: len(agent._plane.connections) == 4)
        health = await exchange(agent, b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n")
        assert health.status == 200
        assert await read_to_close(stalled[0][0]) == b""  # the oldest went
        assert refused(agent, "evicted") == 1
        assert len(agent._plane.connections) <= 4
        for _, writer in stalled:
            writer.close()
    finally:
        await agent.close()


async def test_beyond_the_data_share_calls_get_503_and_control_requests_are_served(
    tmp_path: Path, runtime: Runtime, wasm: dict[str, bytes]
) -> None:
    agent = await start_agent(
        settings_for(tmp_path / "d", max_connections=8, control_connections=4), runtime
    )
    try:
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            await Client(agent, session).deploy("f", "1", wasm["ok"])
        busy = []
        for _ in range(4):  # the data plane's share, each with a call in progress
            reader, writer = await connect(agent)
            writer.write(post("/fn/f", b"x")[:-1])
            busy.append((reader, writer))
        await settled(lambda: len(agent._plane.connections) == 4)
        chunked = b"POST /fn/f HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        for call in (PLAIN_CALL, chunked):
            reader, writer = await connect(agent)
            writer.write(call)
            answer = await read_to_close(reader)
            assert b" 503 " in answer.split(b"\r\n")[0]
            assert b"near its connection cap (8)" in answer
            writer.close()
        inventory = await exchange(
            agent,
            b"GET /inventory HTTP/1.1\r\nHost: e\r\n"
            + f"Authorization: Bearer {agent.token}\r\n\r\n".encode(),
        )
        assert inventory.status == 200
        assert refused(agent, "connection_limit") == 2
        for reader, writer in busy:  # the calls of the share are served as ever
            writer.write(b"x")
            assert (await Answer.read(reader)).status == 200
            writer.close()
    finally:
        await agent.close()
