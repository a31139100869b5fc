"""Webhook receiver for GitHub, Gitea and GitLab push events.

Order of checks, cheapest and safest first: size and time (the body is read with a hard cap
and a deadline before anything parses it), signature (constant-time), replay (delivery id
seen before), then JSON. A valid push to the watched branch asks the daemon for a reconcile now.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from gitopsd.log import get_logger

MAX_BODY = 1024 * 1024
# A forge sends its whole delivery at once (GitHub gives up after 10 s); a body trickling in
# slower than this holds a connection for nothing.
BODY_TIMEOUT = 5.0
FORGES = ("github", "gitea", "gitlab")


class ReplayGuard:
    """Remembers the last `size` delivery ids; a second delivery with the same id is refused."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, delivery: str) -> bool:
        if delivery in self._seen:
            return False
        self._seen[delivery] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


def signature_ok(forge: str, secret: bytes, body: bytes, headers: dict[str, str]) -> bool:
    """Check the forge's signature header against the body, in constant time."""
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if forge == "github":
        given = headers.get("x-hub-signature-256", "")
        return hmac.compare_digest(given.encode(), f"sha256={digest}".encode())
    if forge == "gitea":
        given = headers.get("x-gitea-signature", "")
        return hmac.compare_digest(given.encode(), digest.encode())
    given = headers.get("x-gitlab-token", "")
    return hmac.compare_digest(given.encode(), secret)


def delivery_id(forge: str, headers: dict[str, str]) -> str | None:
    """The forge's unique id of this delivery, used for the replay guard."""
    names = {
        "github": ("x-github-delivery",),
        "gitea": ("x-gitea-delivery",),
        "gitlab": ("x-gitlab-event-uuid", "idempotency-key", "x-gitlab-webhook-uuid"),
    }[forge]
    for name in names:
        if headers.get(name):
            return f"{forge}:{headers[name]}"
    return None


def pushed_ref(payload: object) -> str | None:
    """The ref a push event moved (`refs/heads/main`), None for other events."""
    if isinstance(payload, dict) and isinstance(payload.get("ref"), str):
        return str(payload["ref"])
    return None


class WebhookReceiver:
    """aiohttp handlers for `POST /hooks/{forge}`; `trigger(reason)` asks for a reconcile."""

    def __init__(
        self,
        secret: bytes,
        branch: str,
        trigger: Callable[[str], None],
        on_delivery: Callable[[str, str], None] | None = None,
    ) -> None:
        self.on_delivery = on_delivery  # (forge, result) for metrics
        self.secret = secret
        self.branch = branch
        self.trigger = trigger
        self.replays = ReplayGuard()
        self.log = get_logger(component="webhook")
        self.accepted = 0
        self.refused = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/hooks/{forge}", self.handle)
        return app

    def _refuse(self, status: int, message: str, forge: str = "unknown") -> web.Response:
        self.refused += 1
        if self.on_delivery is not None:
            self.on_delivery(forge, str(status))
        self.log.warning("webhook refused", status=status, reason=message)
        return web.json_response({"error": message}, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        forge = request.match_info["forge"]
        if forge not in FORGES:
            return self._refuse(404, f"unknown forge {forge!r}: use one of {', '.join(FORGES)}")
        if (request.content_length or 0) > MAX_BODY:
            return self._refuse(413, f"body over {MAX_BODY} bytes", forge)
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                async for chunk in request.content.iter_chunked(64 * 1024):
                    body.extend(chunk)
                    if len(body) > MAX_BODY:
                        return self._refuse(413, f"body over {MAX_BODY} bytes", forge)
        except TimeoutError:
            return self._refuse(408, f"body not received within {BODY_TIMEOUT:g}s", forge)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not signature_ok(forge, self.secret, bytes(body), headers):
            return self._refuse(401, "bad or missing signature", forge)
        delivery = delivery_id(forge, headers)
        if delivery is None:
            return self._refuse(400, "missing delivery id header", forge)
        if not self.replays.first_time(delivery):
            return self._refuse(409, "delivery already received (replay)", forge)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._refuse(400, "body is not valid JSON", forge)
        ref = pushed_ref(payload)
        if ref is not None and ref != f"refs/heads/{self.branch}":
            return web.json_response({"status": "ignored", "reason": f"push to {ref}"})
        self.accepted += 1
        if self.on_delivery is not None:
            self.on_delivery(forge, "accepted")
        self.trigger(f"webhook {forge} {delivery}")
        return web.json_response({"status": "accepted"}, status=202)
