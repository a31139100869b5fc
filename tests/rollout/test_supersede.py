"""A rollout cut short by a newer commit, on real agents and a fake clock.

Found by bench P2 at 1,000 endpoints: the push of 1.0.1 landed while the function's first
rollout (1.0.0) was still in its last steps. The superseded rollout "rolled back" 1.0.0 on
every node, and with no earlier version to go back to that meant deleting the function
everywhere: every endpoint answered 404 until 1.0.1 was deployed as a first version again,
and 1.0.0, gone without a retirement, was never retired (the bench waited on it for
minutes while the daemon, rightly, had nothing left to do).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gitopsd.reconcile import FunctionResult
from gitopsd.rollout.engine import Engine, RolloutEvent
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, Syncer, push

BLUE_GREEN = "{type: blue-green, keepBlueEnvironment: false}"


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    return remote


def superseded_after(sync: Syncer, kind: str, reason: str) -> FunctionResult:
    """Roll out what Git holds for `fn`; a newer commit supersedes it once a `kind` step
    has finished (what the daemon does when a push arrives mid-rollout)."""

    async def once() -> FunctionResult:
        read = await sync.reconciler.read(sync.source)
        desired = read.desired
        change = next(c for c in read.changes.changes if c.function == "fn")
        addresses = {name: node.address for name, node in desired.nodes.items()}
        async with sync.reconciler.client(addresses) as client:
            engine = Engine(sync.store, client, sync.clock)

            def on_event(event: RolloutEvent) -> None:
                if event.outcome is not None and event.step.kind == kind:
                    engine.superseded["fn"] = reason

            engine.on_event = on_event
            return await sync.reconciler.rollout_function(
                engine, desired.functions["fn"], desired, read.live, change, {}
            )

    return asyncio.run(once())


def loaded_versions(fleet: Fleet, node: str) -> set[str]:
    functions = fleet.inventory(node)["functions"]
    return set(functions["fn"]["versions"]) if "fn" in functions else set()


def test_a_superseded_first_version_keeps_serving_until_the_newer_rollout_replaces_it(
    repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    sync = Syncer(tmp_path / "state", repo, HookClock())
    push(repo, "fn", "1.0.0", BLUE_GREEN)
    # A first version serves as soon as it is loaded: after the deploy step, every node
    # answers with 1.0.0 (there is nothing else it could answer with).
    result = superseded_after(sync, "deploy", "superseded by commit 0123456789ab")
    assert result.state == "ROLLED_BACK"
    assert "superseded by commit 0123456789ab" in result.message
    # Nothing to go back to: the function is not taken off the nodes (that was an outage
    # of every endpoint until the newer version got there).
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
    # The newer commit's rollout then goes from 1.0.0, as from any version that serves,
    # and retires it.
    push(repo, "fn", "1.0.1", BLUE_GREEN)
    report = sync()
    assert [r.state for r in report.results] == ["COMPLETED"]
    assert set(fleet.serving("fn").values()) == {"1.0.1"}
    assert {node: loaded_versions(fleet, node) for node in fleet.nodes} == {
        node: {"1.0.1"} for node in fleet.nodes
    }


def test_a_superseded_update_still_goes_back_to_the_version_that_served_before(
    repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    sync = Syncer(tmp_path / "state", repo, HookClock())
    push(repo, "fn", "1.0.0", BLUE_GREEN)
    assert sync().ok
    push(repo, "fn", "2.0.0", BLUE_GREEN)
    result = superseded_after(sync, "traffic", "superseded by commit 0123456789ab")
    assert result.state == "ROLLED_BACK"
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
    assert {node: loaded_versions(fleet, node) for node in fleet.nodes} == {
        node: {"1.0.0"} for node in fleet.nodes
    }


def test_an_operator_abort_of_a_first_version_still_removes_it(
    repo: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """An abort says "not this version": with nothing to go back to, the function goes."""
    clock = HookClock()
    sync = Syncer(tmp_path / "state", repo, clock)
    push(repo, "fn", "1.0.0", "{type: canary, stages: [50, 100], evaluationPeriod: PT5M}")
    clock.hook = lambda _now: sync.store.set_control("fn", clock.now(), abort=1)
    report = sync()
    assert [r.state for r in report.results] == ["ROLLED_BACK"]
    assert set(fleet.serving("fn").values()) == {None}
