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
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitopsd.agent import Runtime, start_agent
from gitopsd.agent.settings import AgentSettings
from gitopsd.clock import FakeClock
from gitopsd.errors import GitopsdError
from gitopsd.fleet.client import AgentClient, bucket_key
from gitopsd.fleet.tokens import FleetAuth
from gitopsd.reconcile import Reconciler, SyncReport
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.source.git import SourceSpec
from gitopsd.store.sqlite import SqliteStore
from tests.faults.conftest import Figures, scale
from tests.faults.faultproxy import FaultProxy, Rule, run_on
from tests.fleetfixture import TOKEN, Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push
from tests.wasm_modules import handler_wasm

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


# --- hostile clients of one agent's HTTP surface (issue 14, findings 5 and 6) ---------------


def _agent_process(root: Path, open_files: int) -> tuple[subprocess.Popen[str], str]:
    """A real `python -m gitopsd.agent` limited to `open_files` descriptors; its URL."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(TOKEN + "\n")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "gitopsd.agent", "--listen", "127.0.0.1:0"),
            *("--name", "edge-x", "--region", "r1", "--data-dir", str(root / "data")),
            *("--token-file", str(root / "token")),
        ],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"agent.listening"' in line:
            return proc, json.loads(line)["url"]
    proc.wait(10)
    raise AssertionError("the agent never reported listening")


def test_stalled_clients_leave_health_and_inventory_reachable(
    tmp_path: Path, figures: Figures
) -> None:
    # Finding 6: with 256 descriptors, 300 clients that never finish their request head
    # made /healthz and /inventory fail until they left (the agent ran out of descriptors).
    proc, url = _agent_process(tmp_path / "agent", open_files=256)
    port = int(url.rsplit(":", 1)[1])

    async def attack() -> tuple[int, int, int]:
        stalled: list[asyncio.StreamWriter] = []
        try:
            for _ in range(300):
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(b"POST /fn/f HTTP/1.1\r\nHost: edge\r\n")  # and nothing more
                await writer.drain()
                stalled.append(writer)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(base_url=url, timeout=timeout) as session:
                async with session.get("/healthz") as health:
                    health_status = health.status
                async with session.get("/inventory", headers=auth) as inventory:
                    inventory_status = inventory.status
                async with session.get("/metrics", headers=auth) as metrics:
                    text = await metrics.text()
            evicted = next(
                int(float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines()
                if line.startswith("gitopsd_agent_refused_total") and 'reason="evicted"' in line
            )
            return health_status, inventory_status, evicted
        finally:
            for writer in stalled:
                writer.close()

    try:
        health, inventory, evicted = asyncio.run(attack())
    finally:
        proc.terminate()
        proc.wait(20)
    figures["stalled_clients"] = 300
    figures["evicted"] = evicted
    assert (health, inventory) == (200, 200)
    assert evicted > 0  # the stalled heads made room, instead of the descriptors running out


def test_a_header_an_outsider_sends_never_fails_a_version(tmp_path: Path, figures: Figures) -> None:
    # Finding 5: a header byte >= 0x80 made the agent's own code fail while building the
    # module's environment: a 500 counted against the version, which could roll back a canary.
    async def scenario() -> tuple[list[int], dict[str, Any], str]:
        runtime = Runtime(workers=2)
        settings = AgentSettings(
            name="edge-x", region="r1", port=0, data_dir=tmp_path / "data", token=TOKEN
        )
        agent = await start_agent(settings, runtime)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            wasm = handler_wasm(behaviour="env")
            sha = hashlib.sha256(wasm).hexdigest()
            async with aiohttp.ClientSession(base_url=agent.url) as session:
                async with session.put(f"/modules/{sha}", data=wasm, headers=auth) as r:
                    assert r.status == 201
                async with session.put(
                    "/functions/f/versions/2.0.0", json={"sha256": sha}, headers=auth
                ) as r:
                    assert r.status == 200
                statuses = []
                for extra in (b"", b"Transfer-Encoding: chunked\r\n"):  # either path
                    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
                    body = b"0\r\n\r\n" if extra else b""
                    length = b"" if extra else b"Content-Length: 0\r\n"
                    writer.write(
                        b"POST /fn/f HTTP/1.1\r\nHost: edge\r\nX-User-Id: \xff\xfe\r\n"
                        + extra
                        + length
                        + b"\r\n"
                        + body
                    )
                    line = await asyncio.wait_for(reader.readline(), 10)
                    statuses.append(int(line.split()[1]))
                    writer.close()
                async with session.get("/functions/f/metrics", headers=auth) as r:
                    metrics = (await r.json())["versions"]["2.0.0"]
                async with session.get("/metrics", headers=auth) as r:
                    text = await r.text()
            return statuses, metrics, text
        finally:
            await agent.close()
            runtime.close()

    statuses, metrics, text = asyncio.run(scenario())
    figures["hostile_requests"] = len(statuses)
    figures["version_errors"] = metrics["errors"]
    assert statuses == [400, 400]  # the client's fault, said so
    assert (metrics["requests"], metrics["errors"]) == (0, 0)  # never the version's
    assert 'gitopsd_agent_refused_total{node="edge-x",reason="bad_header"} 2.0' in text
    assert 'gitopsd_agent_internal_errors_total{node="edge-x"} 0.0' in text


def test_an_outsider_cannot_aim_at_a_canary_s_users(tmp_path: Path) -> None:
    # Finding 5: the sticky bucket was sha256(function:user), so an outsider could pick user
    # ids that land on a canary and fail it. Buckets are keyed now with a secret the
    # controller derives from the fleet secret and hands every agent with the weights.
    secret = "fleet-secret-0123456789"
    users = [f"user-{i}" for i in range(300)]

    async def scenario() -> tuple[dict[str, str], dict[str, str], dict[str, str], list[str]]:
        runtime = Runtime(workers=2)
        wasm = {v: handler_wasm(reply=f"v{v}") for v in ("1", "2")}
        agents = {}
        try:
            for node in ("a", "b"):
                settings = AgentSettings(
                    name=node, region="r1", port=0, data_dir=tmp_path / node, token=secret
                )
                agents[node] = await start_agent(settings, runtime)
            auth = {"Authorization": f"Bearer {secret}"}
            async with aiohttp.ClientSession() as session:
                for agent in agents.values():
                    for version, module in wasm.items():
                        sha = hashlib.sha256(module).hexdigest()
                        url = f"{agent.url}/modules/{sha}"
                        async with session.put(url, data=module, headers=auth) as r:
                            assert r.status == 201
                        url = f"{agent.url}/functions/fn/versions/{version}"
                        async with session.put(url, json={"sha256": sha}, headers=auth) as r:
                            assert r.status == 200
                addresses = {node: agent.url for node, agent in agents.items()}
                async with AgentClient(addresses, FleetAuth(secret, mode="shared")) as client:
                    for node in agents:  # a canary at 10 %
                        await client.set_traffic(node, "fn", [("2", 10.0), ("1", 90.0)])

                async def versions(url: str) -> dict[str, str]:
                    seen = {}
                    for user in users:
                        headers = {"X-User-Id": user}
                        async with session.post(f"{url}/fn/fn", headers=headers) as r:
                            seen[user] = r.headers["X-Gitopsd-Version"]
                    return seen

                on_a, on_b = await versions(agents["a"].url), await versions(agents["b"].url)
                shown = []
                for path in ("/inventory", "/metrics", "/functions/fn/metrics"):
                    async with session.get(agents["a"].url + path, headers=auth) as r:
                        shown.append(await r.text())
                await agents["a"].close()
                settings = AgentSettings(
                    name="a", region="r1", port=0, data_dir=tmp_path / "a", token=secret
                )
                agents["a"] = await start_agent(settings, runtime)
                after_restart = await versions(agents["a"].url)
            return on_a, on_b, after_restart, shown
        finally:
            for agent in agents.values():
                await agent.close()
            runtime.close()

    on_a, on_b, after_restart, shown = asyncio.run(scenario())
    assert on_a == on_b == after_restart  # one user, one version, on every node and restart
    canary = {user for user, version in on_a.items() if version == "2"}
    assert 0 < len(canary) < len(users) // 4
    predicted = {
        user
        for user in users
        if int.from_bytes(hashlib.sha256(f"fn:{user}".encode()).digest()) % 10_000 < 1000
    }
    assert len(canary & predicted) < len(predicted) // 2  # the public formula no longer aims
    key = bucket_key(secret, "fn")
    assert all(key not in text for text in shown)  # never shown


def test_a_bucket_key_that_is_not_one_is_refused(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, str]:
        runtime = Runtime(workers=1)
        settings = AgentSettings(
            name="edge-x", region="r1", port=0, data_dir=tmp_path / "data", token=TOKEN
        )
        agent = await start_agent(settings, runtime)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            module = handler_wasm()
            sha = hashlib.sha256(module).hexdigest()
            async with aiohttp.ClientSession(base_url=agent.url) as session:
                async with session.put(f"/modules/{sha}", data=module, headers=auth) as r:
                    assert r.status == 201
                body = {"sha256": sha}
                async with session.put("/functions/f/versions/1", json=body, headers=auth) as r:
                    assert r.status == 200
                traffic = {"weights": [{"version": "1", "percent": 100}], "bucketKey": "ab" * 31}
                async with session.put("/functions/f/traffic", json=traffic, headers=auth) as r:
                    return r.status, (await r.json())["error"]
        finally:
            await agent.close()
            runtime.close()

    status, error = asyncio.run(scenario())
    assert status == 400
    assert "bucketKey" in error
