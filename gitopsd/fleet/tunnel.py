"""The controller's side of dial-out agents: the `[fleet] listen` listener, the registry of
connected agents, and the relay that carries the agent API over each agent's tunnel.

A dial-out agent (agent/dialout.py) opens `GET /agents/connect` as a WebSocket with
`Authorization: Bearer <its token>` and `X-Gitopsd-Node: <its name>`. The token is checked
before the upgrade (401 otherwise, logged); a second connection claiming a name whose first
connection is alive is refused (409, logged); liveness is the WebSocket heartbeat, so a
connection that died silently (NAT rebinding, a pulled cable) frees its name within two
heartbeats. An agent whose name is not a dial-out EdgeNode in Git is kept connected but
waiting: it is listed by `GET /agents` (and `gitopsd status`) as an unknown agent and is sent
nothing.

The fleet client never speaks WebSocket. For it a dial-out node lives at
`<relay>/agents/NAME/api` (see `relay_base`): an ordinary HTTP request there, carrying the
node's own token, is framed (gitopsd/tunnel_frames.py) onto that node's tunnel and the
agent's answer comes back as the HTTP answer. So the daemon's client, the CLI's `diff`,
`status` and `rollback`, the inventory probe and the held inventory requests all work for
both kinds of node unchanged; a held `GET /inventory?wait=` stays open across the tunnel and
the agent answers it the moment its inventory changes: a push.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from gitopsd.fleet.tokens import FleetAuth, dial_out_token, excerpt
from gitopsd.log import get_logger
from gitopsd.tunnel_frames import (
    MAX_FRAME_BYTES,
    Cancel,
    FrameError,
    Hello,
    Request,
    Response,
    decode,
    encode,
    relayed_headers,
)

NODE_HEADER = "X-Gitopsd-Node"
CONNECT_PATH = "/agents/connect"
HEARTBEAT_S = 20.0
MAX_IN_FLIGHT = 64  # requests waiting for one agent's answers at once
MAX_UNKNOWN = 1024  # connections of agents not named in Git, kept waiting
RELAY_MAX_S = 600.0  # no relayed request waits longer than this for its answer
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # an EdgeNode's name
_LISTING_MESSAGE = b"gitopsd:agents"  # holds ':', which no node name (a DNS label) holds


def relay_base(relay: str, node: str) -> str:
    """Where the fleet client reaches dial-out node `node` through the relay at `relay`."""
    return f"{relay.rstrip('/')}/agents/{node}/api"


def listing_token(secret: str) -> str:
    """The bearer token of `GET /agents` (the presence listing): derived from the fleet
    secret over a message no node name can be, so no agent's token opens it."""
    return hmac.new(secret.encode(), _LISTING_MESSAGE, hashlib.sha256).hexdigest()


def listen_url(listen: str) -> str:
    """`[fleet] listen` (HOST:PORT) as a URL this host can connect to (wildcards: loopback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class TunnelClosed(Exception):
    """The agent's connection ended before it answered."""


class TunnelBusy(Exception):
    """MAX_IN_FLIGHT requests await this agent's answers already: refused, not queued."""


@dataclass(eq=False)
class AgentSession:
    """One connected dial-out agent: its WebSocket and the requests awaiting answers."""

    name: str
    peer: str
    since: float
    ws: web.WebSocketResponse
    pending: dict[int, asyncio.Future[tuple[Response, bytes]]] = field(default_factory=dict)
    ids: Iterable[int] = field(default_factory=lambda: itertools.count(1))
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_IN_FLIGHT))
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def next_id(self) -> int:
        return next(iter(self.ids))

    def fail_pending(self, reason: str) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(TunnelClosed(reason))
        self.pending.clear()


class TunnelRegistry:
    """Connected dial-out agents by name; which names Git declares dial-out (`set_known`)."""

    def __init__(
        self,
        auth: FleetAuth,
        clock: Callable[[], float] = time.time,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        """`auth` gives the fleet secret and mode (a shared-mode agent holds the secret);
        `clock` stamps when each agent connected."""
        self.auth = auth
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.known: frozenset[str] = frozenset()
        self.sessions: dict[str, AgentSession] = {}
        self.refused = {"token": 0, "duplicate": 0, "garbage": 0, "full": 0}
        self.relayed = 0  # requests sent over tunnels
        # Called with the name of each agent Git names once it is connected (and served):
        # the daemon reconciles at once instead of at its next poll.
        self.on_connect: Callable[[str], None] | None = None
        self._arrived = asyncio.Event()
        self._log = get_logger(component="tunnel")

    # identity ------------------------------------------------------------------------------

    def expected_token(self, name: str) -> str | None:
        secret = self.auth.secret
        if secret is None:
            return None
        return secret if self.auth.mode == "shared" else dial_out_token(secret, name)

    def token_ok(self, name: str, authorization: str) -> bool:
        """True when `authorization` is `Bearer <name's token>` (constant-time compare)."""
        expected = self.expected_token(name)
        if expected is None or not authorization.startswith("Bearer "):
            return False
        return hmac.compare_digest(authorization[7:].encode(), expected.encode())

    def set_known(self, names: Iterable[str]) -> None:
        """The dial-out nodes Git declares now: an agent waiting under one of these names is
        told it is served; one whose name left Git is told to wait (and sent nothing)."""
        known = frozenset(names)
        changed = {n for n in self.sessions if (n in known) != (n in self.known)}
        self.known = known
        for name in changed:
            session = self.sessions[name]
            state = "serving" if name in known else "waiting"
            self._log.info("tunnel.agent_state", node=name, state=state, peer=session.peer)
            asyncio.get_running_loop().create_task(self._hello(session, state))
            if name in known:
                self._arrival(name)

    def _arrival(self, name: str) -> None:
        self._arrived.set()
        if self.on_connect is not None:
            self.on_connect(name)

    async def wait_connected(self, names: Iterable[str], seconds: float) -> set[str]:
        """Wait up to `seconds` until every agent of `names` is connected; those still
        missing then. For a controller that just started: its dial-out agents come back
        within their reconnect backoff, and a rollout begun before would fail on them."""
        wanted = set(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (missing := wanted - self.sessions.keys()) and deadline > loop.time():
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self._arrived.wait()
        return missing

    async def _hello(self, session: AgentSession, state: str) -> None:
        with contextlib.suppress(Exception):
            async with session.send_lock:
                await session.ws.send_bytes(encode(Hello(t="hello", state=state)))  # type: ignore[arg-type]

    def connected(self, name: str) -> AgentSession | None:
        """The live session of dial-out node `name` when Git names it; None otherwise."""
        session = self.sessions.get(name)
        return session if session is not None and name in self.known else None

    def presence(self) -> dict[str, Any]:
        """What `GET /agents` answers: connected known agents, and unknown ones waiting."""
        connected = {
            n: {"since": s.since, "from": s.peer}
            for n, s in sorted(self.sessions.items())
            if n in self.known
        }
        unknown = [
            {"name": n, "since": s.since, "from": s.peer}
            for n, s in sorted(self.sessions.items())
            if n not in self.known
        ]
        return {"connected": connected, "unknown": unknown, "refused": dict(self.refused)}

    # the relay -----------------------------------------------------------------------------

    async def request(
        self, name: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[Response, bytes]:
        """Send one request over `name`'s tunnel and wait for its answer; TunnelClosed when
        the connection ends first, LookupError when `name` is not connected."""
        session = self.connected(name)
        if session is None:
            raise LookupError(name)
        if session.slots.locked():
            raise TunnelBusy(name)
        async with session.slots:
            self.relayed += 1
            request_id = session.next_id()
            frame = encode(
                Request(t="req", id=request_id, method=method, path=path, headers=headers),  # type: ignore[arg-type]
                body,
            )
            future: asyncio.Future[tuple[Response, bytes]] = (
                asyncio.get_running_loop().create_future()
            )
            session.pending[request_id] = future
            try:
                async with session.send_lock:
                    await session.ws.send_bytes(frame)
                async with asyncio.timeout(RELAY_MAX_S):
                    return await future
            except (ConnectionError, RuntimeError) as exc:
                raise TunnelClosed(str(exc) or exc.__class__.__name__) from None
            finally:
                answered = future.done() and not future.cancelled()
                if session.pending.pop(request_id, None) is not None and not answered:
                    # The caller went away (or timed out): the agent may stop working on it.
                    future.cancel()
                    with contextlib.suppress(Exception):
                        async with session.send_lock:
                            await session.ws.send_bytes(encode(Cancel(t="cancel", id=request_id)))

    # the WebSocket -------------------------------------------------------------------------

    async def connect(self, request: web.Request) -> web.StreamResponse:
        """`GET /agents/connect`: authenticate, refuse duplicates, then serve the tunnel."""
        name = request.headers.get(NODE_HEADER, "")
        peer = _peer(request)
        log = self._log.bind(node=excerpt(name, 80), peer=peer)
        if not _NODE_NAME.match(name) or not self.token_ok(
            name, request.headers.get("Authorization", "")
        ):
            self.refused["token"] += 1
            log.warning("tunnel.refused_token")
            return _error(401, "missing or wrong dial-out token for this node name")
        if name in self.sessions:
            self.refused["duplicate"] += 1
            log.warning(
                "tunnel.refused_duplicate",
                connected_from=self.sessions[name].peer,
                reason="a connection claiming this name is alive",
            )
            return _error(409, f"node {name} is connected already from another connection")
        unknown = sum(1 for n in self.sessions if n not in self.known)
        if name not in self.known and unknown >= MAX_UNKNOWN:
            self.refused["full"] += 1
            log.warning("tunnel.refused_full", waiting=unknown)
            return _error(503, "too many unknown agents waiting")
        ws = web.WebSocketResponse(
            heartbeat=self.heartbeat_s, max_msg_size=MAX_FRAME_BYTES, autoping=True
        )
        await ws.prepare(request)
        if name in self.sessions:  # another one upgraded while this one did
            self.refused["duplicate"] += 1
            log.warning("tunnel.refused_duplicate", reason="raced another connection")
            await ws.close(code=4009, message=b"duplicate")
            return ws
        session = AgentSession(name, peer, self.clock(), ws)
        self.sessions[name] = session
        state = "serving" if name in self.known else "waiting"
        log.info("tunnel.connected", state=state)
        try:
            await self._hello(session, state)
            if state == "serving":
                self._arrival(name)
            await self._read(session, log)
        finally:
            if self.sessions.get(name) is session:
                del self.sessions[name]
            session.fail_pending("the agent's connection ended")
            log.info("tunnel.disconnected", close_code=ws.close_code)
        return ws

    async def _read(self, session: AgentSession, log: Any) -> None:
        async for message in session.ws:
            if message.type != WSMsgType.BINARY:
                if message.type == WSMsgType.ERROR:
                    log.info("tunnel.read_error", error=excerpt(str(session.ws.exception())))
                    break
                await self._garbage(session, log, f"a {message.type.name} message")
                break
            try:
                frame = decode(message.data)
            except FrameError as exc:
                await self._garbage(session, log, str(exc))
                break
            header = frame.header
            if not isinstance(header, Response) or session.name not in self.known:
                await self._garbage(session, log, f"an unexpected {header.t} frame")
                break
            future = session.pending.get(header.id)
            if future is not None and not future.done():
                future.set_result((header, frame.body))
            # An answer to a cancelled request arrives late: dropped.

    async def _garbage(self, session: AgentSession, log: Any, reason: str) -> None:
        self.refused["garbage"] += 1
        log.warning("tunnel.garbage_frame", reason=excerpt(reason))
        await session.ws.close(code=1002, message=b"protocol error")

    async def relay(self, request: web.Request) -> web.StreamResponse:
        """`ANY /agents/{name}/api/...`: the agent API of dial-out node `name`."""
        name = request.match_info["name"]
        if not self.token_ok(name, request.headers.get("Authorization", "")):
            return _error(401, f"wrong or missing token of node {excerpt(name, 80)}")
        if request.method not in ("GET", "HEAD", "PUT", "POST", "DELETE"):
            return _error(405, "method not relayed")
        if name not in self.known:
            return _error(503, f"dial-out agent {name} is not a dial-out EdgeNode in Git here")
        if name not in self.sessions:
            return _error(503, f"dial-out agent {name} is not connected to the controller")
        prefix = f"/agents/{name}/api"
        path = request.raw_path[len(prefix) :] or "/"
        if not path.startswith("/"):
            return _error(404, "no such path")
        body = await request.read()  # bounded by the app's client_max_size
        try:
            answer, payload = await self.request(
                name, request.method, path, relayed_headers(request.headers), body
            )
        except LookupError:
            return _error(503, f"dial-out agent {name} is not connected to the controller")
        except TunnelClosed as exc:
            return _error(502, f"dial-out agent {name}: connection lost: {exc}")
        except FrameError as exc:
            return _error(413, str(exc))
        except TunnelBusy:
            return _error(503, f"dial-out agent {name}: {MAX_IN_FLIGHT} requests in flight")
        except TimeoutError:
            return _error(504, f"dial-out agent {name} did not answer in {RELAY_MAX_S:g} s")
        headers = relayed_headers(answer.headers)
        if request.method == "HEAD":
            # aiohttp leaves Content-Length out of a bodiless HEAD answer, and a client that
            # then cannot tell where it ends closes the connection after each deploy's HEAD.
            headers["Content-Length"] = "0"
        return web.Response(status=answer.status, body=payload or None, headers=headers)

    async def agents(self, request: web.Request) -> web.StreamResponse:
        """`GET /agents`: presence of dial-out agents (bearer: `listing_token`)."""
        secret = self.auth.secret
        header = request.headers.get("Authorization", "")
        if secret is None or not hmac.compare_digest(
            header.encode(), f"Bearer {listing_token(secret)}".encode()
        ):
            return _error(401, "wrong or missing listing token")
        return web.json_response(self.presence())

    async def close(self) -> None:
        """Close every agent's connection (the agents reconnect to the next controller)."""
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):
                await session.ws.close(code=1001, message=b"controller stopping")


def tunnel_app(registry: TunnelRegistry) -> web.Application:
    """The aiohttp application served at `[fleet] listen`."""
    app = web.Application(client_max_size=MAX_FRAME_BYTES)
    app.router.add_get(CONNECT_PATH, registry.connect)
    app.router.add_get("/agents", registry.agents)
    app.router.add_route("*", r"/agents/{name:[a-z0-9-]{1,63}}/api{tail:(/.*)?}", registry.relay)
    app.router.add_get("/healthz", _healthz)

    async def closing(_app: web.Application) -> None:
        await registry.close()

    app.on_shutdown.append(closing)
    return app


async def serve_tunnel(registry: TunnelRegistry, listen: str) -> tuple[web.AppRunner, int]:
    """Serve `tunnel_app(registry)` on `listen` (HOST:PORT; port 0 picks one): the runner
    (stop with `cleanup()`) and the port."""
    host, _, port = listen.rpartition(":")
    # A caller that goes away cancels its relayed request: the agent is told (a cancel
    # frame) and nothing waits for an answer nobody reads.
    runner = web.AppRunner(
        tunnel_app(registry), access_log=None, shutdown_timeout=2.0, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or None, int(port))
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = site._server  # aiohttp exposes the bound port only through the server
    sockets = getattr(server, "sockets", None) or []
    actual = int(sockets[0].getsockname()[1]) if sockets else int(port)
    return runner, actual


async def _healthz(_request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


def _peer(request: web.Request) -> str:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return "unknown"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
