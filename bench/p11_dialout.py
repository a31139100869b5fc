"""P11: `git push` returns → 1,000 dial-out endpoints serve the new version (blue-green); and
the controller at rest holding 1,000 dial-out agents' connections (CPU, RSS).

A real daemon (`gitopsd run`, watch mode, `[fleet] listen`) and 1,000 agent endpoints in one
process (`gitopsd agent --controller URL --count 1000`), each dialing out to the daemon
under its own name (`spec.connect: dial-out` in Git; one token for all, so the daemon runs
with `token_mode = "shared"` as in P2). Every request of every rollout, and every held
inventory request, goes over the endpoints' tunnels. The flip is timed as in P2: the agents
log `agent.traffic_set` as they apply it, and the figure is the last endpoint's flip minus
the push's return; one round of real invocations on the endpoints' `--listen` ports then
checks that each answers with the new version.

Rows: P11 (push -> N dial-out endpoints serving), P11-cpu (the daemon's CPU over IDLE_S
seconds at rest with N tunnels, each with a held inventory request and WebSocket pings), and
P11-rss (its resident memory then). No target in the issue: P2's 2 s goal for addressed
endpoints is the comparison. Sizes: `--param P11.count=N`, `P11.reps=N` (pushes),
`P11.idle=SECONDS`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from bench.harness import Context, Row, median
from bench.support import (
    GITOPSD,
    TOKEN,
    CpuWindow,
    DaemonProcess,
    GitRemote,
    free_port,
    free_port_range,
    function_manifest,
    handler_wasm,
    http_ok,
    quiet_env,
    rss_mib,
    tail,
    wait_for,
)
from gitopsd.fleet.tunnel import listing_token

FUNCTION = "hello"


class DialOutFleet:
    """N endpoints of one `gitopsd agent --controller URL --count N` process."""

    def __init__(self, root: Path, count: int, controller: str) -> None:
        self.root = root
        self.count = count
        self.controller = controller
        self.token_file = root / "agent-token"
        self.log = root / "agents.log"
        self.base_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(TOKEN + "\n")

    @property
    def names(self) -> list[str]:
        return [f"nat-{i}" for i in range(self.count)]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base_port + i}"

    def start(self) -> None:
        self.base_port = free_port_range(self.count)
        self.proc = subprocess.Popen(
            [
                *GITOPSD,
                "agent",
                "--controller",
                self.controller,
                "--listen",
                f"127.0.0.1:{self.base_port}",
                "--name",
                "nat",
                "--region",
                "r0",
                "--data-dir",
                str(self.root / "data"),
                "--token-file",
                str(self.token_file),
                "--count",
                str(self.count),
                "--base-port",
                str(self.base_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            env=quiet_env(),
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agents exited: {tail(self.log)}")
            return http_ok(f"{self.url(self.count - 1)}/healthz")

        wait_for(up, 600, f"{self.count} dial-out endpoints", step=0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def connected(relay: str) -> int:
    """How many agents the daemon's listener holds and serves."""
    req = urllib.request.Request(
        f"{relay}/agents", headers={"Authorization": f"Bearer {listing_token(TOKEN)}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return len(json.loads(r.read())["connected"])
    except OSError:
        return 0


def flips(log: Path, version: str) -> dict[str, float]:
    """node -> when its agent flipped all traffic of FUNCTION to `version`."""
    out: dict[str, float] = {}
    with log.open("rb") as f:
        for line in f:
            if b"agent.traffic_set" not in line or not line.startswith(b"{"):
                continue
            event = json.loads(line)
            if event.get("function") == FUNCTION and event.get("weights") == {version: 100}:
                stamp = str(event["timestamp"]).replace("Z", "+00:00")
                out.setdefault(str(event["node"]), datetime.fromisoformat(stamp).timestamp())
    return out


def flipped(agents: DialOutFleet, version: str) -> Callable[[], bool]:
    return lambda: len(flips(agents.log, version)) == agents.count


def all_serving(agents: DialOutFleet, version: str, patience: float = 0.0) -> bool:
    """Every endpoint answers an invocation with `version`; with `patience`, each one may
    take that many seconds (a loaded 2-core machine drops or delays some requests)."""
    for i in range(agents.count):
        deadline = time.monotonic() + patience
        while True:
            req = urllib.request.Request(f"{agents.url(i)}/fn/{FUNCTION}", data=b"", method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.headers.get("X-Gitopsd-Version") == version:
                        break
            except OSError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
    return True


def write_version(remote: GitRemote, version: str) -> None:
    remote.write(f"functions/modules/{FUNCTION}.wasm", handler_wasm(f"{FUNCTION} {version}\n"))
    remote.write(
        f"functions/{FUNCTION}.yaml",
        function_manifest(FUNCTION, version, f"modules/{FUNCTION}.wasm"),
    )


def run(ctx: Context) -> list[Row]:
    count = ctx.size("count", 20 if ctx.quick else 1000)
    pushes = ctx.reps(3, 1)
    idle_s = ctx.size("idle", 10 if ctx.quick else 60)
    work = ctx.work / f"n{count}"
    port = free_port()
    relay = f"http://127.0.0.1:{port}"
    agents = DialOutFleet(work / "agents", count, relay)
    remote = GitRemote(work / "git")
    remote.write(
        "nodes.yaml",
        "---\n".join(
            "apiVersion: gitopsd/v1\nkind: EdgeNode\n"
            f"metadata: {{name: {name}}}\nspec: {{connect: dial-out, region: r0}}\n"
            for name in agents.names
        ),
    )
    remote.commit("the nodes, no function yet")
    remote.push()
    samples: list[float] = []
    cores: list[float] = []
    with DaemonProcess(work / "daemon", remote, agents.token_file) as daemon:
        text = daemon.config.read_text()
        daemon.config.write_text(
            text.replace("[fleet]\n", f'[fleet]\nlisten = "127.0.0.1:{port}"\n')
        )
        daemon.start()
        try:
            agents.start()
            # Every tunnel first, then the first version: a rollout begun while some agents
            # are still starting would fail on them (as on any unreachable node).
            wait_for(lambda: connected(relay) == count, 600, f"{count} tunnels", 0.5)
            write_version(remote, "1.0.0")
            remote.commit("first version")
            remote.push()
            wait_for(lambda: all_serving(agents, "1.0.0"), 600, "the first rollout", 1.0)
            assert daemon.proc is not None and agents.proc is not None
            time.sleep(5.0)  # the first rollout's last passes, held requests settle
            window = CpuWindow([daemon.proc.pid])
            window.start()
            time.sleep(idle_s)
            idle_cores, _busy = window.stop()
            rss = rss_mib(daemon.proc.pid)
            ctx.log(f"P11 idle with {count} tunnels: {idle_cores:.1%} of a core, {rss:.0f} MiB")
            for k in range(1, pushes + 1):
                version = f"1.0.{k}"
                write_version(remote, version)
                remote.commit(version)
                window = CpuWindow([agents.proc.pid, daemon.proc.pid])
                window.start()
                remote.push()
                pushed = time.time()
                wait_for(flipped(agents, version), 300, "the flip", 0.2)
                cores.append(window.stop()[0])
                samples.append(max(flips(agents.log, version).values()) - pushed)
                ctx.log(f"P11 push -> {count} dial-out endpoints: {samples[-1] * 1000:.0f} ms")
                if not all_serving(agents, version, patience=30.0):
                    raise RuntimeError(f"not every dial-out endpoint serves {version}")
                time.sleep(3.0)  # the rollout's retire step and the pass that reports it
        finally:
            agents.stop()
    m = median(samples)
    note = (
        f"{count} endpoints in one agent process, each with its own tunnel to the daemon; "
        f"{os.cpu_count()} cores shared by both processes"
    )
    return [
        Row(
            id="P11",
            measure=f"push -> {count} dial-out endpoints serving new version (blue-green)",
            unit="ms",
            median=m * 1000,
            target="-",
            ok=None,
            samples=[s * 1000 for s in samples],
            extra={"cores_used": cores},
            note=f"{pushes} pushes, watch mode; {note}; daemon and agents used "
            f"{median(cores):.2f} cores from push to flip (compare P2, addressed endpoints)",
        ),
        Row(
            id="P11-cpu",
            measure=f"daemon CPU at rest with {count} dial-out agents connected",
            unit="% of a core",
            median=idle_cores * 100,
            target="-",
            ok=None,
            samples=[idle_cores * 100],  # one window: a figure over the whole idle period
            note=f"over {idle_s} s after the first rollout: WebSocket pings every 20 s and "
            f"one held inventory request per agent renewed every 30 s; {note}",
        ),
        Row(
            id="P11-rss",
            measure=f"daemon RSS with {count} dial-out agents connected",
            unit="MiB",
            median=rss,
            target="-",
            ok=None,
            samples=[rss],
            note=f"VmRSS at the end of the idle window; {note}",
        ),
    ]
