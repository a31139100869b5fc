"""The page's publish/subscribe: every subscriber gets each event once, from any thread; a
subscriber that falls behind is marked (and told to reload), never blocks the publisher."""

from __future__ import annotations

import asyncio
import threading

from gitopsd.rollout.engine import RolloutEvent
from gitopsd.rollout.steps import StepOutcome, Wait
from gitopsd.ui.events import QUEUE_LIMIT, EventBus
from gitopsd.ui.server import sse_message


async def test_each_subscriber_gets_each_step_and_replays_are_not_news() -> None:
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    wait = Wait(30, "evaluation of stage 1 (10%)")
    bus.rollout_sink(RolloutEvent("r1", "hello", "2.0.0", 3, wait, None, deadline=1000.0))
    bus.rollout_sink(RolloutEvent("r1", "hello", "2.0.0", 2, wait, StepOutcome(True), True))
    bus.rollout_sink(
        RolloutEvent("r1", "hello", "2.0.0", 3, wait, StepOutcome(True, message="waited"))
    )
    for sub in (a, b):
        started, ended = await sub.next(1), await sub.next(1)
        assert started is not None and ended is not None
        assert (started.kind, started.data["seq"], started.data["ok"]) == ("step", 3, None)
        assert started.data["label"] == "wait 30s (evaluation of stage 1 (10%))"
        assert started.data["deadline"] == 1000.0
        assert (ended.data["ok"], ended.data["message"]) == (True, "waited")
        assert ended.id > started.id
        assert await sub.next(0.01) is None  # the replayed step was not published
    text = sse_message(ended).decode()
    assert text.startswith(f"id: {ended.id}\nevent: step\ndata: {{") and text.endswith("}\n\n")


async def test_a_publish_from_another_thread_reaches_the_loop() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    thread = threading.Thread(target=bus.node_changed, args=("edge-a",))
    thread.start()
    thread.join()
    event = await sub.next(2)
    assert event is not None and (event.kind, event.data["node"]) == ("node", "edge-a")


async def test_a_subscriber_that_falls_behind_is_marked_and_others_are_not() -> None:
    bus = EventBus()
    slow, fast = bus.subscribe(), bus.subscribe()
    for i in range(QUEUE_LIMIT + 5):
        bus.publish("pass", {"result": "ok"})
        if i % 100 == 0:
            while not fast.queue.empty():
                fast.queue.get_nowait()
    assert slow.overflowed and not fast.overflowed
    bus.unsubscribe(slow)
    assert bus.subscribers == 1


async def test_closing_a_subscription_ends_its_wait_at_once() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    waiter = asyncio.create_task(sub.next(30))
    await asyncio.sleep(0)
    sub.close()
    event = await asyncio.wait_for(waiter, 1)
    assert sub.closed and event is not None and event.kind == "close"
