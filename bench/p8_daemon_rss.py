"""P8: resident memory of `gitopsd run` once started on 2,000 functions and 500 nodes.

The daemon process (watch, webhook and metrics on, as deployed) starts against the fleet
of bench/bigfleet.py; "started" is the end of its first reconcile pass, which loaded the
commit (every manifest and module), read all 500 inventories and diffed them. VmRSS is
read from /proc one second later. Each run is a new process. Baseline: the same daemon on
a repository with no nodes and no functions.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.bigfleet import shared
from bench.harness import Context, Row, median
from bench.support import DaemonProcess, GitRemote, rss_mib, wait_for


def started_rss(root: Path, remote: GitRemote, token_file: Path) -> float:
    with DaemonProcess(root, remote, token_file) as daemon:
        daemon.start(timeout=300)
        wait_for(lambda: daemon.metric("gitopsd_reconcile_total") >= 1, 600, "the first pass", 0.2)
        if daemon.metric("gitopsd_agent_request_errors_total"):
            raise RuntimeError("agents did not answer the daemon")
        time.sleep(1.0)
        assert daemon.proc is not None
        return rss_mib(daemon.proc.pid)


def run(ctx: Context) -> list[Row]:
    functions, nodes = (200, 50) if ctx.quick else (2000, 500)
    reps = ctx.reps(3, 1)
    fleet = shared(ctx.work, functions, nodes)
    empty = GitRemote(ctx.work / "empty")
    empty.write("README.md", "no manifests yet\n")
    empty.commit("empty")
    empty.push()
    samples: list[float] = []
    with fleet.agents as agents:
        agents.start(timeout=900)
        for i in range(reps):
            samples.append(started_rss(ctx.work / f"d{i}", fleet.remote, agents.token_file))
            ctx.log(f"P8 daemon RSS {samples[-1]:.0f} MiB")
    base = [started_rss(ctx.work / f"e{i}", empty, fleet.agents.token_file) for i in range(reps)]
    m = median(samples)
    return [
        Row(
            id="P8",
            measure=f"daemon RSS after start, {functions} fn x {nodes} nodes",
            unit="MiB",
            median=m,
            baseline=median(base),
            baseline_measure="daemon RSS after start, repository without nodes or functions",
            target="<= 150 MiB",
            ok=m <= 150,
            samples=samples,
            baseline_samples=base,
            note="gitopsd run (watch, webhook, metrics); VmRSS 1 s after the first pass",
        )
    ]
