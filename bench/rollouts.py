"""Real rollouts run by the engine in this process against agent endpoints in another (P5, P6).

`Rollouts` owns a Git repository, a SQLite store and an agent fleet; `rollout(version)`
pushes a new version of one blue-green function, reads desired and live state like a pass
does (not timed), then times the engine carrying the rollout out, and records every HTTP
call the engine's client makes, step by step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.support import (
    TOKEN,
    AgentFleet,
    GitRemote,
    function_manifest,
    handler_wasm,
    nodes_manifest,
)
from gitopsd.clock import SystemClock
from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.tokens import FleetAuth
from gitopsd.reconcile import Reconciler
from gitopsd.rollout.engine import Engine, RolloutEvent
from gitopsd.source.git import SourceSpec
from gitopsd.store.sqlite import SqliteStore

FUNCTION = "hello"
CONCURRENCY = 64  # [fleet] concurrency's default, for the engine and the direct calls alike
SHARED = FleetAuth(TOKEN, "shared")  # `agent --count N` gives every endpoint one token


@dataclass(frozen=True)
class Call:
    step: int
    node: str
    method: str
    path: str
    json: Any
    data: bytes | None
    started: float = 0.0  # perf_counter when the engine's client sent it
    ended: float = 0.0  # ... and when its answer was in


class RecordingClient(AgentClient):
    """The fleet client, noting each request with the engine step it belongs to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step = -1
        self.calls: list[Call] = []

    async def _call(  # type: ignore[override]
        self, node: str, method: str, path: str, **kw: Any
    ) -> tuple[int, Any]:
        started = time.perf_counter()
        try:
            return await super()._call(node, method, path, **kw)
        finally:
            call = Call(self.step, node, method, path, kw.get("json"), kw.get("data"))
            self.calls.append(replace(call, started=started, ended=time.perf_counter()))


@dataclass
class Result:
    seconds: float
    state: str
    calls: list[Call]
    steps: list[tuple[str, float]] = field(default_factory=list)  # (kind, seconds)
    step_starts: dict[int, float] = field(default_factory=dict)  # seq -> perf_counter
    step_kinds: dict[int, str] = field(default_factory=dict)  # seq -> step kind


class Rollouts:
    def __init__(self, root: Path, count: int) -> None:
        self.root = root
        self.agents = AgentFleet(root / "agents", count, name="edge")
        self.remote = GitRemote(root / "git")
        self.store = SqliteStore(root / "state")
        self.reconciler = Reconciler(self.store, root / "state", SystemClock(), SHARED)
        self.source = SourceSpec(str(self.remote.bare))
        self.modules: dict[str, bytes] = {}

    def start(self) -> None:
        self.agents.start()
        self.remote.write(
            "nodes.yaml", nodes_manifest(self.agents.names, self.agents.base_port, ["r0"])
        )

    def push(self, version: str, trap: bool = False) -> str:
        wasm = handler_wasm(f"{FUNCTION} {version}\n", trap=trap)
        from bench.support import sha256

        self.modules[sha256(wasm)] = wasm
        extra = "  autoRollback: {triggers: [{metric: error_rate, threshold: 5}]}\n"
        self.remote.write(f"functions/modules/{FUNCTION}.wasm", wasm)
        self.remote.write(
            f"functions/{FUNCTION}.yaml",
            function_manifest(FUNCTION, version, f"modules/{FUNCTION}.wasm", extra=extra),
        )
        self.remote.commit(version)
        self.remote.push()
        return sha256(wasm)

    async def rollout(
        self,
        version: str,
        trap: bool = False,
        after_step: Callable[[str], None] | None = None,
        before_step: Callable[[str], None] | None = None,
    ) -> Result:
        """Push `version`, then time the engine rolling it out (create + run)."""
        self.push(version, trap)
        read = await self.reconciler.read(self.source)
        desired = read.desired
        change = next(c for c in read.changes.changes if c.function == FUNCTION)
        addresses = {n: node.address for n, node in desired.nodes.items()}
        starts: dict[int, float] = {}
        kinds: dict[int, str] = {}
        steps: list[tuple[str, float]] = []
        async with RecordingClient(addresses, SHARED, 10.0, CONCURRENCY) as client:

            def on_event(event: RolloutEvent) -> None:
                if event.outcome is None:
                    if before_step is not None:
                        before_step(event.step.kind)
                    client.step = event.seq
                    starts[event.seq] = time.perf_counter()
                    kinds[event.seq] = event.step.kind
                else:
                    steps.append((event.step.kind, time.perf_counter() - starts[event.seq]))
                    if after_step is not None:
                        after_step(event.step.kind)

            engine = Engine(self.store, client, SystemClock(), on_event)
            start = time.perf_counter()
            result = await self.reconciler.rollout_function(
                engine, desired.functions[FUNCTION], desired, read.live, change, {}
            )
            took = time.perf_counter() - start
        return Result(took, result.state, client.calls, steps, starts, kinds)
