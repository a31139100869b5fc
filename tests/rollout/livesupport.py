"""Running real rollouts in-process on a fake clock: the waits take no time, the agents are real."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from gitopsd.clock import FakeClock
from gitopsd.reconcile import Reconciler, SyncReport
from gitopsd.rollout.engine import EventSink, RolloutEvent
from gitopsd.source.git import SourceSpec
from gitopsd.store.sqlite import SqliteStore
from tests.fleetfixture import TOKEN, Fleet
from tests.gitrepo import GitRemote
from tests.wasm_modules import handler_wat


class HookClock(FakeClock):
    """A fake clock that runs `hook(now)` whenever the engine waits: traffic, operator actions."""

    def __init__(self, hook: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self.hook = hook

    async def sleep_until(self, deadline: float) -> None:
        await super().sleep_until(deadline)
        if self.hook is not None:
            await asyncio.to_thread(self.hook, self.now())


def push(
    remote: GitRemote,
    name: str,
    version: str,
    strategy: str,
    health: str = "OK",
    behaviour: str = "ok",
    extra: str = "",
) -> str:
    remote.write(
        f"functions/{name}.yaml",
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\n"
        f"metadata: {{name: {name}}}\nspec:\n"
        f'  version: "{version}"\n  module: modules/{name}.wat\n'
        f"  strategy: {strategy}\n{extra}",
    )
    remote.write(
        f"functions/modules/{name}.wat", handler_wat(f"{name} {version}", health, behaviour)
    )
    return remote.commit_push(f"{name} {version}")


class Syncer:
    """`sync --once` through the Reconciler, on a HookClock, with one SQLite state dir."""

    def __init__(
        self,
        state_dir: Path,
        remote: GitRemote,
        clock: HookClock,
        on_event: EventSink | None = None,
    ) -> None:
        self.store = SqliteStore(state_dir)
        self.clock = clock
        self.source = SourceSpec(str(remote.bare))
        self.reconciler = Reconciler(self.store, state_dir, clock, TOKEN, on_event=on_event)

    def __call__(self) -> SyncReport:
        async def once() -> SyncReport:
            read = await self.reconciler.read(self.source)
            return await self.reconciler.apply(read)

        return asyncio.run(once())


def send_traffic(fleet: Fleet, function: str, per_node: int = 20) -> None:
    """Invoke `function` `per_node` times on every running node, as users would."""
    for name, node in fleet.nodes.items():
        if node.agent is not None:
            for i in range(per_node):
                fleet.invoke(name, function, **{"X-User-Id": f"user-{i}"})


def traffic_before_judging(fleet: Fleet, function: str, per_node: int = 10) -> EventSink:
    """An engine event hook: real requests arrive whenever a wait or an analysis starts."""

    def hook(event: RolloutEvent) -> None:
        if event.outcome is None and event.step.kind in ("wait", "analyze"):
            send_traffic(fleet, function, per_node)

    return hook
