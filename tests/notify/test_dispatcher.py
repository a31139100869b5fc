"""The dispatcher against a real aiohttp receiver: bodies, retries, refusals, the persistent
bounded queue across a restart, filters, and a hung receiver that never holds up a publish."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.notify.dispatcher import NotificationDispatcher, Receiver
from gitopsd.notify.events import EVENT_NAMES, Notification
from gitopsd.notify.outbox import Outbox
from tests.notify.receiver import Receiver as HttpReceiver
from tests.notify.receiver import running_receiver, until


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with running_receiver() as r:
        yield r


def note(event: str = "completed", function: str = "hello", message: str = "done") -> Notification:
    return Notification(
        event,  # type: ignore[arg-type]
        function,
        "2.0.0",
        message,
        1_765_000_000.0,
        rollout="hello-2.0.0-abc",
        commit="a" * 40,
        step="finish",
    )


def dispatcher(
    state: Path,
    url: str,
    kind: str = "webhook",
    limit: int = 1000,
    events: tuple[str, ...] = EVENT_NAMES,
    functions: frozenset[str] | None = None,
) -> NotificationDispatcher:
    target = Receiver(kind, url, frozenset(events), functions)  # type: ignore[arg-type]
    return NotificationDispatcher(
        [target], Outbox(state, limit=limit), base_delay=0.01, max_delay=0.05, grace=0.5
    )


async def test_webhook_body_and_headers(tmp_path: Path, receiver: HttpReceiver) -> None:
    async with dispatcher(tmp_path, receiver.url) as d:
        d.publish(note())
        await until(lambda: receiver.delivered(), what="a delivery")
    got = receiver.delivered()[0]
    assert got.body == {
        "schema": "gitopsd.notification/v1",
        "id": got.headers["X-Gitopsd-Delivery"],
        "event": "completed",
        "function": "hello",
        "version": "2.0.0",
        "message": "done",
        "at": "2025-12-06T05:46:40Z",
        "rollout": "hello-2.0.0-abc",
        "commit": "a" * 40,
        "step": "finish",
    }
    assert got.headers["X-Gitopsd-Event"] == "completed"
    assert got.headers["Content-Type"].startswith("application/json")


async def test_slack_message_escapes_what_it_quotes(tmp_path: Path, receiver: HttpReceiver) -> None:
    async with dispatcher(tmp_path, receiver.url, kind="slack") as d:
        d.publish(note("rolled_back", message="error_rate 9 > 5 <!channel> & co"))
        await until(lambda: receiver.delivered(), what="a delivery")
    body = receiver.delivered()[0].body
    assert set(body) == {"text", "blocks"}
    assert body["text"] == "gitopsd: hello 2.0.0: rolled back"
    (block,) = body["blocks"]
    assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    text = block["text"]["text"]
    assert "error_rate 9 &gt; 5 &lt;!channel&gt; &amp; co" in text
    assert "<!channel>" not in text


async def test_a_failing_receiver_gets_everything_in_order_once_it_recovers(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.fail_next(3, 503)
    async with dispatcher(tmp_path, receiver.url) as d:
        for i in range(3):
            d.publish(note(message=f"n{i}"))
        await until(lambda: len(receiver.delivered()) == 3, what="three deliveries")
        await until(lambda: d.outbox is not None and d.outbox.pending() == 0, "acked")
    assert [r.body["message"] for r in receiver.delivered()] == ["n0", "n1", "n2"]
    # The first notification was tried four times, with the same delivery id each time.
    first = [r for r in receiver.requests if r.body["message"] == "n0"]
    assert [r.status for r in first] == [503, 503, 503, 200]
    assert len({r.headers["X-Gitopsd-Delivery"] for r in first}) == 1


async def test_a_refusal_is_dropped_and_counted_and_the_next_goes_out(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.fail_next(1, 404)
    async with dispatcher(tmp_path, receiver.url) as d:
        d.publish(note(message="refused"))
        d.publish(note(message="taken"))
        await until(lambda: receiver.delivered(), what="the second")
        assert d.outbox is not None
        key = d.receivers[0].key
        assert d.outbox.counter(key, "refused") == 1
    assert [r.status for r in receiver.requests] == [404, 200]
    assert receiver.delivered()[0].body["message"] == "taken"


async def test_undelivered_notifications_survive_a_restart(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.stop()  # connection refused
    first = dispatcher(tmp_path, receiver.url)
    async with first:
        first.publish(note("rollout_started", message="one"))
        first.publish(note("completed", message="two"))
    assert Outbox(tmp_path).pending() == 2
    receiver.start()
    async with dispatcher(tmp_path, receiver.url) as second:
        await until(lambda: len(receiver.delivered()) == 2, what="both after the restart")
        await until(lambda: second.outbox is not None and second.outbox.pending() == 0)
    assert receiver.events() == ["rollout_started", "completed"]


async def test_the_queue_is_bounded_oldest_dropped_and_counted(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.stop()
    d = dispatcher(tmp_path, receiver.url, limit=3)
    async with d:
        for i in range(5):
            d.publish(note(message=f"n{i}"))
        assert d.outbox is not None
        assert d.outbox.pending() == 3
        assert d.outbox.counter(d.receivers[0].key, "dropped") == 2
    receiver.start()
    async with dispatcher(tmp_path, receiver.url, limit=3):
        await until(lambda: len(receiver.delivered()) == 3, what="the three kept")
    assert [r.body["message"] for r in receiver.delivered()] == ["n2", "n3", "n4"]


async def test_events_and_functions_filter(tmp_path: Path, receiver: HttpReceiver) -> None:
    d = dispatcher(
        tmp_path, receiver.url, events=("failed", "rolled_back"), functions=frozenset({"hello"})
    )
    async with d:
        d.publish(note("completed"))  # not an event it wants
        d.publish(note("failed", function="other"))  # not a function it wants
        d.publish(note("failed"))
        await until(lambda: receiver.delivered(), what="the wanted one")
        await until(lambda: d.outbox is not None and d.outbox.pending() == 0, "acked")
    assert [(r.body["event"], r.body["function"]) for r in receiver.requests] == [
        ("failed", "hello")
    ]


async def test_a_hung_receiver_never_holds_up_publishing(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.hang()
    d = dispatcher(tmp_path, receiver.url)
    async with d:
        d.publish(note(message="first"))
        await until(lambda: receiver.in_flight == 1, what="the first in flight")
        for i in range(50):  # returns at once each time: nothing here awaits the receiver
            d.publish(note(message=f"n{i}"))
        assert d.outbox is not None and d.outbox.pending() == 51
        assert receiver.requests == []  # nothing answered yet
        receiver.release()
        await until(lambda: len(receiver.delivered()) == 51, what="all after the release")
