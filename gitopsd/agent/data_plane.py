"""The agent's listening socket: its own HTTP/1.1 path for `POST /fn/{fn}`, aiohttp for the rest.

Why: aiohttp's request machinery cost about as much CPU per request as the WASM call
itself (bench P7). Each connection starts on `Connection`, which answers plain
invocations itself: HTTP/1.1 with a `Host`, a `Content-Length` body (or none), a name that
needs no decoding, header values in UTF-8, no `Expect`, `Upgrade` or `Transfer-Encoding`.
The head is parsed by httptools (llhttp, the parser aiohttp's own C parser is built on), in
its strict mode, as aiohttp's is; on top of it come aiohttp's own limits (line and field
sizes, header count, headers that may not repeat, `Host`).
The first request that is anything else (a control endpoint, a chunked body, a malformed
head, HTTP/1.0) hands the connection, with every byte not yet answered, to the aiohttp
application, which serves it from then on with the full contract (auth, routing, errors);
whatever the fast path cannot parse exactly, aiohttp answers, so a malformed request gets
the same answer on either path. Both paths answer a call through `invocation.answer_call`.

Every connection, on either path, stays a `Connection` (after the hand-over it passes the
bytes on to aiohttp's protocol), so one place bounds what a client can hold:

- a deadline for each request head (`head_timeout_s`, counted from the connection or from
  the request's first byte), for a body to arrive (`body_timeout_s`, aiohttp's side in the
  server's middleware), and for an idle keep-alive connection (`idle_timeout_s`);
- a connection cap (`max_connections`, below the open-files limit): at the cap a new
  connection takes the place of the oldest one that has no request in progress (a stalled
  head, an idle keep-alive), else it is closed at once; connections made while more than
  `max_connections - control_connections` are open may only ask the control endpoints and
  `/healthz` (a call on one is answered 503), so the controller and health probes get in
  while calls fill the rest;
- the bytes of request bodies held at once (`body_buffer_bytes`): a call whose body does
  not fit is answered 503 before any of it is read.
"""

from __future__ import annotations

import asyncio
import math
import re
import resource
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from enum import Enum
from http import HTTPStatus
from typing import cast

import httptools
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from gitopsd.agent.invocation import VERSION_HEADER, Answer, answer_call, error_answer
from gitopsd.agent.metrics import AgentCounters
from gitopsd.agent.service import AgentService
from gitopsd.agent.wagi import NO_BODY_STATUSES

# aiohttp's own limits on a request head: beyond them the request is its to refuse.
MAX_LINE_BYTES = 8190
MAX_HEADERS = 128
MAX_HEAD_BYTES = MAX_LINE_BYTES + MAX_HEADERS * MAX_LINE_BYTES
# Descriptors the agent keeps for itself beyond its connections (state and module files,
# the log, the listening socket, wasmtime): the default cap is the open-files limit minus this.
FD_HEADROOM = 64

# The target of a call the fast path serves, routed as aiohttp routes `/fn/{fn}`: a name as
# api.NAME_RE allows; a query of visible ASCII without '%', '+' or '#', which would need the
# decoding aiohttp does (and aiohttp refuses bytes >= 0x80 there).
_TARGET = re.compile(
    rb"(/fn/([A-Za-z0-9][A-Za-z0-9._+-]{0,127}))(?:\?([\x21\x22\x24\x26-\x2a\x2c-\x7e]*))?"
)
# Headers that need more of HTTP than the fast path does.
_HAND_OVER_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
# Headers aiohttp refuses to see twice (400): a request repeating one is left to it. Our own
# list (aiohttp's is private): the differential tests (tests/agent/test_data_plane.py) send
# each one twice to both paths, so a release of aiohttp that adds one is noticed.
SINGLETON_HEADERS = frozenset(
    {
        b"content-length",
        b"content-location",
        b"content-range",
        b"content-type",
        b"etag",
        b"host",
        b"max-forwards",
        b"server",
        b"transfer-encoding",
        b"user-agent",
    }
)


@dataclass(frozen=True, slots=True)
class Head:
    """A request head the fast path serves."""

    function: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    content_length: int
    close: bool


class _Refuse(Exception):
    """Raised in a parser callback: aiohttp refuses this request (400)."""


class Parsed:
    """One request head as llhttp read it (with aiohttp's own checks passed)."""

    __slots__ = ("headers", "keep_alive", "method", "seen", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.seen: set[bytes] = set()  # lower-case names of the singletons met
        self.method = b""
        self.version = ""
        self.keep_alive = False


class Feed(Enum):
    """What a connection's bytes did to its parser."""

    OK = "ok"
    REFUSED = "refused"  # llhttp or one of aiohttp's checks refuses them: a 400 from aiohttp
    UPGRADE = "upgrade"  # an upgrade: what follows is not HTTP to llhttp


class RequestStream:
    """Every byte a connection receives, parsed by httptools as it arrives, in order: the
    same bytes aiohttp's parser (llhttp, strict, with checks of its own) would see.

    The callbacks add aiohttp's checks at the moment aiohttp makes them: the target's length
    as it arrives; a header's size, the header count and headers that may not repeat when
    the next header starts; `Host` when the head ends. Complete heads queue in `heads`.
    """

    __slots__ = ("current", "heads", "in_head", "parser", "started")

    def __init__(self) -> None:
        self.current = Parsed()
        self.heads: deque[Parsed] = deque()
        self.started = 0  # heads complete so far
        self.in_head = True  # between a request's first byte and the end of its head
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)

    def feed(self, data: bytes | bytearray) -> Feed:
        """Parse the next bytes received."""
        if self.parser is None:
            return Feed.REFUSED
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()
            return Feed.UPGRADE
        except httptools.HttpParserError:
            self.close()
            return Feed.REFUSED
        return Feed.OK

    def close(self) -> None:
        """Drop the parser (and the reference cycle between it and this stream)."""
        self.parser = None

    def on_message_begin(self) -> None:
        self.current = Parsed()
        self.in_head = True

    def on_message_complete(self) -> None:
        self.in_head = True  # llhttp's next message starts with the next byte

    def on_url(self, url: bytes) -> None:
        current = self.current
        current.url += url
        if len(current.url) > MAX_LINE_BYTES:  # aiohttp's max_line_size
            raise _Refuse

    def on_header(self, name: bytes, value: bytes) -> None:
        current = self.current
        if len(name) + len(value) > MAX_LINE_BYTES or len(current.headers) == MAX_HEADERS:
            raise _Refuse  # aiohttp's max_field_size and max_headers
        lower = name.lower()
        if lower in SINGLETON_HEADERS:
            if lower in current.seen:
                raise _Refuse
            current.seen.add(lower)
        current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        current, parser = self.current, self.parser
        assert parser is not None
        current.method = parser.get_method()
        current.version = parser.get_http_version()
        # Now: once a message is complete, llhttp's flags are those of the next one.
        current.keep_alive = parser.should_keep_alive()
        if current.version == "1.1" and b"host" not in current.seen:
            raise _Refuse  # HTTP/1.1 requires it: aiohttp answers 400
        self.heads.append(current)
        self.started += 1
        self.in_head = False


def fast_head(parsed: Parsed) -> Head | None:
    """The plain `POST /fn/{fn}` the head asks, or None (aiohttp's to serve)."""
    if parsed.method != b"POST" or parsed.version != "1.1":
        return None
    target = _TARGET.fullmatch(parsed.url)
    if target is None:
        return None
    headers: list[tuple[str, str]] = []
    length = 0
    for name, raw in parsed.headers:
        value = raw.rstrip(b" \t")  # llhttp strips the whitespace before a value only
        lower = name.lower()
        if lower == b"content-length":
            length = int(value)  # llhttp accepted it: digits, at most 2**64 - 1
        elif lower in _HAND_OVER_HEADERS:
            return None
        try:
            text = value.decode()
        except UnicodeDecodeError:
            return None  # server.invoke refuses it (400), for both paths
        headers.append((name.decode("latin-1"), text))
    path = target[1].decode("ascii")
    query = (target[3] or b"").decode("ascii")
    return Head(target[2].decode("ascii"), path, query, headers, length, not parsed.keep_alive)


def parse_head(head: bytes) -> Head | None:
    """The head (each line ended by CRLF, without the blank line) of a plain
    `POST /fn/{fn}`; None for any other, and for any head aiohttp may judge otherwise."""
    stream = RequestStream()
    fed = stream.feed(head + b"\r\n")
    stream.close()
    if fed is not Feed.OK or not stream.heads:
        return None
    return fast_head(stream.heads[0])


def line_over_limit(buffer: bytes | bytearray) -> bool:
    """Whether the unfinished last line of a head is a header over aiohttp's field size,
    which aiohttp refuses as it arrives (llhttp reports a header once it ends)."""
    line = buffer[buffer.rfind(b"\n") + 1 :]
    if len(line) <= MAX_LINE_BYTES:
        return False
    colon = line.find(b":")
    if colon < 0:
        return len(line) > MAX_LINE_BYTES  # a name alone, still arriving
    value = line[colon + 1 :].lstrip(b" \t")  # llhttp leaves out the whitespace before it
    return colon + len(value) > MAX_LINE_BYTES


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


def default_max_connections() -> int:
    """The open-files soft limit minus `FD_HEADROOM` (the cap when settings give none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(int(soft) - FD_HEADROOM, 1)


class Phase(Enum):
    """What a connection is waiting for, which says which deadline applies."""

    HEAD = "head"  # (the rest of) a request head
    BODY = "body"  # the rest of a fast-path request's body
    BUSY = "busy"  # nothing: a request is being served
    IDLE = "idle"  # the next request on a kept-alive connection


class DataPlane:
    """The agent's listening socket and its connections (module docstring).

    `start` takes `fallback`, which makes aiohttp's protocol for one connection
    (`AppRunner.server`); the aiohttp application's middleware reports each request it
    serves through `connection_of(request.protocol)`.
    """

    def __init__(self, service: AgentService, counters: AgentCounters) -> None:
        settings = service.settings
        self.service = service
        self.counters = counters
        self.fallback: Callable[[], asyncio.Protocol] | None = None
        self.clock = _Clock()
        # Oldest first (insertion order): the cap evicts from the front.
        self.connections: dict[Connection, None] = {}
        self.delegated: dict[asyncio.BaseProtocol, Connection] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.head_timeout = settings.head_timeout_s
        self.body_timeout = settings.body_timeout_s
        self.idle_timeout = settings.idle_timeout_s
        self.max_connections = settings.max_connections or default_max_connections()
        # Beyond this many, a new connection may only ask control endpoints and /healthz.
        # (At most half of a small cap, so that calls keep a share of it.)
        reserve = min(settings.control_connections, self.max_connections // 2)
        self.data_connections = self.max_connections - reserve
        self.body_budget = settings.body_buffer_bytes
        self.body_held = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # Deadlines are checked this often: a quarter of the shortest, at most once a second.
        shortest = min(self.head_timeout, self.body_timeout, self.idle_timeout)
        self._sweep_every = min(max(shortest / 4, 0.005), 1.0)

    @property
    def port(self) -> int:
        """The port listened on (the actual one when asked for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(
        self, host: str | None, port: int, fallback: Callable[[], asyncio.Protocol]
    ) -> None:
        """Listen on `host:port` (OSError when that is impossible)."""
        self.fallback = fallback
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), host or None, port, backlog=128
        )
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    async def close(self, grace_s: float) -> None:
        """Stop listening, let calls in flight finish (up to `grace_s`), close the rest.

        Connections handed to aiohttp are left to the application's own shutdown."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if not connection.busy and connection.delegate is None:
                connection.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)
        for connection in list(self.connections):
            if connection.delegate is None:
                connection.close()

    def connection_of(self, protocol: asyncio.BaseProtocol) -> Connection | None:
        """The connection whose requests aiohttp's `protocol` serves."""
        return self.delegated.get(protocol)

    def hold(self, size: int) -> bool:
        """Reserve `size` bytes of the body budget; False (nothing reserved) when full."""
        if self.body_held + size > self.body_budget:
            return False
        self.body_held += size
        return True

    def release(self, size: int) -> None:
        """Give back what `hold` reserved."""
        self.body_held -= size

    def admit(self) -> bool:
        """Room for one more connection: at the cap, close the oldest one that has no
        request in progress; False when every connection has one."""
        if len(self.connections) < self.max_connections:
            return True
        for connection in self.connections:
            if not connection.busy:
                connection.expire(evicted=True)
                # Its descriptor is released once asyncio closes the socket, at once.
                del self.connections[connection]
                return True
        return False

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self.connections):
            if connection.deadline <= now:
                connection.expire()
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)


class Connection(asyncio.Protocol):
    """One client connection: plain invocations one request at a time, then (after the
    hand-over) a pass-through to aiohttp's protocol that still watches the deadlines."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.buffer = bytearray()
        self.busy = False
        self.transport: asyncio.Transport | None = None
        self.delegate: asyncio.Protocol | None = None  # aiohttp's, once handed over
        self.control_only = False  # made beyond the data-plane share of the cap
        self.phase = Phase.HEAD
        self.deadline = math.inf
        self._paused = False
        # The head of a request whose body is still arriving, and where its body starts.
        self._waiting: tuple[int, Head] | None = None
        self._held = 0  # body bytes reserved for the request being received
        # Every byte received, parsed in order as aiohttp's parser would see it; where each
        # read of the socket ended in the buffer (aiohttp gets them the same way after a
        # hand-over); the heads this path took; the first head aiohttp must have (a read
        # that llhttp or aiohttp refuses drops the requests whose heads complete in it).
        self.stream = RequestStream()
        self._reads: list[int] = []
        self._taken = 0
        self._aiohttp_from: int | None = None
        # On aiohttp's side: whether the current request's body was read, and whether bytes
        # of a next request arrived after it.
        self._body_read = False
        self._next_started = False

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but are one.
        self.transport = cast(asyncio.Transport, transport)
        plane = self.plane
        if plane.closing:
            self.transport.close()
            return
        if not plane.admit():
            plane.counters.refuse("connection_limit")
            self.transport.abort()
            return
        self.control_only = len(plane.connections) >= plane.data_connections
        plane.connections[self] = None
        self._expect(Phase.HEAD, plane.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        plane = self.plane
        self.stream.close()
        plane.connections.pop(self, None)
        plane.release(self._held)
        self._held = 0
        self.transport = None
        if self.delegate is not None:
            plane.delegated.pop(self.delegate, None)
            self.delegate.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.delegate is not None:
            self._pass_on(data)
            return
        self.buffer += data
        self._reads.append(len(self.buffer))
        if self._aiohttp_from is None:
            stream = self.stream
            before = stream.started
            fed = stream.feed(data)
            if fed is Feed.UPGRADE:
                self._aiohttp_from = stream.started - 1  # the request that asks it
            elif fed is Feed.REFUSED or (stream.in_head and line_over_limit(self.buffer)):
                self._aiohttp_from = before
        if not self.busy:
            if self.phase is Phase.IDLE:
                self._expect(Phase.HEAD, self.plane.head_timeout)
            self._next()
        elif len(self.buffer) > MAX_HEAD_BYTES and self.transport is not None:
            # A client pipelining while its call runs: stop reading until it is answered.
            self.transport.pause_reading()
            self._paused = True

    def eof_received(self) -> bool | None:
        if self.delegate is not None:
            return self.delegate.eof_received()
        return None

    def pause_writing(self) -> None:
        if self.delegate is not None:
            self.delegate.pause_writing()

    def resume_writing(self) -> None:
        if self.delegate is not None:
            self.delegate.resume_writing()

    # --- deadlines ---------------------------------------------------------------------

    def _expect(self, phase: Phase, timeout: float) -> None:
        self.phase = phase
        self.deadline = time.monotonic() + timeout

    def _serving(self) -> None:
        self.busy = True
        self.phase = Phase.BUSY
        self.deadline = math.inf

    def expire(self, evicted: bool = False) -> None:
        """The deadline passed (or the cap needs the place): close, saying why when a
        request was under way."""
        transport = self.transport
        if transport is None:
            return
        plane = self.plane
        self.deadline = math.inf  # once: the socket closes on the loop's next turn
        if self.phase is Phase.IDLE:
            plane.counters.refuse("evicted" if evicted else "idle_timeout")
        elif evicted:
            plane.counters.refuse("evicted")
        elif self.phase is Phase.HEAD:
            plane.counters.refuse("head_timeout")
            if self.buffer or self.delegate is not None:
                self._refuse_now(408, f"request head not complete within {plane.head_timeout:g} s")
                return
        elif self.phase is Phase.BODY:
            plane.counters.refuse("body_timeout")
            self._refuse_now(408, f"request body not complete within {plane.body_timeout:g} s")
            return
        self.close()

    def close(self) -> None:
        """Close the connection (an answer being written is still sent, unless the client
        stopped reading it)."""
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _refuse_now(self, status: int, message: str) -> None:
        """Answer `status` with `Connection: close` and close, without reading further."""
        transport = self.transport
        if transport is None:
            return
        transport.write(render(error_answer(status, message), self.plane.clock.date(), True))
        transport.close()  # after those few bytes, which the socket's buffer takes at once

    # --- the fast path -----------------------------------------------------------------

    def _next(self) -> None:
        """Serve the next complete request in the buffer, or hand the connection over."""
        plane = self.plane
        if self._waiting is None:
            stream = self.stream
            if self._aiohttp_from is not None and self._taken >= self._aiohttp_from:
                self._hand_over()
                return
            if not stream.heads:
                return  # the head is on its way
            parsed = stream.heads.popleft()
            self._taken += 1
            # Where the head ends: a head llhttp accepted holds no CR or LF but its line
            # ends (llhttp skips empty lines before a request: aiohttp's to judge those).
            end = self.buffer.find(b"\r\n\r\n")
            head = fast_head(parsed) if end > 0 and self.buffer[0] not in b"\r\n" else None
            if head is None or head.content_length > plane.service.settings.max_module_bytes:
                self._hand_over()
                return
            if self.control_only:
                plane.counters.refuse("connection_limit")
                self._refuse_now(503, over_connection_cap(plane.max_connections))
                return
            if not plane.hold(head.content_length):
                plane.counters.refuse("body_budget")
                self._refuse_now(503, over_body_budget(plane.body_budget))
                return
            self._held = head.content_length
            self._waiting = (end + 4, head)
            if len(self.buffer) < end + 4 + head.content_length:
                self._expect(Phase.BODY, plane.body_timeout)
                return  # the rest of the body is on its way
        start, head = self._waiting
        size = start + head.content_length
        if len(self.buffer) < size:
            return
        body = bytes(self.buffer[start:size])
        del self.buffer[:size]
        self._reads = [end - size for end in self._reads if end > size]
        self._waiting = None
        held, self._held = self._held, 0
        self._serving()
        task = asyncio.get_running_loop().create_task(self._serve(head, body, held))
        plane.tasks.add(task)
        task.add_done_callback(plane.tasks.discard)

    async def _serve(self, head: Head, body: bytes, held: int) -> None:
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
            plane.counters.internal_errors += 1
            answer = error_answer(500, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            plane.release(held)
        close = head.close or plane.closing
        transport = self.transport
        self.busy = False
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
            self._expect(Phase.HEAD, plane.head_timeout)
            self._next()
        else:
            self._expect(Phase.IDLE, plane.idle_timeout)

    def _hand_over(self) -> None:
        """From now on aiohttp serves this connection, starting with the buffered bytes.
        The head deadline keeps running: the head being received is the same."""
        self.stream.close()
        transport = self.transport
        if transport is None or self.plane.fallback is None:
            return
        protocol = self.plane.fallback()
        self.delegate = protocol
        self.plane.delegated[protocol] = self
        protocol.connection_made(transport)
        if self._paused:
            self._paused = False
            transport.resume_reading()
        # The bytes not answered yet, read by read as they came: aiohttp answers a read it
        # refuses with a 400 alone, so what it is given at once must be what was read at once.
        data, self.buffer = bytes(self.buffer), bytearray()
        reads, self._reads = self._reads, []
        start = 0
        for end in reads:
            if end > start:
                protocol.data_received(data[start:end])
            start = end

    # --- on aiohttp's side -------------------------------------------------------------

    def _pass_on(self, data: bytes) -> None:
        if not self.busy:
            if self.phase is Phase.IDLE:
                self._expect(Phase.HEAD, self.plane.head_timeout)
        elif self._body_read:
            self._next_started = True
        assert self.delegate is not None
        self.delegate.data_received(data)

    def request_started(self) -> None:
        """aiohttp has the whole head of a request and starts serving it."""
        self._serving()
        self._body_read = False
        self._next_started = False

    def body_read(self) -> None:
        """The request's body is read: bytes from now on belong to the next request."""
        self._body_read = True

    def request_finished(self) -> None:
        """aiohttp is done with the request (its answer is being written)."""
        self.busy = False
        if self._next_started:
            self._expect(Phase.HEAD, self.plane.head_timeout)
        else:
            self._expect(Phase.IDLE, self.plane.idle_timeout)


def over_connection_cap(cap: int) -> str:
    """The 503 message of a call on a connection made beyond the data plane's share."""
    return (
        f"agent is near its connection cap ({cap}): calls on new connections are refused "
        "until others close; retry"
    )


def over_body_budget(budget: int) -> str:
    """The 503 message of a call whose body does not fit in the bodies' budget."""
    return f"agent holds {budget} bytes of request bodies already: retry"
