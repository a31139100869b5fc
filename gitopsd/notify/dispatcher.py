"""Delivery of queued notifications: one asyncio task per receiver, aiohttp, retries.

`publish` is what the engine's event sink, the daemon and `gitopsd sync` call: it filters by
each receiver's events and functions, queues one row per receiver in the outbox and wakes
that receiver's task. It never waits for the network and never raises (a notification is a
report, never a reason to stop a rollout). Each receiver's task sends its oldest row; a 2xx
deletes it; a connection error, a timeout, 408, 425, 429 or a 5xx retries it after a capped
exponential backoff with jitter (Retry-After honoured up to the cap); any other answer is a
refusal that retrying cannot fix: the row is dropped, counted and logged. A row older than
`max_age` is dropped the same way. Rows of one receiver go out in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from gitopsd.errors import ConfigError, GitopsdError
from gitopsd.log import get_logger
from gitopsd.notify.bodies import Kind, body_for
from gitopsd.notify.events import EventName, Notification
from gitopsd.notify.from_engine import draft_notification, notification_of
from gitopsd.notify.outbox import Outbox, Pending

if TYPE_CHECKING:
    from gitopsd.config import NotifyConfig
    from gitopsd.rollout.engine import RolloutEvent

USER_AGENT = "gitopsd"
_RETRYABLE = {408, 425, 429}
_EXCERPT = 200


@dataclass(frozen=True)
class Receiver:
    """One `[[notify]]` entry with its URL read from `url_file`. The URL is a secret (a
    Slack URL is its own credential): it is never logged nor stored; `key` identifies the
    receiver in the outbox across restarts (a digest of kind and URL), `name` in logs."""

    kind: Kind
    url: str = field(repr=False)
    events: frozenset[EventName]
    functions: frozenset[str] | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.kind}\n{self.url}".encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.kind}:{urlsplit(self.url).hostname or '?'}:{self.key[:8]}"

    def wants(self, note: Notification) -> bool:
        return note.event in self.events and (
            self.functions is None or note.function in self.functions
        )


def check_url(url: str, where: str) -> str:
    """The URL of a receiver, or ConfigError (naming `where`, never the URL: it is secret)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: not an http:// or https:// URL with a host")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ConfigError(f"{where}: the URL holds whitespace or control characters")
    return url


class NotificationDispatcher:
    """Queues notifications durably and delivers them in the background.

    Use as `async with dispatcher:` (starts the delivery tasks; on exit waits up to
    `grace` seconds for the queue to drain, then stops: what is left is sent by the next
    process that opens the same state dir)."""

    def __init__(
        self,
        receivers: Sequence[Receiver],
        outbox: Outbox | None,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_age: float = 24 * 3600.0,
        timeout: float = 10.0,
        grace: float = 5.0,
        now: Callable[[], float] = time.time,
        commit_of: Callable[[str], str] = lambda _rollout: "",
    ) -> None:
        self.receivers = tuple(receivers)
        self.outbox = outbox
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_age = max_age
        self.timeout = timeout
        self.grace = grace
        self.now = now
        self.commit_of = commit_of
        self.log = get_logger(component="notify")
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._drift_told: dict[str, str] = {}

    # publishing (never blocks on the network, never raises) ---------------------------------

    def publish(self, note: Notification) -> None:
        """Queue `note` for every receiver that wants it."""
        if self.outbox is None:
            return
        for receiver in self.receivers:
            if not receiver.wants(note):
                continue
            delivery = str(uuid.uuid4())
            try:
                dropped = self.outbox.put(
                    receiver.key,
                    delivery,
                    note.event,
                    body_for(receiver.kind, note, delivery),
                    self.now(),
                )
            except GitopsdError as exc:
                self.log.error("notification not queued", receiver=receiver.name, error=str(exc))
                continue
            if dropped:
                self.log.warning(
                    "notification queue full: oldest dropped",
                    receiver=receiver.name,
                    dropped=dropped,
                    dropped_total=self.outbox.counter(receiver.key, "dropped"),
                    limit=self.outbox.limit,
                )
            wake = self._wake.get(receiver.key)
            if wake is not None:
                wake.set()

    def rollout_sink(self, event: RolloutEvent) -> None:
        """The engine's EventSink: started, stage passed, gate, and the final state."""
        try:
            note = notification_of(event, self.now(), self.commit_of(event.rollout_id))
        except Exception as exc:  # a notification must never break a rollout
            self.log.error("notification not built", error=repr(exc))
            return
        if note is not None:
            self.publish(note)

    def draft(self, function: str, version: str, rollout: str, commit: str) -> None:
        """A rollout waits for `gitopsd approve`: told once per rollout, across runs (each
        `gitopsd sync` meets the same draft again)."""
        if self.outbox is None or not self._first_time(f"draft:{rollout}"):
            return
        self.publish(draft_notification(function, version, rollout, commit, self.now()))

    def _first_time(self, key: str) -> bool:
        assert self.outbox is not None
        try:
            return self.outbox.first_time(key, self.now())
        except GitopsdError as exc:
            self.log.error("notification queue failed", error=str(exc))
            return False

    def drift(self, function: str, version: str, detail: str, commit: str) -> None:
        """The fleet moved away from a version already rolled out; told once per difference
        (a pass that sees the same drift again tells nobody again)."""
        if self._drift_told.get(function) == detail:
            return
        self._drift_told[function] = detail
        self.publish(Notification("drift_found", function, version, detail, self.now(), "", commit))

    def drift_healed(self, function: str) -> None:
        self._drift_told.pop(function, None)

    # delivery --------------------------------------------------------------------------------

    async def __aenter__(self) -> NotificationDispatcher:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start one delivery task per receiver; rows of receivers no longer configured are
        dropped (and logged: their URL is gone, nobody could receive them)."""
        if self.outbox is None:
            return
        keys = {r.key for r in self.receivers}
        for stale in self.outbox.receivers() - keys:
            n = self.outbox.forget(stale)
            self.log.warning("notifications of a removed receiver dropped", receiver=stale, n=n)
        for receiver in self.receivers:
            self._wake[receiver.key] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._deliver(receiver)))
        pending = self.outbox.pending()
        if pending:
            self.log.info("undelivered notifications from an earlier run", pending=pending)

    async def drain(self, within: float) -> bool:
        """Wait until the queue is empty, or `within` seconds passed, or nothing left is due
        to be tried again within them; True when empty."""
        if self.outbox is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            if not self.outbox.due_before(self.now() + (deadline - loop.time())):
                break
            await asyncio.sleep(0.02)
        return self.outbox.pending() == 0

    async def aclose(self) -> None:
        if self._tasks:
            await self.drain(self.grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._wake.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        left = self.outbox.pending() if self.outbox is not None else 0
        if left:
            self.log.info("notifications left for the next run", pending=left)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def _deliver(self, receiver: Receiver) -> None:
        wake = self._wake[receiver.key]
        log = self.log.bind(receiver=receiver.name)
        while True:
            wake.clear()
            try:
                await self._deliver_head(receiver, wake, log)
            except Exception as exc:  # the queue file failed, or a bug: say so, go on later
                log.error("notification delivery failed", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.max_delay)

    async def _deliver_head(self, receiver: Receiver, wake: asyncio.Event, log: Any) -> None:
        assert self.outbox is not None
        row = self.outbox.head(receiver.key)
        if row is None:
            await wake.wait()
            return
        now = self.now()
        if now - row.created_at > self.max_age:
            self.outbox.discard(row, "expired")
            log.warning("notification expired undelivered", notification=row.event, id=row.delivery)
            return
        if row.next_at > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), row.next_at - now)
            return
        await self._send(receiver, row, log)

    async def _send(self, receiver: Receiver, row: Pending, log: Any) -> None:
        assert self.outbox is not None
        headers = {"X-Gitopsd-Event": row.event, "X-Gitopsd-Delivery": row.delivery}
        delay: float | None
        try:
            async with self._client().post(
                receiver.url, json=row.body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    self.outbox.delivered(row.id)
                    log.debug(
                        "notification delivered", notification=row.event, attempt=row.attempts + 1
                    )
                    return
                text = (await resp.content.read(_EXCERPT)).decode("utf-8", "replace")
                why = f"HTTP {resp.status}: {' '.join(text.split())}"
                delay = self._retry_delay(resp.status, resp.headers, row.attempts + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}".replace(receiver.url, "<url>")
            delay = self._backoff(row.attempts + 1)
        if delay is None:
            self.outbox.discard(row, "refused")
            log.warning("notification refused by the receiver", notification=row.event, reason=why)
            return
        self.outbox.retry_at(row.id, self.now() + delay)
        log.info(
            "notification will be retried",
            notification=row.event,
            reason=why,
            attempt=row.attempts + 1,
            wait=round(delay, 3),
        )

    def _backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter (half fixed, half random), so that many
        controllers retrying one receiver do not hit it in step."""
        capped = float(min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 32)))
        return capped / 2 + random.uniform(0, capped / 2)

    def _retry_delay(self, status: int, headers: Mapping[str, str], attempt: int) -> float | None:
        if status not in _RETRYABLE and status < 500:
            return None
        asked = headers.get("Retry-After", "").strip()
        if asked.isdigit():
            return min(self.max_delay, float(asked))
        return self._backoff(attempt)


def receivers_from_config(entries: Iterable[NotifyConfig]) -> list[Receiver]:
    """The receivers of `[[notify]]` entries, their URLs read from `url_file`."""
    from gitopsd.config import read_secret

    out = []
    for i, entry in enumerate(entries):
        where = f"[[notify]] #{i + 1} url_file {entry.url_file}"
        url = check_url(read_secret(entry.url_file, f"[[notify]] #{i + 1} url"), where)
        out.append(
            Receiver(
                kind=entry.kind,
                url=url,
                events=frozenset(entry.events),
                functions=frozenset(entry.functions) if entry.functions is not None else None,
            )
        )
    keys = [r.key for r in out]
    if len(set(keys)) != len(keys):
        raise ConfigError("[[notify]]: two entries name the same receiver (kind and URL)")
    return out


def dispatcher_from_config(
    entries: Iterable[NotifyConfig],
    state_dir: Path,
    commit_of: Callable[[str], str] = lambda _rollout: "",
) -> NotificationDispatcher:
    """A dispatcher for the config's `[[notify]]` entries (none: it queues nothing)."""
    receivers = receivers_from_config(entries)
    outbox = Outbox(state_dir) if receivers else None  # no receiver: no file either
    return NotificationDispatcher(receivers, outbox, commit_of=commit_of)
