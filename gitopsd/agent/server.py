"""The agent's HTTP API (docs/agent-api.md) as an aiohttp application.

Handlers translate HTTP to `AgentService` calls and back; one middleware does bearer auth
for the control endpoints, reads each request's body under the data plane's deadline and
budget, tells the data plane when a request starts and ends (its deadlines), and turns
typed errors into `{"error": ...}` answers. Plain `POST /fn/{fn}` calls never get here: the
agent's own HTTP path answers them (data_plane.py) and hands every other connection to this
application.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from gitopsd.agent import invocation
from gitopsd.agent.api import LoadVersion, RunHealth, SetTraffic, explain
from gitopsd.agent.data_plane import (
    Connection,
    DataPlane,
    over_body_budget,
    over_connection_cap,
)
from gitopsd.agent.errors import AgentRequestError, MemoryBudgetExceeded, PayloadTooLarge
from gitopsd.agent.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gitopsd.agent.metrics import AgentCollector, exposition
from gitopsd.agent.service import AgentService
from gitopsd.errors import GitopsdError, ModuleError

SERVICE: web.AppKey[AgentService] = web.AppKey("service", AgentService)
TOKEN: web.AppKey[bytes] = web.AppKey("token", bytes)
PLANE: web.AppKey[DataPlane] = web.AppKey("plane", DataPlane)
METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics", CollectorRegistry)
MAX_INVENTORY_WAIT_S = 300.0  # longest `GET /inventory?wait=` an agent holds

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Model = TypeVar("Model", bound=BaseModel)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _closing(status: int, message: str) -> web.Response:
    """An error answer after which the connection is closed (its body was not read)."""
    response = _error(status, message)
    response.force_close()
    return response


def _is_open(path: str) -> bool:
    """The data plane and the liveness probe need no token."""
    return path == "/healthz" or path.startswith("/fn/")


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    plane = request.app[PLANE]
    connection = plane.connection_of(request.protocol)
    if connection is None:  # not one of the data plane's connections: nothing to report
        return await _guarded(request, handler, plane, None)
    connection.request_started()
    try:
        return await _guarded(request, handler, plane, connection)
    finally:
        connection.request_finished()


async def _guarded(
    request: web.Request, handler: Handler, plane: DataPlane, connection: Connection | None
) -> web.StreamResponse:
    open_path = _is_open(request.path)
    if not open_path:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest: the time taken must not tell how much of the token was right.
        # aiohttp hands over bytes that are not UTF-8 as surrogates: back to those bytes.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), request.app[TOKEN]
        ):
            reason = "missing" if not header else "wrong"
            return _error(
                401,
                f"{reason} bearer token: send 'Authorization: Bearer <token>' with the agent's "
                "token (--token-file, or <data-dir>/token)",
            )
    elif request.path.startswith("/fn/") and connection is not None and connection.control_only:
        plane.counters.refuse("connection_limit")
        return _closing(503, over_connection_cap(plane.max_connections))
    held = 0
    try:
        held = await _read_body(request, plane, open_path)
        if connection is not None:
            connection.body_read()
        return await handler(request)
    except _Refused as exc:
        return _closing(exc.status, exc.message)
    except MemoryBudgetExceeded as exc:
        figures = {"budgetMiB": exc.budget, "usedMiB": exc.used, "requestedMiB": exc.requested}
        return web.json_response({"error": str(exc), **figures}, status=exc.status)
    except AgentRequestError as exc:
        return _error(exc.status, str(exc))
    except ModuleError as exc:
        return _error(400, str(exc))
    except web.HTTPRequestEntityTooLarge:
        cap = request.app[SERVICE].settings.max_module_bytes
        return _error(413, f"body is over the {cap}-byte size cap")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except GitopsdError as exc:  # e.g. StoreError: state could not be written
        request.app[SERVICE].log.error("agent.request_failed", path=request.path, error=str(exc))
        return _error(500, str(exc))
    except Exception as exc:  # a bug: answer in the contract's shape, keep serving
        request.app[SERVICE].log.exception("agent.request_crashed", path=request.path)
        plane.counters.internal_errors += 1
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")
    finally:
        plane.release(held)


class _Refused(Exception):
    """A request refused before its handler runs; its body was not read (or not all)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_body(request: web.Request, plane: DataPlane, open_path: bool) -> int:
    """Read the body (handlers get it from aiohttp's cache) within the body deadline; on
    the open paths also within the bodies' budget. Returns the bytes reserved in it.

    A body declared over the size cap is left to the handler, which refuses it unread.
    """
    cap = request.app[SERVICE].settings.max_module_bytes
    length = request.content_length
    if not request.body_exists or (length is not None and length > cap):
        return 0
    held = 0
    if open_path:  # control requests carry a valid token: they are not held to the budget
        held = cap if length is None else length
        if not plane.hold(held):
            plane.counters.refuse("body_budget")
            raise _Refused(503, over_body_budget(plane.body_budget))
    try:
        async with asyncio.timeout(plane.body_timeout):
            await request.read()
    except TimeoutError:
        plane.release(held)
        plane.counters.refuse("body_timeout")
        raise _Refused(408, f"request body not complete within {plane.body_timeout:g} s") from None
    except BaseException:
        plane.release(held)
        raise
    return held


async def _json_body(request: web.Request, model: type[Model], optional: bool = False) -> Model:
    raw = await request.read()
    if not raw.strip() and optional:
        return model()
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:
        raise AgentRequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser goes: no body of ours is
        raise AgentRequestError("body is nested too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise AgentRequestError(f"invalid body: {explain(exc)}") from None


def _ok(data: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    return web.json_response(data if data is not None else {"ok": True}, status=status)


async def healthz(request: web.Request) -> web.Response:
    """`GET /healthz`: liveness, no auth."""
    return _ok({"status": "ok", "node": request.app[SERVICE].settings.name})


async def head_module(request: web.Request) -> web.Response:
    """`HEAD /modules/{sha256}`: 200 if stored, 404 if not."""
    stored = request.app[SERVICE].has_module(request.match_info["sha"])
    # aiohttp leaves Content-Length out of a HEAD answer without a body, and a client that
    # then cannot tell where the answer ends (aiohttp's, the controller's) closes the
    # connection: every deploy's HEAD cost each node a new connection for its next request.
    return web.Response(status=200 if stored else 404, headers={"Content-Length": "0"})


async def put_module(request: web.Request) -> web.Response:
    """`PUT /modules/{sha256}`: store a module whose digest matches."""
    service = request.app[SERVICE]
    cap = service.settings.max_module_bytes
    if request.content_length is not None and request.content_length > cap:
        raise PayloadTooLarge(f"module is {request.content_length} bytes, the cap is {cap}")
    data = await request.read()
    sha = await service.upload(request.match_info["sha"], data)
    return _ok({"sha256": sha}, status=201)


async def put_version(request: web.Request) -> web.Response:
    """`PUT /functions/{fn}/versions/{version}`: load a version after a link check."""
    body = await _json_body(request, LoadVersion)
    await request.app[SERVICE].load_version(
        request.match_info["fn"], request.match_info["version"], body
    )
    return _ok({"loaded": True})


async def delete_version(request: web.Request) -> web.Response:
    """`DELETE /functions/{fn}/versions/{version}`."""
    await request.app[SERVICE].delete_version(
        request.match_info["fn"], request.match_info["version"]
    )
    return _ok({"deleted": True})


async def delete_function(request: web.Request) -> web.Response:
    """`DELETE /functions/{fn}`."""
    await request.app[SERVICE].delete_function(request.match_info["fn"])
    return _ok({"deleted": True})


async def put_traffic(request: web.Request) -> web.Response:
    """`PUT /functions/{fn}/traffic`: weights, rules, sticky header, bucket key."""
    body = await _json_body(request, SetTraffic)
    await request.app[SERVICE].set_traffic(request.match_info["fn"], body)
    return _ok()


async def post_health(request: web.Request) -> web.Response:
    """`POST /functions/{fn}/versions/{version}/health`."""
    body = await _json_body(request, RunHealth, optional=True)
    result = await request.app[SERVICE].health(
        request.match_info["fn"], request.match_info["version"], body.timeout_ms
    )
    return _ok(result)


async def inventory(request: web.Request) -> web.Response:
    """`GET /inventory`; 304 when `If-None-Match` names the current ETag (generation).

    With `?wait=SECONDS` and a matching `If-None-Match`, the answer is held until the
    inventory changes (200 at once) or the wait ends (304): a controller keeps one such
    request open per agent and learns of every change without asking again and again.
    """
    service = request.app[SERVICE]
    wait = _wait_seconds(request)
    asked = request.headers.getall("If-None-Match", ())
    etag = service.inventory_etag()
    if wait and etag in asked:
        await service.inventory_moved(etag, wait)
        if service.stopping:  # the controller must not take a stopping agent for unchanged
            return _error(503, "agent stopping")
        etag = service.inventory_etag()
    if etag in asked:
        return web.Response(status=304, headers={"ETag": etag})
    return web.json_response(service.inventory(), headers={"ETag": etag})


def _wait_seconds(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_INVENTORY_WAIT_S:
        raise AgentRequestError(
            f"wait must be a number of seconds from 0 to {MAX_INVENTORY_WAIT_S:g}, not {raw!r}"
        )
    return wait


async def function_metrics(request: web.Request) -> web.Response:
    """`GET /functions/{fn}/metrics`."""
    return _ok(request.app[SERVICE].function_metrics(request.match_info["fn"]))


async def prometheus(request: web.Request) -> web.Response:
    """`GET /metrics`: Prometheus text format."""
    return web.Response(
        body=exposition(request.app[METRICS]), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )


async def invoke(request: web.Request) -> web.Response:
    """`POST /fn/{fn}` for the requests the data plane's fast path hands over
    (data_plane.py): chunked bodies, percent-encoded paths, HTTP/1.0 and the like."""
    service = request.app[SERVICE]
    body = await request.read()
    for name, value in request.headers.items():
        if not value.isascii() and not _is_utf8(value):
            # The module gets header values as UTF-8 environment variables: refuse what
            # would not be one, before any version is picked (a client error, not its).
            request.app[PLANE].counters.refuse("bad_header")
            raise AgentRequestError(
                f"header {name} is not valid UTF-8: the agent passes header values to the "
                "module as UTF-8 environment variables"
            )
    answer = await invocation.answer_call(
        service,
        request.match_info["fn"],
        path=request.path,
        query=request.query_string,
        headers=list(request.headers.items()),
        lookup=request.headers,
        body=body,
    )
    headers = {"Content-Type": answer.content_type}
    if answer.version is not None:
        headers[invocation.VERSION_HEADER] = answer.version
    return web.Response(body=answer.body, status=answer.status, headers=headers)


def _is_utf8(value: str) -> bool:
    """aiohttp decodes header bytes as UTF-8 with surrogates for what is not."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def create_app(service: AgentService, token: str, plane: DataPlane) -> web.Application:
    """The aiohttp application of one agent, behind `plane` (its deadlines, its counters)."""
    # One cap for every body: modules are the largest thing the agent accepts.
    app = web.Application(
        middlewares=[_middleware], client_max_size=service.settings.max_module_bytes
    )
    app[SERVICE] = service
    app[TOKEN] = token.encode()
    app[PLANE] = plane
    # This agent's own registry: several agents may share a process (`agent --count N`).
    metrics = app[METRICS] = CollectorRegistry(auto_describe=False)
    metrics.register(
        AgentCollector(service.node_figures, lambda: service.registry.series(), plane.counters)
    )

    async def release_held(_app: web.Application) -> None:
        service.stop_holding()

    app.on_shutdown.append(release_held)
    router = app.router
    router.add_get("/healthz", healthz)
    router.add_route("HEAD", "/modules/{sha}", head_module)
    router.add_put("/modules/{sha}", put_module)
    router.add_put("/functions/{fn}/versions/{version}", put_version)
    router.add_delete("/functions/{fn}/versions/{version}", delete_version)
    router.add_delete("/functions/{fn}", delete_function)
    router.add_put("/functions/{fn}/traffic", put_traffic)
    router.add_post("/functions/{fn}/versions/{version}/health", post_health)
    router.add_get("/inventory", inventory)
    router.add_get("/functions/{fn}/metrics", function_metrics)
    router.add_get("/metrics", prometheus)
    router.add_post("/fn/{fn}", invoke)
    return app
