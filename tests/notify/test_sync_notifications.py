"""`gitopsd sync` tells `[[notify]]` receivers (real HTTP receivers on loopback) what its
rollouts did: started, stages passed, completed or rolled back, approval waits (once across
runs), drift; a receiver that hangs never holds up the rollout, and what it did not take is
sent by the next run."""

from __future__ import annotations

import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.notify.receiver import Receiver, running_receiver
from tests.test_sync_story import push_function

ROLLING = "{type: rolling, batchSize: 1}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    return remote


def config(tmp_path: Path, receiver: Receiver, extra: str = "") -> Path:
    (tmp_path / "hook.url").write_text(receiver.url + "\n")
    path = tmp_path / "gitopsd.toml"
    path.write_text(f'[[notify]]\nkind = "webhook"\nurl_file = "hook.url"\n{extra}')
    return path


@pytest.fixture
def gitopsd(tmp_path: Path, fleet: Fleet, receiver: Receiver) -> Gitopsd:
    return Gitopsd(tmp_path / "state", fleet.token_file, config(tmp_path, receiver))


def test_a_rollout_is_told_from_start_to_completion(
    repo: GitRemote, gitopsd: Gitopsd, receiver: Receiver
) -> None:
    sha = push_function(repo, "hello", "1.0.0", strategy=ROLLING)
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    events = receiver.events()
    assert events[0] == "rollout_started" and events[-1] == "completed"
    assert events.count("stage_passed") == 3  # one health check per node (batchSize 1)
    done = receiver.delivered()[-1].body
    assert (done["function"], done["version"], done["commit"]) == ("hello", "1.0.0", sha)
    assert done["rollout"].startswith("hello-1.0.0-")


def test_a_rollback_is_told(repo: GitRemote, gitopsd: Gitopsd, receiver: Receiver) -> None:
    push_function(repo, "hello", "1.0.0", strategy=ROLLING)
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    push_function(repo, "hello", "2.0.0", health="FAIL", strategy=ROLLING)
    assert gitopsd("sync", str(repo.bare), "--once").code == 1
    tail = [r.body for r in receiver.delivered() if r.body["version"] == "2.0.0"]
    assert tail[0]["event"] == "rollout_started"
    assert tail[-1]["event"] == "rolled_back"
    assert "completed" not in [b["event"] for b in tail]


def test_approval_wait_is_told_once_across_runs(
    repo: GitRemote, gitopsd: Gitopsd, receiver: Receiver
) -> None:
    push_function(repo, "hello", "1.0.0", extra="  approval: manual\n")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    assert receiver.events() == ["waiting_for_approval"]
    assert "gitopsd approve hello" in receiver.delivered()[0].body["message"]


def test_drift_is_told_then_healed(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd, receiver: Receiver
) -> None:
    push_function(repo, "hello", "1.0.0")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    req = urllib.request.Request(
        f"{fleet.nodes['edge-b'].url}/functions/hello",
        method="DELETE",
        headers={"Authorization": f"Bearer {fleet.token('edge-b')}"},
    )
    urllib.request.urlopen(req).close()
    before = len(receiver.delivered())
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    after = receiver.events()[before:]
    assert after[0] == "drift_found" and after[-1] == "completed"
    assert "edge-b" in receiver.delivered()[before].body["message"]


def test_functions_filter_from_the_config(
    tmp_path: Path, repo: GitRemote, fleet: Fleet, receiver: Receiver
) -> None:
    cfg = config(tmp_path, receiver, 'events = ["completed"]\nfunctions = ["other"]\n')
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file, cfg)
    push_function(repo, "hello", "1.0.0")
    push_function(repo, "other", "1.0.0")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    assert [(r.body["event"], r.body["function"]) for r in receiver.requests] == [
        ("completed", "other")
    ]


def pending(state: Path) -> int:
    with sqlite3.connect(state / "notify.db") as db:
        (n,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    return int(n)


def test_a_hung_receiver_never_holds_up_the_rollout_and_the_next_run_delivers(
    tmp_path: Path, repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd, receiver: Receiver
) -> None:
    receiver.hang()
    push_function(repo, "hello", "1.0.0")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    assert fleet.serving("hello") == {"edge-a": "1.0.0", "edge-b": "1.0.0", "edge-c": "1.0.0"}
    assert receiver.delivered() == []
    left = pending(tmp_path / "state")
    assert left >= 2  # started ... completed, none taken
    receiver.release()
    receiver.wait_for(lambda r: r.in_flight == 0)
    assert gitopsd("sync", str(repo.bare), "--once").code == 0  # nothing to change
    assert receiver.events()[-1] == "completed"
    assert pending(tmp_path / "state") == 0
