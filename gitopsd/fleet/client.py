"""The controller's HTTP client for edge agents (aiohttp; one session, bounded concurrency)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import ValidationError

from gitopsd.errors import AgentAuthError, AgentError
from gitopsd.fleet.live import LiveNode, LiveState
from gitopsd.fleet.longpoll import HeldConnection, LongPollError
from gitopsd.fleet.probe import InventoryProbe
from gitopsd.fleet.tokens import REFUSED_TOKEN, FleetAuth, excerpt
from gitopsd.fleet.tunnel import relay_base
from gitopsd.fleet.watch import InventoryWatch
from gitopsd.fleet.wire import WireHealth, WireInventory
from gitopsd.http_body import read_capped
from gitopsd.log import get_logger
from gitopsd.manifest.models import is_dial_out

T = TypeVar("T")
_RETRYABLE = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
# The largest answer read from an agent: an inventory of 2,000 functions is ~0.5 MB.
MAX_ANSWER_BYTES = 8 << 20
PROBE_ROUND = 4096  # nodes asked "unchanged?" at once by the raw inventory probe


def bucket_key(secret: str, function: str) -> str:
    """The key of `function`'s sticky buckets on every agent (docs/agent-api.md "Routing"):
    hex(HMAC-SHA256(fleet secret, "gitopsd sticky bucket\n" + function)). The same on every
    node, so one user keeps one version across nodes; unknown outside the fleet, so nobody
    can aim requests at a canary's users. No node token shares its message (a node name
    has no space), and the key tells nothing of the secret."""
    message = f"gitopsd sticky bucket\n{function}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class AgentClient:
    """Talks to agents by name; `addresses` maps node name to base URL.

    `token` is the fleet secret (per-node tokens are derived from it, fleet/tokens.py) or a
    FleetAuth that also says the mode and the address allow-list. Each node is sent its own
    token only, and no redirect is ever followed: a token goes to the address Git names."""

    def __init__(
        self,
        addresses: Mapping[str, str],
        token: str | FleetAuth | None,
        timeout: float = 10.0,
        concurrency: int = 64,
        retries: int = 2,
        watch_seconds: float = 0.0,
    ) -> None:
        """`watch_seconds` > 0 keeps one held inventory request per node (fleet/watch.py):
        for a long-running client (the daemon), not for one-shot commands."""
        self.addresses = dict(addresses)
        self.auth = token if isinstance(token, FleetAuth) else FleetAuth(token)
        self._authorizations: dict[tuple[str, str], str | None] = {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # The probe holds one kept-alive connection per node anyway, and one round for the
        # whole fleet lets replies share event-loop wake-ups (about 12 % less CPU than rounds
        # of 64 for 500 nodes); the cap only bounds the burst of writes.
        self._probe = InventoryProbe(self.authorization, timeout, max(concurrency, PROBE_ROUND))
        self._limit = asyncio.Semaphore(concurrency)
        self._retries = retries
        self._session: aiohttp.ClientSession | None = None
        self.request_errors = 0
        self.on_error: Callable[[str], None] | None = None  # node name of each failed request
        # node -> (address, ETag, inventory): an agent whose generation did not move
        # answers 304 to If-None-Match, so an unchanged fleet costs one tiny reply per node.
        self._inventories: dict[str, tuple[str, str, LiveNode]] = {}
        self.watch = InventoryWatch(self, watch_seconds)
        self._held: dict[str, HeldConnection] = {}  # node -> connection of its held request
        # An agent changed by someone else (an operator, another controller, a restart):
        # called with the node's name so that the daemon can reconcile at once.
        self.on_change: Callable[[str], None] | None = None
        # Changes this client makes must not look like someone else's, and a node changed by
        # this client is read again before its cache is trusted: node -> changes in flight,
        # node -> tick at the end of its newest change.
        self._changing: dict[str, int] = {}
        self._changed_at: dict[str, int] = {}
        self._ticks = 0

    async def __aenter__(self) -> AgentClient:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        # No session-wide Authorization header: each request carries its node's own token.
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.watch.close()
        for conn in self._held.values():
            conn.close()
        self._probe.close()
        if self._session is not None:
            await self._session.close()

    # one request ---------------------------------------------------------------------------

    def base(self, node: str) -> str | None:
        """The base URL of `node`'s agent API: its address, or for a dial-out node the
        controller's relay (fleet/tunnel.py) when this process knows `[fleet] listen`."""
        address = self.addresses.get(node)
        if address is None or not is_dial_out(address) or self.auth.relay is None:
            return address
        return relay_base(self.auth.relay, node)

    def _dial_out(self, node: str) -> bool:
        return is_dial_out(self.addresses.get(node, ""))

    def _refusal(self, node: str, base: str) -> str:
        if self._dial_out(node):
            return (
                f"{REFUSED_TOKEN}: a dial-out node's token is derived from its name; install "
                f"`gitopsd agent-token {node} --dial-out` on it"
            )
        return self.auth.refusal(node, base)

    def authorization(self, node: str, base: str) -> str | None:
        """The Authorization header for `node` at `base` (its own token), None without a
        secret; AddressNotAllowed (an AgentError) when `base` is outside the allow-list
        (which names where agents listen: a dial-out node is reached through the relay)."""
        key = (node, base)
        if key not in self._authorizations:
            if self._dial_out(node):
                token = self.auth.dial_out_token_for(node)
            else:
                token = self.auth.token_for(node, base)
            if len(self._authorizations) > 65536:
                self._authorizations.clear()
            self._authorizations[key] = f"Bearer {token}" if token else None
        return self._authorizations[key]

    async def _call(
        self,
        node: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        ok: Iterable[int] = (200, 201),
        allow: Iterable[int] = (),
        headers: Mapping[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        session = self._session
        if session is None:
            raise RuntimeError("AgentClient used outside 'async with'")
        base = self.base(node)
        if base is None:
            raise AgentError(node, "no address known for this node")
        if is_dial_out(base):
            raise AgentError(
                node,
                "a dial-out node, reached only through the controller's [fleet] listen, "
                "which this process's config does not set",
            )
        url = base.rstrip("/") + path
        extra = dict(headers or {})
        authorization = self.authorization(node, base)  # refused addresses get no request
        if authorization is not None:
            extra["Authorization"] = authorization
        if data is not None:
            extra["Content-Type"] = "application/wasm"
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                async with (
                    self._limit,
                    session.request(
                        method,
                        url,
                        json=json,
                        data=data,
                        headers=extra or None,
                        allow_redirects=False,
                    ) as resp,
                ):
                    try:
                        body = await _body(resp)
                    except _TooLarge as exc:
                        raise AgentError(
                            node, f"{method} {path}: answer refused, {exc}", resp.status
                        ) from None
                    if response_headers is not None:  # names in lower case
                        response_headers.update((k.lower(), v) for k, v in resp.headers.items())
                    if resp.status == 401:
                        raise AgentAuthError(node, self._refusal(node, base), 401)
                    if resp.status in ok or resp.status in allow:
                        return resp.status, body
                    if 300 <= resp.status < 400:
                        where = excerpt(resp.headers.get("Location", ""), 120)
                        raise AgentError(
                            node,
                            f"{method} {path} -> {resp.status} redirect to {where!r}: not "
                            "followed (agents never redirect; a token goes only to the "
                            "address Git names)",
                            resp.status,
                        )
                    error = AgentError(
                        node,
                        f"{method} {path} -> {resp.status}: {answer_excerpt(body)}",
                        resp.status,
                    )
                    if resp.status < 500:
                        raise error
                    last = error
            except _RETRYABLE as exc:
                last = AgentError(
                    node, f"unreachable at {base}: {exc.__class__.__name__} {excerpt(str(exc))}"
                )
            except aiohttp.ClientError as exc:
                # Not HTTP, or broken HTTP (aiohttp quotes the bytes it got): whatever listens
                # there is no agent; say so briefly, never with all that it sent.
                raise AgentError(
                    node,
                    f"{method} {path}: not an agent's answer: {exc.__class__.__name__} "
                    f"{excerpt(str(exc))}",
                ) from None
            if attempt < self._retries:
                await asyncio.sleep(0.05 * 2**attempt)
        self.request_errors += 1
        if self.on_error is not None:
            self.on_error(node)
        assert last is not None
        raise last if isinstance(last, AgentError) else AgentError(node, str(last))

    # the agent API ---------------------------------------------------------------------------

    async def inventory(self, node: str) -> LiveNode:
        tick = self._tick()
        base = self.base(node) or ""
        cached = self._inventories.get(node)
        if cached is not None and cached[0] != base:
            cached = None
        got: dict[str, str] = {}
        status, body = await self._call(
            node,
            "GET",
            "/inventory",
            allow=(304,) if cached else (),
            headers={"If-None-Match": cached[1]} if cached else None,
            response_headers=got,
        )
        if status == 304 and cached is not None:
            self._read(node, tick)
            return cached[2]
        live = self._remember(node, base, body, got.get("etag"))
        self._read(node, tick)
        return live

    def _remember(self, node: str, base: str, body: Any, etag: str | None) -> LiveNode:
        """Parse an inventory answer and cache it under its ETag."""
        try:
            live = LiveNode.from_wire(node, WireInventory.model_validate(body))
        except ValidationError as exc:
            raise AgentError(node, f"invalid inventory: {exc.errors()[0]['msg']}") from exc
        if etag:
            self._inventories[node] = (base, etag, live)
        else:
            self._inventories.pop(node, None)
        return live

    # what this client changed ----------------------------------------------------------------

    def _tick(self) -> int:
        self._ticks += 1
        return self._ticks

    def _touched(self, node: str) -> bool:
        return node in self._changing or node in self._changed_at

    def _read(self, node: str, tick: int) -> None:
        """`node`'s inventory was read by a request that began at `tick`: if no change of
        this client was in flight or ended after that, the cache is the truth again."""
        if node not in self._changing and self._changed_at.get(node, -1) < tick:
            self._changed_at.pop(node, None)
        if node in self._inventories:
            self.watch.ensure(node)

    @contextlib.asynccontextmanager
    async def _change(self, node: str) -> AsyncIterator[None]:
        self._changing[node] = self._changing.get(node, 0) + 1
        try:
            yield
        finally:
            left = self._changing[node] - 1
            if left:
                self._changing[node] = left
            else:
                del self._changing[node]
            self._changed_at[node] = self._tick()

    # held inventory requests (fleet/watch.py) ------------------------------------------------

    def watch_target(self, node: str) -> tuple[str, str] | None:
        cached = self._inventories.get(node)
        if cached is None or cached[0] != self.base(node):
            return None
        return cached[0], cached[1]

    async def held_inventory(self, node: str, base: str, etag: str, seconds: float) -> bool:
        if base.startswith("http://"):
            status, new_etag, body = await self._held_raw(node, base, etag, seconds)
        else:
            status, new_etag, body = await self._held_aiohttp(node, base, etag, seconds)
        if status == 304:
            return False
        if status == 401:
            raise AgentAuthError(node, self._refusal(node, base), 401)
        if status != 200:
            raise AgentError(
                node, f"GET /inventory?wait -> {status}: {answer_excerpt(body)}", status
            )
        if self.watch_target(node) != (base, etag):
            return True  # re-addressed or re-read meanwhile: that read is the newer one
        self._remember(node, base, body, new_etag)
        if not self._touched(node) and self.on_change is not None:
            self.on_change(node)
        return True

    async def _held_raw(
        self, node: str, base: str, etag: str, seconds: float
    ) -> tuple[int, str | None, Any]:
        conn = self._held.get(node)
        if conn is None or conn.base != base:
            if conn is not None:
                conn.close()
            authorization = self.authorization(node, base)
            conn = self._held[node] = HeldConnection(base, authorization, MAX_ANSWER_BYTES)
        try:
            answer = await conn.get(etag, seconds, self._timeout.total or 10.0)
        except LongPollError as exc:
            raise AgentError(node, f"held inventory request: {exc}") from None
        return answer.status, answer.etag, answer.body

    async def _held_aiohttp(
        self, node: str, base: str, etag: str, seconds: float
    ) -> tuple[int, str | None, Any]:
        session = self._session
        if session is None:
            raise RuntimeError("AgentClient used outside 'async with'")
        timeout = aiohttp.ClientTimeout(total=seconds + (self._timeout.total or 10.0))
        headers = {"If-None-Match": etag}
        authorization = self.authorization(node, base)
        if authorization is not None:
            headers["Authorization"] = authorization
        async with session.get(
            base.rstrip("/") + "/inventory",
            params={"wait": f"{seconds:g}"},
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
        ) as resp:
            try:
                body = await _body(resp)
            except _TooLarge as exc:
                raise AgentError(node, f"held inventory answer refused, {exc}") from None
            return resp.status, resp.headers.get("ETag"), body

    def watch_lost(self, node: str, reason: str) -> None:
        get_logger(component="fleet").info(
            "inventory watch ended", node=node, reason=excerpt(reason)
        )
        if not self._touched(node) and self.on_change is not None:
            self.on_change(node)

    async def ensure_module(self, node: str, sha256: str, wasm: bytes) -> None:
        status, _ = await self._call(node, "HEAD", f"/modules/{sha256}", allow=(404,))
        if status == 404:
            await self._call(node, "PUT", f"/modules/{sha256}", data=wasm)

    async def load_version(self, node: str, function: str, version: str, body: Any) -> None:
        async with self._change(node):
            await self._call(node, "PUT", f"/functions/{function}/versions/{version}", json=body)

    async def set_traffic(
        self,
        node: str,
        function: str,
        weights: list[tuple[str, float]],
        sticky_header: str | None = None,
        rules: list[dict[str, str]] | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "weights": [{"version": v, "percent": p} for v, p in weights],
            "rules": rules or [],
        }
        if sticky_header:
            body["stickyHeader"] = sticky_header
        if self.auth.secret is not None:
            body["bucketKey"] = bucket_key(self.auth.secret, function)
        async with self._change(node):
            await self._call(node, "PUT", f"/functions/{function}/traffic", json=body)

    async def health(self, node: str, function: str, version: str, timeout_ms: int) -> WireHealth:
        _, body = await self._call(
            node,
            "POST",
            f"/functions/{function}/versions/{version}/health",
            json={"timeoutMs": timeout_ms},
        )
        try:
            return WireHealth.model_validate(body)
        except ValidationError as exc:
            raise AgentError(node, f"invalid health answer: {exc.errors()[0]['msg']}") from exc

    async def metrics(self, node: str, function: str) -> Mapping[str, Any]:
        _, body = await self._call(node, "GET", f"/functions/{function}/metrics")
        versions = body.get("versions", {}) if isinstance(body, dict) else {}
        return versions if isinstance(versions, dict) else {}

    async def delete_version(self, node: str, function: str, version: str) -> None:
        async with self._change(node):
            await self._call(
                node, "DELETE", f"/functions/{function}/versions/{version}", allow=(404,)
            )

    async def delete_function(self, node: str, function: str) -> None:
        async with self._change(node):
            await self._call(node, "DELETE", f"/functions/{function}", allow=(404,))

    # many nodes ------------------------------------------------------------------------------

    async def live_state(self, nodes: Iterable[str]) -> LiveState:
        """Every node's inventory; an unreachable node is recorded in `errors`, not raised."""
        names = sorted(set(nodes))
        known = {
            n: (c[0], c[1])
            for n in names
            if (c := self._inventories.get(n)) is not None and c[0] == self.base(n)
        }
        held = self.watch.held
        # Held at the cached ETag and not changed by us since the last read: no request.
        watched = {
            n for n, (_, etag) in known.items() if held.get(n) == etag and not self._touched(n)
        }
        asked = {n: known[n] for n in known if n not in watched}
        tick = self._tick()
        same = await self._probe.unchanged(asked) if asked else set()
        for node in same:
            self._read(node, tick)
        same |= watched
        results: dict[str, LiveNode | Exception] = {n: self._inventories[n][2] for n in same}
        results |= await gather_nodes([n for n in names if n not in same], self.inventory)
        live = {n: r for n in names if isinstance(r := results[n], LiveNode)}
        errors = {n: str(r) for n in names if isinstance(r := results[n], Exception)}
        return LiveState(nodes=live, errors=errors)


async def gather_nodes(
    nodes: Iterable[str], call: Callable[[str], Awaitable[T]]
) -> dict[str, T | Exception]:
    """Run `call(node)` for every node concurrently; exceptions come back as values."""
    names = list(nodes)
    results = await asyncio.gather(*(call(n) for n in names), return_exceptions=True)
    out: dict[str, T | Exception] = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
        out[name] = result
    return out


def answer_excerpt(body: Any) -> str:
    """What an error message may show of an answer: its JSON `error` field or its text, as a
    short escaped excerpt (the answer may come from anything listening at that address)."""
    message = body.get("error") if isinstance(body, dict) else None
    return excerpt(message if isinstance(message, str) and message else body)


class _TooLarge(Exception):
    """An agent's answer exceeds MAX_ANSWER_BYTES."""


async def _body(resp: aiohttp.ClientResponse) -> Any:
    """The answer's JSON (or text), read only up to MAX_ANSWER_BYTES: a broken or hostile
    agent must not be able to grow the controller by sending a huge body."""
    if resp.method == "HEAD":
        return None
    if resp.content_length is not None and resp.content_length > MAX_ANSWER_BYTES:
        raise _TooLarge(f"{resp.content_length} bytes")
    raw = await read_capped(resp.content, MAX_ANSWER_BYTES)
    if len(raw) > MAX_ANSWER_BYTES:
        raise _TooLarge(f"more than {MAX_ANSWER_BYTES} bytes")
    # JSON is UTF-8 (RFC 8259); a charset named by a broken agent is not trusted.
    text = raw.decode("utf-8", errors="replace")
    if resp.content_type == "application/json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
