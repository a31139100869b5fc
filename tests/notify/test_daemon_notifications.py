"""The daemon (a real `gitopsd run` subprocess) tells a `[[notify]]` receiver about its
rollouts; a receiver that keeps failing neither stops the rollout nor loses what it missed:
after a restart of the daemon the queued notifications arrive, in order."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.notify.receiver import Receiver, running_receiver
from tests.rollout.livesupport import push


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def with_notify(daemon: DaemonProcess, receiver: Receiver) -> None:
    (daemon.root / "slack.url").write_text(receiver.url + "\n")
    daemon.config.write_text(
        daemon.config.read_text() + '[[notify]]\nkind = "slack"\nurl_file = "slack.url"\n'
    )


def undelivered(state: Path) -> list[str]:
    with sqlite3.connect(state / "notify.db") as db:
        return [e for (e,) in db.execute("SELECT event FROM outbox ORDER BY id")]


def test_undelivered_notifications_arrive_after_a_daemon_restart(
    tmp_path: Path, remote: GitRemote, fleet: Fleet, receiver: Receiver
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "hello", "1.0.0", "{type: blue-green}")
    daemon = DaemonProcess(tmp_path / "d", remote, fleet)
    with_notify(daemon, receiver)
    receiver.status = 503  # the receiver is down for the whole first run
    try:
        daemon.start()
        wait_for(lambda: set(fleet.serving("hello").values()) == {"1.0.0"}, what="the rollout")
        wait_for(lambda: "completed" in undelivered(daemon.state), what="completed queued")
        assert receiver.requests and receiver.delivered() == []
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        queued = undelivered(daemon.state)
        assert queued[0] == "rollout_started" and queued[-1] == "completed"
        receiver.status = 200
        daemon.start()
        wait_for(lambda: len(receiver.delivered()) == len(queued), what="the queue delivered")
        texts = [r.body["text"] for r in receiver.delivered()]
        assert texts[0] == "gitopsd: hello 1.0.0: rollout started"
        assert texts[-1] == "gitopsd: hello 1.0.0: rollout completed"
        # (The receiver records a request before the dispatcher hears its answer.)
        wait_for(lambda: undelivered(daemon.state) == [], what="the queue emptied")
        assert receiver.url not in daemon.logs()  # a Slack URL is its own credential
    finally:
        daemon.close()
