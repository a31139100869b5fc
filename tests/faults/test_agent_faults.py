"""Agent faults: one node of three misbehaves while a new version rolls out.

The misbehaving node is a real agent behind `FaultProxy`, which breaks the agent API on
purpose (dies mid-deploy, hangs, answers slowly, 5xx, invalid JSON, wrong digests, flaps);
one scenario stops a real agent mid-deploy instead. After the faulty pass no node may serve
a version that neither Git (the new version) nor the rollback target (the old one) names,
and what nodes serve must agree with the rollout's final state; once the fault heals, one
more pass converges the fleet on the new version. Figures: nodes on an unintended version,
time from the first faulty answer to the failing step outcome, attempts per call.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gitopsd.clock import FakeClock
from gitopsd.errors import GitopsdError
from gitopsd.fleet.client import AgentClient
from gitopsd.reconcile import Reconciler, SyncReport
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.source.git import SourceSpec
from gitopsd.store.sqlite import SqliteStore
from tests.faults.conftest import Figures, scale
from tests.faults.faultproxy import FaultProxy, Rule, run_on
from tests.fleetfixture import TOKEN, Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

TIMEOUT = 0.5  # the controller's per-request agent timeout ([fleet] timeout) in these tests
RETRIES = 2  # AgentClient's default: 3 attempts per call
FAILURE_THRESHOLD = 3  # healthCheck.failureThreshold default: health calls per check
ROLLING = "{type: rolling, batchSize: 1, batchDelay: PT1S}"
BLUE_GREEN = "{type: blue-green}"
VERSION = r"/functions/fn/versions/2\.0\.0"
_CALL: contextvars.ContextVar[list[int]] = contextvars.ContextVar("attempts")


class CountingClient(AgentClient):
    """The real client, counting the HTTP attempts of every call (retries included)."""

    attempts: list[tuple[str, int]]

    async def __aenter__(self) -> CountingClient:
        await super().__aenter__()
        session = self._session
        assert session is not None
        original = session.request

        def request(*args: Any, **kwargs: Any) -> Any:
            _CALL.get()[0] += 1
            return original(*args, **kwargs)

        session.request = request  # type: ignore[method-assign]
        return self

    async def _call(self, node: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        token = _CALL.set([0])
        try:
            return await super()._call(node, method, path, **kwargs)
        finally:
            self.attempts.append((f"{node} {method} {path}", _CALL.get()[0]))
            _CALL.reset(token)


@dataclass
class Scenario:
    name: str
    rules: list[Rule] = field(default_factory=list)
    final: tuple[str, ...] = ("ROLLED_BACK", "FAILED")  # acceptable states of the faulty pass
    stop_agent: bool = False  # stop the real agent when the Deploy step starts
    first_deploy: bool = False  # the function is new: no old version to go back to
    drift: bool = False  # with the fault still on, the diff must flag edge-c


ANY = ("COMPLETED", "ROLLED_BACK", "FAILED")


SCENARIOS = [
    Scenario("dies-before-upload", [Rule("die", "PUT", r"/modules/.*")]),
    Scenario("dies-mid-deploy", [Rule("die-after", "PUT", VERSION)]),
    Scenario("real-agent-stops-mid-deploy", stop_agent=True),
    Scenario("hangs-on-health", [Rule("hang", "POST", VERSION + "/health")]),
    Scenario("hangs-after-traffic", [Rule("hang-after", "PUT", r"/functions/fn/traffic")]),
    Scenario("slow-answers", [Rule("slow", delay=0.2)], final=("COMPLETED",)),
    Scenario("5xx-transient", [Rule("5xx", times=2, status=503)], final=("COMPLETED",)),
    Scenario("5xx-on-traffic", [Rule("5xx", "PUT", r"/functions/fn/traffic", status=500)]),
    Scenario("5xx-after-load", [Rule("5xx-after", "PUT", VERSION, status=502)]),
    # Only the controller's view of the node is broken: the rollout itself can complete.
    Scenario("invalid-json-inventory", [Rule("badjson", "GET", "/inventory")], ANY),
    Scenario("invalid-json-metrics", [Rule("badjson", "GET", r"/functions/fn/metrics")], ANY),
    Scenario("wrong-digest-inventory", [Rule("wrongdigest", "GET", "/inventory")], ANY, drift=True),
    Scenario("flaps-every-other-request", [Rule("flap")], final=("COMPLETED",)),
    Scenario("first-deploy-dies-before-load", [Rule("die", "PUT", VERSION)], first_deploy=True),
]
# Scenarios that expose bugs live in test_found_bugs.py: invalid JSON on the health endpoint,
# a first deploy whose load reply is lost, and the 100 MB body (memory).


@dataclass
class Outcome:
    state: str
    seconds: float
    detect_s: float | None
    unintended: list[str]
    mismatched: list[str]
    converged: bool
    attempts: dict[str, int]
    problems: tuple[str, ...]
    drift_flagged: bool | None


def serving(fleet: Fleet, node: str) -> dict[str, float]:
    fn = fleet.inventory(node)["functions"].get("fn") or {}
    return {w["version"]: w["percent"] for w in fn.get("traffic", []) if w["percent"] > 0}


class Harness:
    """A 3-node fleet where edge-c is reached through a FaultProxy; passes run in-process."""

    def __init__(self, root: Path, strategy: str) -> None:
        self.root = root
        self.strategy = strategy
        self.remote = GitRemote(root / "git")
        self.fleet: Fleet
        self.proxy: FaultProxy
        self.events: list[tuple[float, RolloutEvent]] = []
        self.on_event: Callable[[RolloutEvent], None] | None = None

    def start(self, fleet: Fleet, direct: bool = False) -> None:
        self.fleet = fleet
        for name, region in (
            ("edge-a", "us-east"),
            ("edge-b", "us-east"),
            ("edge-c", "eu-central"),
        ):
            fleet.add(name, region, tier="prod")
        self.proxy = FaultProxy(fleet.nodes["edge-c"].url)
        run_on(fleet.loop, self.proxy.start())
        nodes = fleet.manifests()
        if not direct:
            nodes = nodes.replace(fleet.nodes["edge-c"].url, self.proxy.url)
            fleet.readdress("edge-c", self.proxy.url)  # the token of the address Git names
        self.remote.write("nodes.yaml", nodes)
        self.store = SqliteStore(self.root / "state")
        self.reconciler = Reconciler(
            self.store,
            self.root / "state",
            FakeClock(),
            TOKEN,
            timeout=TIMEOUT,
            on_event=self._event,
        )
        self.attempts: list[tuple[str, int]] = []

        def client(addresses: Mapping[str, str]) -> AgentClient:
            counting = CountingClient(addresses, TOKEN, TIMEOUT, retries=RETRIES)
            counting.attempts = self.attempts
            return counting

        self.reconciler.client = client  # type: ignore[method-assign]

    def _event(self, event: RolloutEvent) -> None:
        self.events.append((time.monotonic(), event))
        if self.on_event is not None:
            self.on_event(event)

    def sync(self) -> SyncReport:
        async def once() -> SyncReport:
            read = await self.reconciler.read(SourceSpec(str(self.remote.bare)))
            return await self.reconciler.apply(read)

        return asyncio.run(once())

    def close(self) -> None:
        run_on(self.fleet.loop, self.proxy.close())
        self.store.close()


def run_scenario(tmp_path: Path, scenario: Scenario, strategy: str) -> Outcome:
    h = Harness(tmp_path, strategy)
    with running_fleet(tmp_path / "fleet") as fleet:
        h.start(fleet, direct=scenario.stop_agent)
        try:
            if not scenario.first_deploy:
                push(h.remote, "fn", "1.0.0", strategy)
                assert h.sync().ok
                assert {tuple(serving(fleet, n)) for n in fleet.nodes} == {("1.0.0",)}
            old = None if scenario.first_deploy else "1.0.0"
            h.proxy.rules[:] = scenario.rules
            if scenario.stop_agent:

                def stop_on_deploy(event: RolloutEvent) -> None:
                    if event.outcome is None and event.step.kind == "deploy":
                        h.on_event = None
                        fleet.stop("edge-c")

                h.on_event = stop_on_deploy
            push(h.remote, "fn", "2.0.0", strategy)
            h.events.clear()
            started = time.monotonic()
            try:
                report = h.sync()
                problems = tuple(r.message for r in report.results if not r.ok)
                state = next((r.state for r in report.results if r.function == "fn"), "NONE")
            except GitopsdError as exc:
                problems, state = (str(exc),), "ERROR"
            seconds = time.monotonic() - started
            faulted = [s.at for s in h.proxy.seen if s.fault is not None]
            first_fault = min(faulted) if faulted else started
            failing = [
                at
                for at, e in h.events
                if e.outcome is not None and (not e.outcome.ok or e.outcome.failed_nodes)
            ]
            detect = round(min(failing) - first_fault, 3) if failing else None
            attempts: dict[str, int] = {}
            for call, count in h.attempts:
                attempts[call] = max(attempts.get(call, 0), count)
            drift = None
            if scenario.drift:
                read = asyncio.run(h.reconciler.read(SourceSpec(str(h.remote.bare))))
                drift = any(
                    n.node == "edge-c" and n.action.value != "ok"
                    for c in read.changes.changes
                    for n in c.nodes
                )
            # what every node serves now, agents back up, with nothing healed yet
            run_on(fleet.loop, h.proxy.heal())
            if scenario.stop_agent:
                fleet.start("edge-c")
            unintended, mismatched = [], []
            for node in fleet.nodes:
                now = serving(fleet, node)
                if not set(now) <= {"2.0.0", old}:
                    unintended.append(f"{node}: {now}")
                elif state == "COMPLETED" and "2.0.0" not in now:
                    mismatched.append(f"{node}: COMPLETED but serves {now}")
                elif state == "ROLLED_BACK" and now != ({old: 100.0} if old else {}):
                    mismatched.append(f"{node}: ROLLED_BACK but serves {now}")
            h.sync()
            converged = all(serving(fleet, n) == {"2.0.0": 100.0} for n in fleet.nodes)
        finally:
            h.close()
    return Outcome(
        state, seconds, detect, unintended, mismatched, converged, attempts, problems, drift
    )


def _strategies(index: int) -> list[str]:
    both = [ROLLING, BLUE_GREEN]
    return both if scale(0, 1) else [both[index % 2]]


@pytest.mark.parametrize(
    ("scenario", "strategy"),
    [
        pytest.param(s, strategy, id=f"{s.name}-{strategy.split(',')[0].split()[-1]}")
        for i, s in enumerate(SCENARIOS)
        for strategy in _strategies(i)
    ],
)
@pytest.mark.timeout(scale(120, 900))
def test_misbehaving_agent(
    scenario: Scenario, strategy: str, tmp_path: Path, figures: Figures
) -> None:
    repeats = scale(1, 5)
    worst_detect = 0.0
    for attempt in range(repeats):
        out = run_scenario(tmp_path / f"run{attempt}", scenario, strategy)
        if out.detect_s is not None:
            worst_detect = max(worst_detect, out.detect_s)
        figures.update(
            scenario=scenario.name,
            strategy=strategy,
            runs=attempt + 1,
            state=out.state,
            pass_seconds=round(out.seconds, 2),
            detect_s=out.detect_s,
            worst_detect_s=worst_detect,
            nodes_unintended=len(out.unintended),
            nodes_mismatched=len(out.mismatched),
            converged_after_heal=out.converged,
            max_attempts_per_call=max(out.attempts.values(), default=0),
            drift_flagged=out.drift_flagged,
            problems=list(out.problems)[:2],
        )
        assert out.unintended == []
        assert out.mismatched == []
        assert out.state in scenario.final, out.problems
        assert out.converged
        for call, count in out.attempts.items():
            assert count <= RETRIES + 1, f"{call}: {count} attempts"
        if scenario.drift:
            assert out.drift_flagged
        if out.detect_s is not None:
            # one call: attempts * (timeout + backoff); a health check repeats it per failure
            bound = (RETRIES + 1) * (TIMEOUT + 0.15) * FAILURE_THRESHOLD + 1.0
            assert out.detect_s < bound


def peak_rss_mib(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run `gitopsd ARGS` as a fresh process; its peak RSS in MiB, exit code and output."""
    out_path = (
        Path(os.environ.get("TMPDIR", "/tmp")) / f"gitopsd-rss-{os.getpid()}-{time.time_ns()}"
    )
    with out_path.open("w+") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gitopsd.cli.main", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 120
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(args)
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sink.seek(0)
        text = sink.read()
    out_path.unlink()
    return usage.ru_maxrss / 1024, proc.returncode, text


def diff_args(h: Harness, fleet: Fleet) -> list[str]:
    return [
        "diff",
        str(h.remote.bare),
        "--state-dir",
        str(h.root / "diff-state"),
        "--agent-token-file",
        str(fleet.token_file),
        "--output",
        "json",
    ]


def huge_body_figures(tmp_path: Path) -> dict[str, Any]:
    """Peak RSS of `gitopsd diff` when one agent answers its inventory with 100 MB."""
    h = Harness(tmp_path, BLUE_GREEN)
    with running_fleet(tmp_path / "fleet") as fleet:
        h.start(fleet)
        try:
            push(h.remote, "fn", "1.0.0", BLUE_GREEN)
            baseline, code, _ = peak_rss_mib(diff_args(h, fleet))
            h.proxy.rules[:] = [Rule("huge", "GET", "/inventory", size=100 * 1024 * 1024)]
            started = time.monotonic()
            peak, code, output = peak_rss_mib(diff_args(h, fleet))
            seconds = time.monotonic() - started
        finally:
            h.close()
    return {
        "baseline_rss_mib": round(baseline),
        "huge_body_rss_mib": round(peak),
        "rss_growth_mib": round(peak - baseline),
        "exit_code": code,
        "seconds": round(seconds, 2),
        "node_refused": '"edge-c"' in output and ("unreachable" in output or "unknown" in output),
    }
