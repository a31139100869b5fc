"""The status page: an aiohttp application served by the daemon on `[ui] listen`.

Pages (server-rendered, readable without JavaScript): `/`, `/functions/{name}`,
`/rollouts/{id}`; the same data as JSON under `/api/`; live updates as server-sent events
on `/events`; with `[ui] token_file`, a login and the operator actions of the CLI as forms
on the function page. See docs/status-page.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from gitopsd.clock import Clock, SystemClock
from gitopsd.errors import GitopsdError
from gitopsd.http_guard import GuardedListener, start_guarded
from gitopsd.log import get_logger
from gitopsd.ui import audit, views
from gitopsd.ui.auth import LOGIN_COOKIE, SESSION_COOKIE, Session, Sessions, same_token
from gitopsd.ui.events import Event, Subscription
from gitopsd.ui.ports import UiPorts
from gitopsd.ui.readmodel import reads_for
from gitopsd.ui.render import Renderer

LOGIN_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")  # what secrets.token_urlsafe(24) gives

ACTIONS = ("pause", "resume", "promote", "abort", "approve", "rollback")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
KEEPALIVE_S = 15.0
MAX_STREAMS = 200  # open event streams at once; more is a client gone wrong (or hostile)
SSE_RETRY_MS = 1000
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusPage:
    """The application and its state: sessions, open event streams, the renderer."""

    def __init__(self, ports: UiPorts, token: str | None, clock: Clock | None = None) -> None:
        self.ports = ports
        self.store = ports.store
        self.reads = reads_for(ports.store)
        self.sessions = Sessions(token)
        self.clock = clock or SystemClock()
        self.renderer = Renderer()
        # (session id, nonce) -> result of an action, shown once by the page it redirects to
        # (`?done=nonce`): a live refresh of the page running meanwhile cannot take it.
        self.flash: dict[tuple[str, str], str] = {}
        self.streams: set[Subscription] = set()
        self.log = get_logger(component="ui")
        self._static = {
            name: ((resources.files("gitopsd.ui") / "static" / name).read_bytes(), kind)
            for name, kind in STATIC.items()
        }
        self.asset_version = secrets.token_hex(4)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/", self.overview_page)
        r.add_get("/functions/{name}", self.function_page)
        r.add_get("/rollouts/{id}", self.rollout_page)
        r.add_get("/api/overview", self.overview_api)
        r.add_get("/api/functions/{name}", self.function_api)
        r.add_get("/api/rollouts/{id}", self.rollout_api)
        r.add_get("/events", self.events)
        r.add_get("/login", self.login_form)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_post("/functions/{name}/{action}", self.act)
        r.add_get("/static/{file}", self.static)
        r.add_get("/favicon.ico", self.favicon)
        app.on_shutdown.append(self._close_streams)
        app.on_cleanup.append(self._close_reads)
        return app

    # plumbing ---------------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects and errors raised by handlers
            for key, value in SECURITY_HEADERS.items():
                exc.headers.setdefault(key, value)
            raise
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    async def _close_streams(self, _app: web.Application) -> None:
        for sub in list(self.streams):
            sub.close()

    async def _close_reads(self, _app: web.Application) -> None:
        self.reads.close()

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE), self.clock.now())

    def _html(
        self,
        request: web.Request,
        template: str,
        status: int = 200,
        scope: str = "",
        **ctx: Any,
    ) -> web.Response:
        session = self._session(request)
        now = self.clock.now()
        body = self.renderer.render(
            template,
            now,
            generated=views.iso(now),
            scope=scope,
            session=session,
            read_only=self.sessions.read_only,
            flash=self.flash.pop((session.id, request.query.get("done", "")), "")
            if session
            else "",
            asset=self.asset_version,
            path=request.path,
            **ctx,
        )
        response = web.Response(text=body, status=status, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.enable_compression()
        return response

    @staticmethod
    def _json(doc: Any, status: int = 200) -> web.Response:
        response = web.Response(
            text=json.dumps(doc, separators=(",", ":")),
            status=status,
            content_type="application/json",
        )
        response.headers["Cache-Control"] = "no-store"
        response.enable_compression()
        return response

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        if request.path.startswith("/api/") or "text/html" not in request.headers.get(
            "Accept", "text/html"
        ):
            return self._json({"error": message}, status)
        return self._html(request, "message.html", status=status, title="Error", message=message)

    # reading ----------------------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> dict[str, Any]:
        desired = self.ports.desired()
        live = await self.ports.live()
        sha = desired.commit if desired and desired.commit else None
        info = await self.ports.commit(sha) if sha else None
        try:
            page = int(request.query.get("page", "1"))
        except ValueError:
            raise web.HTTPBadRequest(text="page must be a whole number") from None
        doc = views.overview_json(
            self.store,
            self.reads,
            desired,
            live,
            views.commit_json(info, sha),
            page,
            self.clock.now(),
        )
        doc["daemonError"] = self.ports.daemon_error()
        doc["readOnly"] = self.sessions.read_only
        return doc

    async def _function(self, name: str) -> dict[str, Any] | None:
        if not NAME_RE.match(name):
            return None
        desired = self.ports.desired()
        live = await self.ports.live()
        rows = self.store.rollouts(name, limit=views.HISTORY_LIMIT)
        notes = await self.ports.notes(sorted({r.commit for r in rows if r.commit}))
        return views.function_json(
            self.store,
            name,
            desired,
            live,
            notes,
            audit.entries(self.store, name),
            self.clock.now(),
        )

    def _rollout(self, rollout_id: str) -> dict[str, Any] | None:
        if not NAME_RE.match(rollout_id):
            return None
        return views.rollout_json(self.store, rollout_id, self.clock.now())

    async def overview_page(self, request: web.Request) -> web.Response:
        return self._html(
            request, "overview.html", title="Overview", o=await self._overview(request)
        )

    async def overview_api(self, request: web.Request) -> web.Response:
        return self._json(await self._overview(request))

    async def function_page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        doc = await self._function(name)
        if doc is None:
            return self._error(request, 404, f"no function named {name!r} is known here")
        session = self._session(request)
        return self._html(
            request,
            "function.html",
            title=name,
            scope=name,
            f=doc,
            csrf=session.csrf if session else "",
        )

    async def function_api(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        doc = await self._function(name)
        if doc is None:
            return self._json({"error": f"no function named {name!r} is known here"}, 404)
        return self._json(doc)

    async def rollout_page(self, request: web.Request) -> web.Response:
        rollout_id = request.match_info["id"]
        doc = self._rollout(rollout_id)
        if doc is None:
            return self._error(request, 404, f"no rollout {rollout_id!r}")
        return self._html(
            request, "rollout.html", title=f"Rollout {rollout_id}", scope=doc["function"], r=doc
        )

    async def rollout_api(self, request: web.Request) -> web.Response:
        rollout_id = request.match_info["id"]
        doc = self._rollout(rollout_id)
        if doc is None:
            return self._json({"error": f"no rollout {rollout_id!r}"}, 404)
        return self._json(doc)

    async def static(self, request: web.Request) -> web.Response:
        found = self._static.get(request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        response = web.Response(body=body, content_type=kind)
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.enable_compression()
        return response

    async def favicon(self, _request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"/static/favicon.svg?v={self.asset_version}")

    # live -------------------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `step`, `node`, `pass`, `action`, and `reload` when this
        stream fell too far behind (the page then reloads its data once)."""
        if len(self.streams) >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(
                text=f"{MAX_STREAMS} event streams are open already", headers={"Retry-After": "5"}
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        sub = self.ports.events.subscribe()
        self.streams.add(sub)
        try:
            await response.write(f"retry: {SSE_RETRY_MS}\n: connected\n\n".encode())
            while not sub.closed:
                event = await sub.next(KEEPALIVE_S)
                if sub.closed:
                    break
                if sub.overflowed:
                    await response.write(b"event: reload\ndata: {}\n\n")
                    break
                await response.write(b": keepalive\n\n" if event is None else sse_message(event))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.discard(sub)
            self.ports.events.unsubscribe(sub)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    # acting -----------------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        if self.sessions.read_only:
            return self._error(request, 403, "this page is read-only: [ui] token_file is not set")
        # A nonce already held is kept: a second tab, or the page's own live refresh
        # fetching /login again, must not invalidate the form the operator is filling in.
        held = request.cookies.get(LOGIN_COOKIE, "")
        nonce = held if LOGIN_NONCE.fullmatch(held) else secrets.token_urlsafe(24)
        response = self._html(request, "login.html", title="Log in", login_csrf=nonce, error="")
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/login",
            max_age=3600,
        )
        return response

    async def login(self, request: web.Request) -> web.Response:
        if self.sessions.read_only:
            return self._error(request, 403, "this page is read-only: [ui] token_file is not set")
        form = await request.post()
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not same_token(_field(form, "csrf"), nonce):
            return self._error(
                request, 403, "the login form has expired or came from elsewhere: reload it"
            )
        session = self.sessions.login(
            _field(form, "token") or "", _field(form, "who") or "", self.clock.now()
        )
        if session is None:
            self.log.warning("ui login refused", remote=request.remote)
            return self._error(request, 403, "wrong token (or too many wrong tries: wait a minute)")
        self.log.info("ui login", who=session.who, remote=request.remote)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=int(session.expires - self.clock.now()),
        )
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        session = self._session(request)
        form = await request.post()
        if session is None or not same_token(_field(form, "csrf"), session.csrf):
            return self._error(request, 403, "not logged in, or the form lacks its CSRF token")
        self.sessions.logout(session.id)
        response = web.HTTPSeeOther("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    async def act(self, request: web.Request) -> web.Response:
        """One of the CLI's operator commands, by a logged-in operator with the form's CSRF
        token; recorded with who and when, then back to the function page."""
        name, action = request.match_info["name"], request.match_info["action"]
        if action not in ACTIONS or not NAME_RE.match(name):
            return self._error(request, 404, f"no action {action!r}")
        if self.sessions.read_only:
            return self._error(request, 403, "this page is read-only: [ui] token_file is not set")
        session = self._session(request)
        if session is None:
            return self._error(request, 401, "log in with the page's token first")
        form = await request.post()
        if not same_token(_field(form, "csrf"), session.csrf):
            return self._error(request, 403, "the form lacks its CSRF token: reload the page")
        now = self.clock.now()
        try:
            message = await self._run_action(action, name, _field(form, "to") or None)
            ok = True
        except GitopsdError as exc:
            message, ok = str(exc), False
        audit.record(self.store, name, action, session.who, request.remote or "", now, ok, message)
        self.log.info(
            "operator action",
            action=action,
            function=name,
            who=session.who,
            remote=request.remote,
            ok=ok,
            result=message,
        )
        self.ports.events.publish("action", {"function": name, "action": action, "ok": ok})
        nonce = secrets.token_urlsafe(8)
        if len(self.flash) > 1_000:  # results nobody came back for
            self.flash.clear()
        self.flash[(session.id, nonce)] = message if ok else f"refused: {message}"
        raise web.HTTPSeeOther(f"/functions/{name}?done={nonce}")

    async def _run_action(self, action: str, name: str, to: str | None) -> str:
        if action == "rollback":
            if self.ports.rollback is None:
                raise GitopsdError("rollback is not available from this page")
            row = await self.ports.rollback(name, to)
            return f"{name}: {row.state} - {row.message}"
        if self.ports.control is None:
            raise GitopsdError(f"{action} is not available from this page")
        return await asyncio.to_thread(self.ports.control, action, name)


def _field(form: Any, key: str) -> str | None:
    value = form.get(key)
    return value if isinstance(value, str) else None


def sse_message(event: Event) -> bytes:
    """One event in the text/event-stream format."""
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def serve(page: StatusPage, host: str, port: int) -> GuardedListener:
    """Serve `page` on host:port (0: a free port, see `runner.addresses`); stop it with
    `await runner.cleanup()`."""
    return await start_guarded(page.app(), host, port, shutdown_timeout=2.0)
