"""The outcome publisher: an outbox in the store that survives a restart, one notes push for
everything written, a bounded queue, and notes that keep every outcome in order."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from gitopsd.report.notes import CommitOutcome, FunctionOutcome
from gitopsd.report.publisher import OUTBOX_KEY, OutcomePublisher
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import take_snapshot
from gitopsd.store.sqlite import SqliteStore
from tests.gitrepo import GitRemote

COUNT_HOOK = """#!/bin/sh
while read old new ref; do
  case "$ref" in refs/notes/*) echo "$ref" >> "{log}" ;; esac
done
exit 0
"""


def outcome(sha: str, state: str, status: str = "success") -> CommitOutcome:
    fn = FunctionOutcome(status=status, version="1.0.0", strategy="canary", state=state)
    return CommitOutcome(sha, status, f"fn {state}", {"fn": fn})


def mirrored(tmp_path: Path, commits: int = 1) -> tuple[GitRemote, SourceSpec, list[str]]:
    remote = GitRemote(tmp_path / "g")
    shas = [remote.commit_push(f"c{i}") for i in range(commits)]
    spec = SourceSpec(f"file://{remote.bare}")
    take_snapshot(spec, tmp_path / "state")
    return remote, spec, shas


def count_notes_pushes(remote: GitRemote, log: Path) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(COUNT_HOOK.format(log=log))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)


async def test_an_outbox_left_by_a_killed_process_is_published_by_the_next(
    tmp_path: Path,
) -> None:
    remote, spec, (sha,) = mirrored(tmp_path)
    store = SqliteStore(tmp_path / "state")
    first = OutcomePublisher(spec, tmp_path / "state", store)
    first.submit(outcome(sha, "COMPLETED"))
    assert first._task is not None
    first._task.cancel()  # the process dies before its worker ran once
    assert json.loads(store.get(OUTBOX_KEY) or "[]")[0]["commit"] == sha

    second = OutcomePublisher(spec, tmp_path / "state", SqliteStore(tmp_path / "state"))
    second.start()
    assert await second.drain(30)
    await second.aclose()
    assert json.loads(remote.note(sha))["functions"]["fn"]["state"] == "COMPLETED"
    assert not store.get(OUTBOX_KEY)


async def test_many_outcomes_cost_one_push_and_each_stays_in_the_notes_history(
    tmp_path: Path,
) -> None:
    remote, spec, shas = mirrored(tmp_path, commits=3)
    pushes = tmp_path / "pushes.log"
    count_notes_pushes(remote, pushes)
    publisher = OutcomePublisher(spec, tmp_path / "state", SqliteStore(tmp_path / "state"))
    for sha in shas:
        publisher.submit(outcome(sha, "IN_PROGRESS", "pending"))
    publisher.submit(outcome(shas[0], "COMPLETED"))
    assert await publisher.drain(30)
    await publisher.aclose()
    assert pushes.read_text().splitlines() == ["refs/notes/gitopsd"]
    first = json.loads(remote.note(shas[0]))["functions"]["fn"]
    assert first["state"] == "COMPLETED"
    assert [h["state"] for h in first["history"]] == ["IN_PROGRESS"]
    assert json.loads(remote.note(shas[2]))["status"] == "pending"


async def test_a_full_outbox_drops_superseded_outcomes_first(tmp_path: Path) -> None:
    remote, spec, shas = mirrored(tmp_path, commits=2)
    publisher = OutcomePublisher(
        spec, tmp_path / "state", SqliteStore(tmp_path / "state"), max_outbox=2
    )
    publisher.submit(outcome(shas[0], "IN_PROGRESS", "pending"))
    publisher.submit(outcome(shas[1], "COMPLETED"))
    publisher.submit(outcome(shas[0], "COMPLETED"))  # supersedes the first
    assert (publisher.waiting, publisher.dropped) == (2, 1)
    assert await publisher.drain(30)
    await publisher.aclose()
    assert json.loads(remote.note(shas[0]))["functions"]["fn"]["state"] == "COMPLETED"
    assert json.loads(remote.note(shas[1]))["functions"]["fn"]["state"] == "COMPLETED"


async def test_a_refused_push_is_retried_and_the_flag_survives_a_restart(tmp_path: Path) -> None:
    remote, spec, (sha,) = mirrored(tmp_path)
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    store = SqliteStore(tmp_path / "state")
    publisher = OutcomePublisher(spec, tmp_path / "state", store, push_backoff=0.01)
    publisher.submit(outcome(sha, "COMPLETED"))
    assert await publisher.drain(30)  # tried once: drain does not wait for the retries
    await publisher.aclose()
    assert store.get("publisher:push-pending") == "1"
    hook.unlink()  # the remote accepts pushes again
    later = OutcomePublisher(spec, tmp_path / "state", SqliteStore(tmp_path / "state"))
    later.start()
    assert await later.drain(30)
    await later.aclose()
    assert json.loads(remote.note(sha))["status"] == "success"
    assert not store.get("publisher:push-pending")


class _RefusingStore:
    """A store that refuses every write, as a standby's fenced PostgreSQL store does."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def put(self, key: str, value: str) -> None:
        from gitopsd.errors import StoreError

        raise StoreError(f"write of {key} refused: this process does not lead")


async def test_a_store_that_refuses_writes_does_not_stop_the_worker(tmp_path: Path) -> None:
    remote, spec, (sha,) = mirrored(tmp_path)
    publisher = OutcomePublisher(spec, tmp_path / "state", _RefusingStore())  # type: ignore[arg-type]
    publisher.submit(outcome(sha, "IN_PROGRESS", "pending"))
    publisher.submit(outcome(sha, "COMPLETED"))
    assert await publisher.drain(30)
    await publisher.aclose()
    assert json.loads(remote.note(sha))["functions"]["fn"]["state"] == "COMPLETED"
