"""GitOpsSynchronizer.sync publishes what `gitopsd sync` publishes, through the same pass:
the commit is noted "pending" while its rollouts run, then with their outcome, and each
forge gets the commit statuses (a local server checking GitHub's request shape)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

from gitopsd.api import GitOpsSynchronizer
from gitopsd.report.forges import ForgeTarget
from tests.fleetfixture import TOKEN, Fleet
from tests.gitrepo import GitRemote
from tests.report.test_forges import ForgeServer, forge_server
from tests.test_sync_story import push_function


@contextlib.contextmanager
def forge_in_a_thread() -> Iterator[ForgeServer]:
    """A forge on its own event loop: the synchronous API runs its own on this thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    box: list[ForgeServer] = []

    async def serve() -> None:
        async with forge_server() as server:
            box.append(server)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)
        yield box[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_a_sync_notes_the_commit_pending_then_with_its_outcome(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    sha = push_function(remote, "hello", "1.0.0")
    sync = GitOpsSynchronizer(str(remote.bare), state_dir=tmp_path / "state", token=TOKEN)
    assert sync.sync().success
    entry = json.loads(remote.note(sha))["functions"]["hello"]
    assert entry["state"] == "COMPLETED"
    earlier = [(h["status"], h["state"]) for h in entry.get("history", [])]
    assert earlier == [("pending", "IN_PROGRESS")]


def test_a_sync_posts_the_commit_statuses_to_each_forge(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    sha = push_function(remote, "hello", "1.0.0")
    with forge_in_a_thread() as forge:
        target = ForgeTarget("github", forge.url, "edge/functions", "tok-1")
        sync = GitOpsSynchronizer(
            str(remote.bare), state_dir=tmp_path / "state", token=TOKEN, forges=[target]
        )
        assert sync.sync().success
    posted = [(s.method, s.raw_path, s.body["context"], s.body["state"]) for s in forge.seen]
    path = f"/repos/edge/functions/statuses/{sha}"
    assert posted == [
        ("POST", path, "gitopsd/hello", "pending"),
        ("POST", path, "gitopsd/hello", "success"),
    ]
    assert forge.seen[0].headers["Authorization"] == "Bearer tok-1"
