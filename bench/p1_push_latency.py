"""P1: `git push` returns → the first agent receives the deploy call, in watch and webhook mode.

A real daemon (`gitopsd run`) follows a bare repository; the operator's clone pushes a new
version of one blue-green function with the git CLI. The clock starts when `git push`
returns (webhook mode: the bench then delivers a signed GitHub push event, as a forge
would, and that POST is inside the measured time). It stops when an agent receives the
rollout's first deploy request (`HEAD /modules/<sha>`, the start of `ensure_module`): the
two agents run in this process (gitopsd.demo.local_fleet) so that their handler can note
the time on the same clock. Every rollout finishes before the next push.

Baselines: watch mode, the watchfiles event alone (the daemon's own `watch_refs` on a bare
repository, push return → callback); webhook mode, the signed POST's round trip alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bench.harness import Context, Row, median
from bench.support import DaemonProcess, GitRemote, function_manifest, handler_wasm, wait_for
from gitopsd.agent.service import AgentService
from gitopsd.demo.local_fleet import LocalFleet

FUNCTION = "hello"


class DeployClock:
    """Notes when any in-process agent is first asked for a module (a deploy starts)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self._original: Callable[[AgentService, str], bool] = AgentService.has_module

    def __enter__(self) -> DeployClock:
        original = self._original

        def has_module(service: AgentService, sha256: str) -> bool:
            if self.first is None:
                self.first = time.monotonic()
            return original(service, sha256)

        AgentService.has_module = has_module  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        AgentService.has_module = self._original  # type: ignore[method-assign]


def serving(fleet: LocalFleet, version: str) -> bool:
    for node in fleet.nodes.values():
        req = urllib.request.Request(f"{node.url}/fn/{FUNCTION}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.headers.get("X-Gitopsd-Version") != version:
                    return False
        except OSError:
            return False
    return True


def write_version(remote: GitRemote, version: str) -> None:
    remote.write(f"functions/modules/{FUNCTION}.wasm", handler_wasm(f"{FUNCTION} {version}\n"))
    remote.write(
        f"functions/{FUNCTION}.yaml",
        function_manifest(FUNCTION, version, f"modules/{FUNCTION}.wasm"),
    )


def push_to_deploy(
    root: Path, pushes: int, webhook: bool, log: Callable[[str], None]
) -> list[float]:
    fleet = LocalFleet(root / "agents", token_mode="shared")  # as DaemonProcess sends
    try:
        for i in range(2):
            fleet.add(f"edge-{i}", "r0")
        remote = GitRemote(root / "git")
        remote.write("nodes.yaml", fleet.manifests())
        write_version(remote, "1.0.0")
        remote.commit("first version")
        remote.push()
        with DaemonProcess(root / "daemon", remote, fleet.token_file, watch=not webhook) as daemon:
            daemon.start()
            wait_for(lambda: serving(fleet, "1.0.0"), 60, "the first rollout", 0.05)
            samples = []
            for k in range(1, pushes + 1):
                version = f"1.0.{k}"
                write_version(remote, version)
                remote.commit(version)
                with DeployClock() as clock:
                    remote.push()
                    pushed = time.monotonic()
                    if webhook:
                        status = daemon.hook()
                        if status != 202:
                            raise RuntimeError(f"webhook answered {status}")
                    wait_for(lambda c=clock: c.first is not None, 30, "the deploy call", 0.0005)
                    assert clock.first is not None
                    samples.append(clock.first - pushed)
                wait_for(lambda v=version: serving(fleet, v), 60, f"{version} serving", 0.02)
            log(f"P1 {'webhook' if webhook else 'watch'}: {[round(s * 1000) for s in samples]} ms")
            return samples
    finally:
        fleet.close()


def watch_event_alone(root: Path, pushes: int) -> list[float]:
    """Push return → the daemon's `watch_refs` callback, with nothing else running."""
    from gitopsd.daemon.triggers import refs_dir, watch_refs

    remote = GitRemote(root / "git")
    remote.commit("start")
    remote.push()
    git_dir = refs_dir(str(remote.bare))
    assert git_dir is not None
    events: list[float] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def watch() -> None:
        await watch_refs(git_dir, lambda _r: events.append(time.monotonic()), stop)

    thread = threading.Thread(target=loop.run_until_complete, args=(watch(),), daemon=True)
    thread.start()
    time.sleep(0.5)  # let the watch start
    samples = []
    for k in range(pushes):
        remote.commit(f"change {k}")
        before = len(events)
        remote.push()
        pushed = time.monotonic()
        wait_for(lambda b=before: len(events) > b, 10, "the watch event", 0.0005)
        samples.append(events[before] - pushed)
        time.sleep(0.3)  # past the watch's debounce, so that each push is its own event
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    return samples


def hook_alone(root: Path, pushes: int) -> list[float]:
    """The signed webhook POST's round trip to an idle daemon (it triggers no-op passes)."""
    remote = GitRemote(root / "git")
    remote.commit("start")
    remote.push()
    token = root / "token"
    token.write_text("unused-token\n")
    samples = []
    with DaemonProcess(root / "daemon", remote, token, watch=False) as daemon:
        daemon.start()
        for _ in range(pushes):
            start = time.monotonic()
            if daemon.hook() != 202:
                raise RuntimeError("webhook refused")
            samples.append(time.monotonic() - start)
            time.sleep(0.05)
    return samples


def run(ctx: Context) -> list[Row]:
    pushes = ctx.reps(20, 5)
    rows = []
    for webhook in (False, True):
        mode = "webhook" if webhook else "watch"
        samples = push_to_deploy(ctx.work / mode, pushes, webhook, ctx.log)
        if webhook:
            base = hook_alone(ctx.work / f"{mode}-base", pushes)
            base_measure = "signed webhook POST round trip alone"
        else:
            base = watch_event_alone(ctx.work / f"{mode}-base", pushes)
            base_measure = "watchfiles event alone (push return -> watch_refs callback)"
        m = median(samples) * 1000
        rows.append(
            Row(
                id="P1",
                measure=f"push -> first deploy call, {mode} mode",
                unit="ms",
                median=m,
                baseline=median(base) * 1000,
                baseline_measure=base_measure,
                target="p50 <= 150 ms",
                ok=m <= 150,
                samples=[s * 1000 for s in samples],
                baseline_samples=[b * 1000 for b in base],
                note=f"{pushes} pushes; daemon process, 2 agents; blue-green",
            )
        )
    return rows
