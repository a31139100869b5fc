"""The agent's side of dial-out (`gitopsd agent --controller URL`): one persistent outbound
WebSocket to the controller, over which the controller sends the agent API's requests.

Each request frame (gitopsd/tunnel_frames.py) is replayed on the agent's own listener over
loopback, exactly as if the controller had connected to it: the same token check, limits,
deadlines, counters and held `GET /inventory?wait=` (answered the moment the inventory
changes, which makes it a push over the tunnel). Building aiohttp requests by hand through
the router would bypass the data plane's fast path and its limits; the loopback hop costs
~100 µs and keeps one code path for every control request.

The connection is retried forever with capped exponential backoff and full jitter (a
thousand agents cut off at once do not return at once); the agent keeps serving its loaded
functions on `--listen` while disconnected. A refused token (401) or a duplicate name (409)
is logged and retried like any other failure: an operator may fix the controller's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from gitopsd.errors import ConfigError
from gitopsd.http_body import read_capped
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

CONNECT_PATH = "/agents/connect"
NODE_HEADER = "X-Gitopsd-Node"
MAX_IN_FLIGHT = 128  # requests of the controller worked on at once; more get a 503
_ANSWER_CAP = MAX_FRAME_BYTES - 64 * 1024


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter: attempt n waits U(0, min(cap, base*2^n))."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before connection attempt `attempt` (0: the first retry)."""
        return float(rng() * min(self.cap_s, self.base_s * 2 ** min(attempt, 32)))


def connect_url(controller: str) -> str:
    """The WebSocket URL of `--controller` (http(s):// or ws(s):// base URL)."""
    try:
        parts = urlsplit(controller.strip())
    except ValueError as exc:
        raise ConfigError(f"agent: --controller {controller!r}: {exc}") from None
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ConfigError(
            f"agent: --controller {controller!r}: use https://HOST:PORT (or http:// on a "
            "trusted network, ws:// or wss://)"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"agent: --controller {controller!r}: no credentials, query or fragment")
    path = parts.path.rstrip("/") + CONNECT_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class DialOut:
    """Keeps one tunnel to the controller open for the agent listening at `local_url`."""

    def __init__(
        self,
        controller: str,
        name: str,
        token: str,
        local_url: str,
        backoff: Backoff | None = None,
        heartbeat_s: float = 20.0,
    ) -> None:
        self.url = connect_url(controller)
        self.name = name
        self.local_url = local_url.rstrip("/")
        self.backoff = backoff or Backoff()
        self.heartbeat_s = heartbeat_s
        self.state = "disconnected"  # disconnected | serving | waiting
        self.connections = 0  # tunnels opened so far (tests and logs)
        self._token = token
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(node=name, component="dialout")
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    def start(self) -> None:
        """Run the connect loop in the background until `close()`."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"dialout {self.name}"
        )

    async def close(self) -> None:
        """Stop: close the tunnel and end the loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drop(self) -> None:
        """Close the current tunnel (the loop reconnects): for tests of flapping links."""
        if self._ws is not None:
            await self._ws.close()

    async def _run(self) -> None:
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as upstream,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT), timeout=timeout
            ) as local,
        ):
            while True:
                served = await self._once(upstream, local)
                attempt = 0 if served else attempt + 1
                delay = self.backoff.delay(attempt)
                self._log.info("dialout.reconnecting", in_seconds=round(delay, 3))
                await asyncio.sleep(delay)

    async def _once(self, upstream: aiohttp.ClientSession, local: aiohttp.ClientSession) -> bool:
        """One connection, served until it ends; True when it was established."""
        headers = {"Authorization": f"Bearer {self._token}", NODE_HEADER: self.name}
        try:
            ws = await upstream.ws_connect(
                self.url,
                headers=headers,
                heartbeat=self.heartbeat_s,
                max_msg_size=MAX_FRAME_BYTES,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            reason = {
                401: "the controller refused our token: install `gitopsd agent-token "
                f"{self.name} --dial-out` as --token-file",
                409: "the controller has a live connection under this name already",
            }.get(exc.status, f"the controller answered {exc.status}")
            self._log.warning("dialout.refused", status=exc.status, reason=reason)
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._log.info("dialout.connect_failed", error=f"{exc.__class__.__name__} {exc}"[:200])
            return False
        self._ws = ws
        self.connections += 1
        self._log.info("dialout.connected", controller=self.url)
        tasks: dict[int, asyncio.Task[None]] = {}
        try:
            await self._serve(ws, local, tasks)
        finally:
            for task in tasks.values():
                task.cancel()
            self.state = "disconnected"
            self._ws = None
            await ws.close()
            self._log.info("dialout.disconnected", close_code=ws.close_code)
        return True

    async def _serve(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        local: aiohttp.ClientSession,
        tasks: dict[int, asyncio.Task[None]],
    ) -> None:
        send_lock = asyncio.Lock()
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                if message.type != aiohttp.WSMsgType.ERROR:
                    self._log.warning("dialout.garbage_frame", kind=message.type.name)
                    await ws.close(code=1002, message=b"protocol error")
                return
            try:
                frame = decode(message.data)
            except FrameError as exc:
                self._log.warning("dialout.garbage_frame", reason=str(exc))
                await ws.close(code=1002, message=b"protocol error")
                return
            header = frame.header
            if isinstance(header, Hello):
                self.state = header.state
                if header.state == "waiting":
                    self._log.warning(
                        "dialout.waiting",
                        reason="the controller's Git names no dial-out EdgeNode of this name",
                    )
                else:
                    self._log.info("dialout.serving")
            elif isinstance(header, Cancel):
                task = tasks.pop(header.id, None)
                if task is not None:
                    task.cancel()
            elif isinstance(header, Request):
                if header.id in tasks or len(tasks) >= MAX_IN_FLIGHT:
                    await self._send(ws, send_lock, _busy(header.id))
                    continue
                task = asyncio.get_running_loop().create_task(
                    self._answer(ws, send_lock, local, header, frame.body)
                )
                tasks[header.id] = task
                task.add_done_callback(_forget(tasks, header.id))
            else:
                self._log.warning("dialout.garbage_frame", reason="a res frame from the controller")
                await ws.close(code=1002, message=b"protocol error")
                return

    async def _answer(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        send_lock: asyncio.Lock,
        local: aiohttp.ClientSession,
        request: Request,
        body: bytes,
    ) -> None:
        try:
            async with local.request(
                request.method,
                self.local_url + request.path,
                headers=request.headers,
                data=body if body else None,
                allow_redirects=False,
            ) as resp:
                payload = await read_capped(resp.content, _ANSWER_CAP)
                if len(payload) > _ANSWER_CAP:
                    frame = _error(request.id, 502, "answer exceeds the tunnel's frame cap")
                else:
                    answer = Response(
                        t="res",
                        id=request.id,
                        status=resp.status,
                        headers=relayed_headers(resp.headers),
                    )
                    frame = encode(answer, payload)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            frame = _error(request.id, 502, f"agent's own listener: {exc.__class__.__name__}")
        await self._send(ws, send_lock, frame)

    async def _send(
        self, ws: aiohttp.ClientWebSocketResponse, lock: asyncio.Lock, frame: bytes
    ) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            async with lock:
                await ws.send_bytes(frame)


def _forget(
    tasks: dict[int, asyncio.Task[None]], request_id: int
) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        if tasks.get(request_id) is task:
            del tasks[request_id]

    return done


def _error(request_id: int, status: int, message: str) -> bytes:
    import json

    body = json.dumps({"error": message}).encode()
    header = Response(
        t="res", id=request_id, status=status, headers={"Content-Type": "application/json"}
    )
    return encode(header, body)


def _busy(request_id: int) -> bytes:
    return _error(request_id, 503, "too many tunnelled requests in flight on this agent")
