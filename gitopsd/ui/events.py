"""In-process publish/subscribe of what the status page shows live.

The engine already hands every step it starts and ends to one `EventSink`
(`Engine(on_event=...)`); the daemon passes `EventBus.rollout_sink`, and its fleet watch
calls `EventBus.node_changed` when an agent's inventory moves. Each open `GET /events`
stream is one `Subscription`: a bounded queue, so a stalled browser can never make the
engine wait or the daemon grow without bound (an overflowing subscriber is told to reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitopsd.rollout.engine import RolloutEvent
from gitopsd.rollout.preview import describe_step
from gitopsd.rollout.steps import step_to_json

QUEUE_LIMIT = 256  # events one slow browser may lag behind before it is told to reload


@dataclass(frozen=True)
class Event:
    """One message of the stream: `kind` is the SSE event name, `data` its JSON body."""

    id: int
    kind: str
    data: Mapping[str, Any]


class Subscription:
    """One listener's queue; `overflowed` is set when it fell QUEUE_LIMIT events behind."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
        self.overflowed = False
        self.closed = False

    def close(self) -> None:
        """End the stream (the server stops): its pending `next` returns at once."""
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Event(0, "close", {}))

    def offer(self, event: Event) -> None:
        if self.overflowed or self.closed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self, within: float) -> Event | None:
        """The next event, or None after `within` seconds without one."""
        try:
            async with asyncio.timeout(within):
                return await self.queue.get()
        except TimeoutError:
            return None


class EventBus:
    """Fan-out of events to every subscriber; `publish` never blocks and is thread-safe."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """Hand `data` to every subscriber, from any thread."""
        with self._lock:
            event = Event(next(self._ids), kind, {**data, "at": time.time()})
            subs = list(self._subs)
        for sub in subs:
            if _in_loop(sub.loop):
                sub.offer(event)
            else:
                sub.loop.call_soon_threadsafe(sub.offer, event)

    def rollout_sink(self, event: RolloutEvent) -> None:
        """The engine's EventSink: a step started (`outcome` null) or ended."""
        if event.replayed:
            return  # a resumed rollout replays its journal: nothing new happened
        self.publish("step", rollout_event_json(event))

    def node_changed(self, node: str) -> None:
        """An agent's inventory changed (a version loaded, a weight moved, it came back)."""
        self.publish("node", {"node": node})


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def rollout_event_json(event: RolloutEvent) -> dict[str, Any]:
    """The JSON body of a `step` event (documented in docs/status-page.md)."""
    outcome = event.outcome
    return {
        "rollout": event.rollout_id,
        "function": event.function,
        "version": event.version,
        "seq": event.seq,
        "kind": event.step.kind,
        "step": step_to_json(event.step),
        "label": describe_step(event.step, event.version),
        "deadline": event.deadline,
        "ok": None if outcome is None else outcome.ok,
        "message": "" if outcome is None else outcome.message,
    }
