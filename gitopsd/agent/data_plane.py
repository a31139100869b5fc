"""The agent's listening socket: its own HTTP/1.1 path for `POST /fn/{fn}`, aiohttp for the rest.

Why: aiohttp's request machinery cost about as much CPU per request as the WASM call
itself (bench P7). Each connection starts on `_Connection`, which answers plain
invocations itself: HTTP/1.1 with a `Host`, a `Content-Length` body (or none), a name that
needs no decoding, no `Expect`, `Upgrade` or `Transfer-Encoding`. The first request that
is anything else (a control endpoint, a chunked body, a malformed head, HTTP/1.0) hands
the connection, with every byte not yet answered, to the aiohttp application, which
serves it from then on with the full contract (auth, routing, errors). Both paths answer
a call through `invocation.answer_call`, so the answer does not depend on the path.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import SINGLETON_HEADERS
from multidict import CIMultiDict

from gitopsd.agent.invocation import VERSION_HEADER, Answer, answer_call, error_answer
from gitopsd.agent.service import AgentService
from gitopsd.agent.wagi import NO_BODY_STATUSES

# aiohttp's own limits on a request head: beyond them the request is its to refuse.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 128
MAX_HEAD_BYTES = MAX_LINE_BYTES + MAX_HEADERS * MAX_LINE_BYTES
# aiohttp closes a keep-alive connection idle this long; so does the fast path.
KEEPALIVE_TIMEOUT_S = 3630.0
SWEEP_EVERY_S = 60.0

# `POST /fn/{fn}[?query] HTTP/1.1` with a name as api.NAME_RE allows; no percent-escapes
# or '+', which would need the decoding aiohttp does for path and query.
_REQUEST_LINE = re.compile(
    rb"POST (/fn/([A-Za-z0-9][A-Za-z0-9._+-]{0,127}))(?:\?([^\x00-\x20\x7f%+#]*))? HTTP/1\.1\r\n"
)
# One header line: a token, a colon, a value without control characters (tab allowed).
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r\n")
# Headers that need more of HTTP than the fast path does.
_HAND_OVER_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
# Headers aiohttp refuses to see twice (400): a request repeating one is left to it.
_SINGLETONS = frozenset(name.encode() for name in SINGLETON_HEADERS)


@dataclass(frozen=True, slots=True)
class Head:
    """A request head the fast path serves."""

    function: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    content_length: int
    close: bool


def parse_head(head: bytes) -> Head | None:
    """The head (each line ended by CRLF, without the blank line) of a plain
    `POST /fn/{fn}`; None for any other."""
    request = _REQUEST_LINE.match(head)
    if request is None or len(head) > MAX_HEAD_BYTES:
        return None
    headers: list[tuple[str, str]] = []
    length = 0
    close = False
    seen: set[bytes] = set()
    pos, size = request.end(), len(head)
    while pos < size:
        field = _FIELD.match(head, pos)
        if field is None or field.end() - pos > MAX_LINE_BYTES or len(headers) == MAX_HEADERS:
            return None
        pos = field.end()
        name, value = field[1], field[2].rstrip(b" \t")
        lower = name.lower()
        if lower in _SINGLETONS:
            if lower in seen:
                return None
            seen.add(lower)
        if lower == b"content-length":
            if not value.isdigit():
                return None
            length = int(value)
        elif lower in _HAND_OVER_HEADERS:
            return None
        elif lower == b"connection":
            close = b"close" in [token.strip() for token in value.lower().split(b",")]
        headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))
    if b"host" not in seen:  # HTTP/1.1 requires it; aiohttp answers 400 without
        return None
    path = request[1].decode("ascii")
    query = (request[3] or b"").decode("ascii")
    return Head(request[2].decode("ascii"), path, query, headers, length, close)


class _Clock:
    """The `Date` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._text = now, formatdate(now, usegmt=True).encode()
        return self._text


_REASONS = {status.value: status.phrase for status in HTTPStatus}
_SERVER = SERVER_SOFTWARE.encode()


def render(answer: Answer, date: bytes, close: bool) -> bytes:
    """The HTTP/1.1 answer bytes, head and body."""
    lines = [
        f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, '')}".encode(),
        b"Content-Type: " + answer.content_type.encode("latin-1"),
    ]
    if answer.version is not None:
        lines.append(f"{VERSION_HEADER}: {answer.version}".encode())
    if answer.status not in NO_BODY_STATUSES:  # aiohttp leaves it out there too
        lines.append(b"Content-Length: " + str(len(answer.body)).encode())
    lines += [b"Date: " + date, b"Server: " + _SERVER]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + answer.body


class DataPlane:
    """The agent's listening socket and its connections (module docstring).

    `fallback` makes aiohttp's protocol for one connection (`AppRunner.server`).
    """

    def __init__(self, service: AgentService, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.service = service
        self.fallback = fallback
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The port listened on (the actual one when asked for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str | None, port: int) -> None:
        """Listen on `host:port` (OSError when that is impossible)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host or None, port, backlog=128
        )
        self._sweeper = loop.call_later(SWEEP_EVERY_S, self._sweep)

    async def close(self, grace_s: float) -> None:
        """Stop listening, let calls in flight finish (up to `grace_s`), close the rest."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if not connection.busy:
                connection.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)
        for connection in list(self.connections):
            connection.close()

    def _sweep(self) -> None:
        deadline = time.monotonic() - KEEPALIVE_TIMEOUT_S
        for connection in list(self.connections):
            if not connection.busy and connection.idle_since < deadline:
                connection.close()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY_S, self._sweep)


class _Connection(asyncio.Protocol):
    """One client connection while it sends plain invocations, one request at a time."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.buffer = bytearray()
        self.busy = False
        self.idle_since = time.monotonic()
        self.transport: asyncio.Transport | None = None
        self._paused = False
        # The head of a request whose body is still arriving, and where its body starts.
        self._waiting: tuple[int, Head] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but are one.
        self.transport = cast(asyncio.Transport, transport)
        if self.plane.closing:
            self.transport.close()
            return
        self.plane.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.plane.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()
        elif len(self.buffer) > MAX_HEAD_BYTES and self.transport is not None:
            # A client pipelining while its call runs: stop reading until it is answered.
            self.transport.pause_reading()
            self._paused = True

    def close(self) -> None:
        """Close the connection (an answer being written is still sent)."""
        if self.transport is not None:
            self.transport.close()

    def _next(self) -> None:
        """Serve the next complete request in the buffer, or hand the connection over."""
        if self._waiting is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._hand_over()
                return
            head = parse_head(bytes(self.buffer[: end + 2]))
            if head is None or head.content_length > self.plane.service.settings.max_module_bytes:
                self._hand_over()
                return
            self._waiting = (end + 4, head)
        start, head = self._waiting
        size = start + head.content_length
        if len(self.buffer) < size:
            return  # the rest of the body is on its way
        body = bytes(self.buffer[start:size])
        del self.buffer[:size]
        self._waiting = None
        self.busy = True
        task = asyncio.get_running_loop().create_task(self._serve(head, body))
        self.plane.tasks.add(task)
        task.add_done_callback(self.plane.tasks.discard)

    async def _serve(self, head: Head, body: bytes) -> None:
        plane = self.plane
        try:
            answer = await answer_call(
                plane.service,
                head.function,
                path=head.path,
                query=head.query,
                headers=head.headers,
                lookup=CIMultiDict(head.headers),
                body=body,
            )
        except Exception as exc:  # a bug: answer in the contract's shape, keep serving
            plane.service.log.exception("agent.request_crashed", path=head.path)
            answer = error_answer(500, f"internal error: {type(exc).__name__}: {exc}")
        close = head.close or plane.closing
        transport = self.transport
        self.busy = False
        self.idle_since = time.monotonic()
        if transport is None:
            return  # the client went away during the call
        transport.write(render(answer, plane.clock.date(), close))
        if close:
            transport.close()
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self.buffer:
            self._next()

    def _hand_over(self) -> None:
        """From now on aiohttp serves this connection, starting with the buffered bytes."""
        transport = self.transport
        if transport is None:
            return
        self.plane.connections.discard(self)
        self.transport = None
        protocol = self.plane.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        data, self.buffer = bytes(self.buffer), bytearray()
        if data:
            protocol.data_received(data)
