"""Webhook receiver for GitHub, Gitea and GitLab push events.

Order of checks, cheapest and safest first: size and time (the body is read with a hard cap
and a deadline before anything parses it), signature (constant-time, over the body as sent),
delivery id (present and printable), replay (the same delivery id, or the same signed body,
seen before), then JSON. A valid push to the watched branch asks the daemon for a reconcile
now; GitHub's `ping` (sent when a hook is created) is answered and asks for nothing.

GitHub and Gitea let a hook deliver `application/json` or `application/x-www-form-urlencoded`
(`payload=<url-encoded JSON>`); both are read. The signature covers the form body as sent.

Header values reach us as aiohttp decodes them (UTF-8, undecodable bytes kept as surrogate
escapes), so every comparison works on the header's raw bytes: a header that is not UTF-8
can only fail to match, it cannot raise.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qs

from aiohttp import web

from gitopsd.clock import Clock, SystemClock
from gitopsd.log import get_logger

MAX_BODY = 1024 * 1024
# A forge sends its whole delivery at once (GitHub gives up after 10 s); a body trickling in
# slower than this holds a connection for nothing.
BODY_TIMEOUT = 5.0
FORGES = ("github", "gitea", "gitlab")
# How long a delivery id and a signed body are remembered. A repeat inside this window is a
# replay (409); after it, a repeat asks for one more pass, which is harmless (passes are
# level-triggered). Memory stays bounded by REPLAY_MEMORY whatever the window.
REPLAY_TTL = 24 * 3600.0
REPLAY_MEMORY = 20_000  # keys remembered: each delivery adds its id and its body digest
# Forges send UUIDs (GitHub, Gitea, GitLab); anything else is not a delivery id we log.
_DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,128}")


class ReplayGuard:
    """Remembers keys for `ttl` seconds, at most `size` of them (the oldest go first).

    A delivery is new only when none of its keys was seen inside the window. Keys are not
    refreshed by a replay: a delivery is accepted at most once per window.
    """

    def __init__(
        self, size: int = REPLAY_MEMORY, ttl: float = REPLAY_TTL, clock: Clock | None = None
    ) -> None:
        self.size = size
        self.ttl = ttl
        self.clock: Clock = clock or SystemClock()
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, *keys: str) -> bool:
        """True (and the keys remembered) when no key was seen inside the window."""
        now = self.clock.now()
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]
        if any(key in self._seen for key in keys):
            return False
        for key in keys:
            self._seen[key] = now + self.ttl
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True


def _raw(value: str) -> bytes:
    """A header value's bytes as sent (aiohttp keeps undecodable bytes as surrogates)."""
    return value.encode("utf-8", "surrogateescape")


def signature_ok(forge: str, secret: bytes, body: bytes, headers: dict[str, str]) -> bool:
    """Check the forge's signature header against the body, in constant time."""
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if forge == "github":
        given = _raw(headers.get("x-hub-signature-256", ""))
        return hmac.compare_digest(given, f"sha256={digest}".encode())
    if forge == "gitea":
        given = _raw(headers.get("x-gitea-signature", ""))
        return hmac.compare_digest(given, digest.encode())
    given = _raw(headers.get("x-gitlab-token", ""))
    return hmac.compare_digest(given, secret)


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


def body_key(body: bytes) -> str:
    """The replay key of what the signature covers: the body's digest.

    The delivery id header is not signed, so a captured delivery sent again under a fresh id
    is still recognised by this key. The forge is not part of it: GitHub's and Gitea's
    signatures are the same HMAC under the one secret, so a delivery captured on one
    endpoint is a valid delivery on the other.
    """
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


FORM = "application/x-www-form-urlencoded"
FORM_FORGES = ("github", "gitea")  # the forges that offer the form content type
_EVENT_HEADERS = {"github": "x-github-event", "gitea": "x-gitea-event"}


class BodyRefused(ValueError):
    """The delivery's body cannot be read as the forge's JSON payload; the message says why."""


def delivered_json(forge: str, content_type: str, body: bytes) -> object:
    """The JSON payload of a delivery: the body itself, or for GitHub's and Gitea's form
    content type the `payload` field of the URL-encoded body. BodyRefused says why not."""
    media = content_type.split(";", 1)[0].strip().lower()
    if forge in FORM_FORGES and media == FORM:
        try:
            form = body.decode("ascii")  # URL-encoded: every other byte is escaped
        except UnicodeDecodeError:
            raise BodyRefused("form body is not URL-encoded text") from None
        try:
            fields = parse_qs(form, keep_blank_values=True, errors="strict", max_num_fields=20)
        except UnicodeDecodeError:
            raise BodyRefused("payload field is not valid JSON (not UTF-8)") from None
        except ValueError:
            raise BodyRefused("form body has too many fields") from None
        values = fields.get("payload", [])
        if not values:
            raise BodyRefused("form body has no payload field")
        if len(values) > 1:
            raise BodyRefused("form body has more than one payload field")
        text: str | bytes = values[0]
    else:
        text = body
    try:
        return json.loads(text)
    except RecursionError:  # the C decoder recurses per nesting level
        raise BodyRefused("body is JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise BodyRefused("body is not valid JSON") from None


def event_name(forge: str, headers: dict[str, str]) -> str:
    """The forge's event header (`push`, `ping`...), "" when it names none."""
    name = _EVENT_HEADERS.get(forge)
    return headers.get(name, "").strip().lower() if name else ""


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
        clock: Clock | None = None,
    ) -> None:
        self.on_delivery = on_delivery  # (forge, result) for metrics
        self.secret = secret
        self.branch = branch
        self.trigger = trigger
        self.replays = ReplayGuard(clock=clock)
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
        if not _DELIVERY_ID.fullmatch(delivery.partition(":")[2]):
            return self._refuse(400, "delivery id must be 1-128 printable ASCII characters", forge)
        try:
            payload = delivered_json(forge, headers.get("content-type", ""), bytes(body))
        except BodyRefused as exc:
            return self._refuse(400, str(exc), forge)
        if not self.replays.first_time(delivery, body_key(bytes(body))):
            return self._refuse(409, "delivery already received (replay)", forge)
        if event_name(forge, headers) == "ping":
            # A hook was created (or its ping redelivered): it works, nothing to reconcile.
            raw_id = payload.get("hook_id") if isinstance(payload, dict) else None
            hook_id = raw_id if type(raw_id) is int else None  # echoed back: a number only
            if self.on_delivery is not None:
                self.on_delivery(forge, "ping")
            self.log.info("webhook ping", forge=forge, hook_id=hook_id)
            return web.json_response({"status": "pong", "hookId": hook_id})
        ref = pushed_ref(payload)
        if ref is not None and ref != f"refs/heads/{self.branch}":
            return web.json_response({"status": "ignored", "reason": f"push to {ref}"})
        self.accepted += 1
        if self.on_delivery is not None:
            self.on_delivery(forge, "accepted")
        self.trigger(f"webhook {forge} {delivery}")
        return web.json_response({"status": "accepted"}, status=202)
