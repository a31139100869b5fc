"""Git faults: force-push over a deployed commit (refused unless allowed), a tag named like
the branch, remote unreachable, corrupt pack, deleted branch. The daemon's own reconcile
pass runs in-process (the real `Daemon`, its client and engine, without the HTTP servers),
so that a test can count passes and read the status the daemon reports (sd_notify STATUS
lines, `last_error`) while the fault lasts. Expected: the last good desired state stays in
force (nothing pruned, nothing rolled back), the status says what is wrong, and the first
pass after the fault heals applies the newest commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gitopsd.daemon.service import MAX_BACKOFF, Daemon
from gitopsd.rollout.engine import Engine
from tests.clirunner import Gitopsd
from tests.faults.conftest import Figures, scale
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote, git
from tests.rollout.livesupport import push
from tests.wasm_modules import handler_wat

BLUE_GREEN = "{type: blue-green}"


class InProcessDaemon:
    """The real Daemon, driven pass by pass."""

    def __init__(self, root: Path, url: str, fleet: Fleet) -> None:
        root.mkdir(parents=True, exist_ok=True)
        config = root / "gitopsd.toml"
        config.write_text(
            f'[source]\nurl = "{url}"\nbranch = "main"\ninterval = "PT1H"\nwatch = false\n'
            f'[fleet]\ntoken_file = "{fleet.token_file}"\ntimeout = "PT2S"\n'
            f'[state]\ndir = "{root / "state"}"\n'
        )
        self.daemon = Daemon(config)
        self.statuses: list[str] = []

        def status(text: str) -> bool:
            self.statuses.append(text)
            return True

        self.daemon.notifier.status = status  # type: ignore[method-assign,assignment]
        self.daemon.notifier.ready = lambda s=None: status(s or "ready")  # type: ignore[method-assign,assignment]

    async def one_pass(self) -> float:
        """One reconcile pass; rollouts it starts are awaited and reported by a second."""
        d = self.daemon
        delay = await d.reconcile_pass(["test"])
        tasks = list(d.pass_state.rollouts.values())
        if tasks:
            await asyncio.wait(tasks, timeout=60)
            await d.reconcile_pass(["rollout finished"])
        await d.publisher.drain()  # notes are written off the loop; the story reads them next
        return delay

    @property
    def last_error(self) -> str:
        return self.daemon.pass_state.last_error

    @property
    def desired_commit(self) -> str | None:
        desired = self.daemon.pass_state.desired
        return desired.commit if desired else None


@asynccontextmanager
async def running(root: Path, url: str, fleet: Fleet) -> AsyncIterator[InProcessDaemon]:
    live = InProcessDaemon(root, url, fleet)
    d = live.daemon
    async with contextlib.AsyncExitStack() as stack:
        d.client = await stack.enter_async_context(d.reconciler.client({}))
        d.engine = Engine(d.store, d.client, d.clock)
        try:
            yield live
        finally:
            await d._drain_rollouts()
            d.store.close()


def write_function(repo: GitRemote, version: str) -> None:
    """What `push` writes, without pushing."""
    repo.write(
        "functions/fn.yaml",
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\nmetadata: {name: fn}\nspec:\n"
        f'  version: "{version}"\n  module: modules/fn.wat\n  strategy: {BLUE_GREEN}\n',
    )
    repo.write("functions/modules/fn.wat", handler_wat(f"fn {version}"))


def serves(fleet: Fleet, version: str | None) -> bool:
    return set(fleet.serving("fn").values()) == {version}


def source_url(remote: GitRemote, kind: str) -> str:
    return f"file://{remote.bare}" if kind == "mirror" else str(remote.bare)


KINDS = ["mirror", "local"]


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    return remote


def note_of(repo: GitRemote, sha: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(repo.note(sha))
    return body


ALLOW_ENV = "GITOPSD_SOURCE__ALLOW_NON_FAST_FORWARD"


@pytest.mark.parametrize("kind", KINDS)
async def test_force_push_over_a_deployed_commit(
    kind: str,
    repo: GitRemote,
    fleet: Fleet,
    tmp_path: Path,
    figures: Figures,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14 finding 1: a head that does not descend from the last applied commit is
    refused (failure note, status line, the fleet and the daemon stay on the last good
    state) until the operator allows it; then the rewritten history is followed."""
    async with running(tmp_path / "d", source_url(repo, kind), fleet) as live:
        base = push(repo, "fn", "1.0.0", BLUE_GREEN)
        await live.one_pass()
        assert serves(fleet, "1.0.0")
        deployed = push(repo, "fn", "2.0.0", BLUE_GREEN)
        await live.one_pass()
        assert serves(fleet, "2.0.0") and live.desired_commit == deployed
        # rewrite history: the deployed commit disappears from the branch
        git("reset", "-q", "--hard", base, cwd=repo.work)
        write_function(repo, "3.0.0")
        rewritten = repo.commit("3.0.0 on a rewritten history")
        repo.push(force=True)
        await live.one_pass()
        kept = serves(fleet, "2.0.0") and live.desired_commit == deployed
        refused_note, refused_status = note_of(repo, rewritten), live.statuses[-1]
        # and back to the very first commit: a downgrade, refused too
        git("push", "-q", "--force", "origin", f"{base}:refs/heads/main", cwd=repo.work)
        await live.one_pass()
        downgrade_kept = serves(fleet, "2.0.0") and live.desired_commit == deployed
        downgrade_note = note_of(repo, base)
        # recovery: allow it (here through the environment) and reload (SIGHUP)
        git("push", "-q", "--force", "origin", f"{rewritten}:refs/heads/main", cwd=repo.work)
        monkeypatch.setenv(ALLOW_ENV, "true")
        live.daemon.reload()
        await live.one_pass()
        followed = serves(fleet, "3.0.0") and live.desired_commit == rewritten
        monkeypatch.delenv(ALLOW_ENV)
        live.daemon.reload()
        newest = push(repo, "fn", "4.0.0", BLUE_GREEN)  # a fast-forward of the new history
        await live.one_pass()
        forward = serves(fleet, "4.0.0") and live.desired_commit == newest
        figures.update(
            source=kind,
            refused_rewrite=kept,
            refused_downgrade=downgrade_kept,
            followed_when_allowed=followed,
            fast_forward_after=forward,
            status=refused_status,
            error=live.last_error,
        )
        assert kept and downgrade_kept
        assert refused_note["status"] == "failure"
        assert "not a fast-forward" in refused_note["message"]
        assert deployed[:12] in refused_note["message"]
        assert downgrade_note["status"] == "failure"
        assert "not a fast-forward" in downgrade_note["message"]
        assert f"refused {rewritten[:12]}" in refused_status
        assert followed and forward
        assert live.last_error == ""  # the daemon ran on, healthy, throughout
        assert "refused" not in live.statuses[-1]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tag_named_like_the_branch_does_not_move_the_daemon(
    kind: str, repo: GitRemote, fleet: Fleet, tmp_path: Path, figures: Figures
) -> None:
    """Issue 14 finding 1: `git tag main <old>` in the manifest repository."""
    async with running(tmp_path / "d", source_url(repo, kind), fleet) as live:
        old = push(repo, "fn", "1.0.0", BLUE_GREEN)
        await live.one_pass()
        head = push(repo, "fn", "2.0.0", BLUE_GREEN)
        git("tag", "main", old, cwd=repo.bare)
        await live.one_pass()
        figures.update(source=kind, desired=live.desired_commit == head)
        assert live.desired_commit == head and serves(fleet, "2.0.0")
        newest = push(repo, "fn", "3.0.0", BLUE_GREEN)
        await live.one_pass()
        assert live.desired_commit == newest and serves(fleet, "3.0.0")


def test_sync_refuses_a_rewritten_head_with_exit_1(
    repo: GitRemote, fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gitopsd sync --once`: the same rule, exit 1 (a negative result), a failure note and
    `gitopsd status` saying why; GITOPSD_SOURCE__ALLOW_NON_FAST_FORWARD=true for one run
    applies it."""
    run = Gitopsd(tmp_path / "state", fleet.token_file)
    url = f"file://{repo.bare}"
    base = push(repo, "fn", "1.0.0", BLUE_GREEN)
    assert run("sync", url, "--once").code == 0
    push(repo, "fn", "2.0.0", BLUE_GREEN)
    assert run("sync", url, "--once").code == 0 and serves(fleet, "2.0.0")
    git("reset", "-q", "--hard", base, cwd=repo.work)
    write_function(repo, "3.0.0")
    rewritten = repo.commit("rewritten")
    repo.push(force=True)
    refused = run("sync", url, "--once")
    status = run("status", "--output", "json")
    assert refused.code == 1, refused.err
    assert "not a fast-forward" not in refused.out  # errors go to stderr
    assert f"commit {rewritten[:12]} refused" in refused.err
    assert "allow_non_fast_forward" in refused.err
    assert serves(fleet, "2.0.0")
    assert note_of(repo, rewritten)["status"] == "failure"
    assert "the newest head was not applied" in status.json()["note"]
    monkeypatch.setenv(ALLOW_ENV, "true")
    allowed = run("sync", url, "--once")
    assert allowed.code == 0, allowed.err
    assert serves(fleet, "3.0.0") and note_of(repo, rewritten)["status"] == "success"
    monkeypatch.delenv(ALLOW_ENV)
    assert "not applied" not in run("status", "--output", "json").json()["note"]


def test_a_force_push_back_after_a_partly_failed_commit_is_refused(
    repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """Red-team finding: the check compared with the last commit applied *in full*, so once a
    newer commit had partly failed, a force-push back to the older one passed as 'equal' and
    downgraded the functions the newer commit had rolled out."""
    run = Gitopsd(tmp_path / "state", fleet.token_file)
    url = f"file://{repo.bare}"
    base = push(repo, "fn", "1.0.0", BLUE_GREEN)
    assert run("sync", url, "--once").code == 0
    push(repo, "fn", "2.0.0", BLUE_GREEN)
    newer = push(repo, "bad", "1.0.0", BLUE_GREEN, health="NO")  # fails its health check
    partly = run("sync", url, "--once")
    assert partly.code == 1 and serves(fleet, "2.0.0"), partly.err
    git("reset", "-q", "--hard", base, cwd=repo.work)
    repo.push(force=True)
    refused = run("sync", url, "--once")
    assert refused.code == 1, refused.out
    assert f"commit {base[:12]} refused" in refused.err
    assert serves(fleet, "2.0.0")  # not downgraded
    assert newer != base


@pytest.mark.parametrize("kind", KINDS)
async def test_remote_unreachable_for_minutes(
    kind: str, repo: GitRemote, fleet: Fleet, tmp_path: Path, figures: Figures
) -> None:
    async with running(tmp_path / "d", source_url(repo, kind), fleet) as live:
        good = push(repo, "fn", "1.0.0", BLUE_GREEN)
        await live.one_pass()
        assert serves(fleet, "1.0.0")
        away = repo.bare.with_name("moved-away.git")
        repo.bare.rename(away)
        delays = [await live.one_pass() for _ in range(scale(8, 14))]
        during = {
            "kept_commit": live.desired_commit == good,
            "fleet_kept": serves(fleet, "1.0.0"),
            "error": live.last_error,
            "status": live.statuses[-1],
        }
        away.rename(repo.bare)
        newest = push(repo, "fn", "2.0.0", BLUE_GREEN)
        await live.one_pass()
        healed = serves(fleet, "2.0.0") and live.desired_commit == newest
        figures.update(
            source=kind,
            failed_passes=len(delays),
            simulated_outage_s=round(sum(delays)),
            backoff_s=[round(d, 1) for d in delays],
            recovered_next_pass=healed,
            error_after_heal=live.last_error,
            **during,
        )
        assert during["kept_commit"] and during["fleet_kept"]
        assert "no such" in str(during["error"]) or "fetch failed" in str(during["error"])
        assert str(during["status"]).startswith("error:") and "retrying in" in str(during["status"])
        assert all(d <= MAX_BACKOFF for d in delays) and delays[-1] > delays[0]
        assert sum(delays) >= 120  # minutes of outage, in backoff time
        assert healed and live.last_error == ""


def corrupt_packs(bare: Path) -> Callable[[], None]:
    """Repack everything into one pack, damage it; returns the function that restores it."""
    git("repack", "-a", "-d", "-q", cwd=bare)
    saved: dict[Path, bytes] = {}
    for pack in (bare / "objects" / "pack").glob("*.pack"):
        data = pack.read_bytes()
        saved[pack] = data
        damaged = bytearray(data)
        for i in range(200, len(damaged) - 100, 97):
            damaged[i] ^= 0x5A
        pack.chmod(0o644)
        pack.write_bytes(bytes(damaged))

    def restore() -> None:
        for pack, data in saved.items():
            pack.write_bytes(data)

    return restore


async def test_corrupt_pack_on_the_remote(
    repo: GitRemote, fleet: Fleet, tmp_path: Path, figures: Figures
) -> None:
    """A remote serving a corrupt pack: the fetch fails, the mirror and the fleet are kept.

    (The same damage in a local repository read in place crashes the daemon: see
    test_found_bugs.py.)
    """
    async with running(tmp_path / "d", source_url(repo, "mirror"), fleet) as live:
        good = push(repo, "fn", "1.0.0", BLUE_GREEN)
        await live.one_pass()
        newest = push(repo, "fn", "2.0.0", BLUE_GREEN)
        restore = corrupt_packs(repo.bare)
        delays = [await live.one_pass() for _ in range(3)]
        kept = live.desired_commit == good and serves(fleet, "1.0.0")
        error = live.last_error
        restore()
        await live.one_pass()
        healed = live.desired_commit == newest and serves(fleet, "2.0.0")
        figures.update(failed_passes=len(delays), kept_last_good=kept, error=error, healed=healed)
        assert kept and error and healed


@pytest.mark.parametrize("kind", ["local"])  # mirror: see test_found_bugs.py
async def test_deleted_branch(
    kind: str, repo: GitRemote, fleet: Fleet, tmp_path: Path, figures: Figures
) -> None:
    async with running(tmp_path / "d", source_url(repo, kind), fleet) as live:
        good = push(repo, "fn", "1.0.0", BLUE_GREEN)
        await live.one_pass()
        git("update-ref", "-d", "refs/heads/main", cwd=repo.bare)
        delays = [await live.one_pass() for _ in range(3)]
        kept = live.desired_commit == good and serves(fleet, "1.0.0")
        error, status = live.last_error, live.statuses[-1]
        newest = push(repo, "fn", "2.0.0", BLUE_GREEN)
        await live.one_pass()
        healed = live.desired_commit == newest and serves(fleet, "2.0.0")
        figures.update(
            source=kind, failed_passes=len(delays), kept_last_good=kept, error=error, healed=healed
        )
        assert kept and "not found" in error and status.startswith("error:")
        assert healed and live.last_error == ""


async def test_no_prune_while_the_source_is_gone(
    repo: GitRemote, fleet: Fleet, tmp_path: Path, figures: Figures
) -> None:
    """An empty answer is not an empty desired state: a vanished repo prunes nothing."""
    async with running(tmp_path / "d", source_url(repo, "mirror"), fleet) as live:
        push(repo, "fn", "1.0.0", BLUE_GREEN)
        await live.one_pass()
        shutil.rmtree(repo.bare)
        repo.bare.mkdir()
        git("init", "-q", "--bare", "-b", "main", str(repo.bare), cwd=repo.bare.parent)
        await live.one_pass()
        figures.update(fleet_kept=serves(fleet, "1.0.0"), error=live.last_error)
        assert serves(fleet, "1.0.0")
