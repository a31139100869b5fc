"""P6: automatic blue-green rollback on 1,000 and 100 nodes: flip back to blue and unload green.

Each run rolls out a version whose handler traps (its health check passes): the engine
deploys it beside the old version on 100 endpoints, checks health, flips traffic; real
requests then hit every endpoint (and fail), the analysis sees the error rate over the
`autoRollback` trigger, and the strategy rolls back. The figure is the engine's Rollback
step: the time until every node's traffic is back on the old version (the flip, which is
what users feel), and the whole step including unloading the new version everywhere.

Rows: 1,000 nodes (issue 21, goal 300 ms) and 100 (the earlier target, kept as "was"), each
in an agent process of its own. Sizes: `--param P6.count=N`, `P6.was_count=N`, `P6.reps=N`.

Profiling (development runs): with GITOPSD_BENCH_PROFILE=DIR set, the engine's side of each
Rollback steps (this process) are profiled with cProfile into DIR/p6-<nodes>.prof (all runs
of that size; `python -m pstats` reads it); the figures of such a run carry its cost.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import urllib.error
import urllib.request

from bench.harness import Context, Row, median
from bench.rollouts import FUNCTION, Rollouts
from bench.support import CpuWindow

PROFILE_ENV = "GITOPSD_BENCH_PROFILE"


def traffic(rollouts: Rollouts, per_node: int = 3) -> None:
    """Real invocations on every endpoint (the trapping version answers 500)."""
    for i in range(rollouts.agents.count):
        for _ in range(per_node):
            req = urllib.request.Request(
                f"{rollouts.agents.url(i)}/fn/{FUNCTION}", data=b"", method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
            except urllib.error.HTTPError as exc:
                exc.read()


async def measure(
    ctx: Context, rollouts: Rollouts, runs: int
) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    first = await rollouts.rollout("1.0.0")
    assert first.state == "COMPLETED", first.state
    samples: list[float] = []
    flips: list[float] = []
    usage: list[tuple[float, float]] = []
    assert rollouts.agents.proc is not None
    # The engine runs in this process, the agents in theirs: both count.
    window = CpuWindow([rollouts.agents.proc.pid], include_self=True)
    profile_dir = os.environ.get(PROFILE_ENV)
    profiler = cProfile.Profile() if profile_dir else None
    for k in range(1, runs + 1):

        def after(kind: str) -> None:
            if kind == "traffic":
                traffic(rollouts)
            elif kind == "rollback":
                if profiler is not None:
                    profiler.disable()
                usage.append(window.stop())

        def before(kind: str) -> None:
            if kind == "rollback":
                window.start()
                if profiler is not None:
                    profiler.enable()

        got = await rollouts.rollout(f"2.0.{k}", trap=True, after_step=after, before_step=before)
        if got.state != "ROLLED_BACK":
            raise RuntimeError(f"the bad version ended {got.state}, not ROLLED_BACK")
        took = [s for kind, s in got.steps if kind == "rollback"]
        seqs = [seq for seq, kind in got.step_kinds.items() if kind == "rollback"]
        if len(took) != 1 or len(seqs) != 1:
            raise RuntimeError(f"expected one rollback step, saw {got.steps}")
        start = got.step_starts[seqs[0]]
        # The flip itself: the last node's `PUT .../traffic` (back to blue) answered.
        flipped = max(
            c.ended for c in got.calls if c.step == seqs[0] and c.path.endswith("/traffic")
        )
        samples.append(took[0])
        flips.append(flipped - start)
        ctx.log(
            f"P6 rollback step {took[0] * 1000:.0f} ms "
            f"(all nodes back on blue after {flips[-1] * 1000:.0f} ms)"
        )
    if profiler is not None and profile_dir:
        profiler.dump_stats(os.path.join(profile_dir, f"p6-{rollouts.agents.count}.prof"))
    return samples, flips, usage


def run(ctx: Context) -> list[Row]:
    old_count = ctx.size("was_count", 10 if ctx.quick else 100)
    count = ctx.size("count", 20 if ctx.quick else 1000)
    runs = ctx.reps(7, 2)
    rows: list[Row] = []
    for size, target, was in ((old_count, "-", "<= 300 ms"), (count, "<= 300 ms", "")):
        rollouts = Rollouts(ctx.work / f"n{size}", size)
        try:
            rollouts.start()
            samples, flips, usage = asyncio.run(measure(ctx, rollouts, runs))
        finally:
            rollouts.agents.stop()
        m = median(samples) * 1000
        note = (
            f"engine Rollback step after a failed analysis; {size} endpoints in one agent process"
        )
        flip = median(flips) * 1000
        cores = median([u[0] for u in usage])
        busy = median([u[1] for u in usage])
        note += (
            f"; during the step the engine and agent processes used {cores:.2f} of "
            f"{os.cpu_count()} cores, the machine was {busy:.0%} busy"
        )
        # The design's rollback is the flip back to blue (blue is still loaded); unloading
        # green afterwards is clean-up that users do not wait for, reported on its own line.
        rows += [
            Row(
                id="P6",
                measure=f"blue-green rollback on {size} nodes: traffic back on blue everywhere",
                unit="ms",
                median=flip,
                target=target,
                was=was,
                ok=flip <= 300,
                samples=[s * 1000 for s in flips],
                extra={"cores_used": cores, "machine_busy": busy},
                note=note + "; from the step's start to the last `PUT .../traffic` answered",
            ),
            Row(
                id="P6",
                measure="  whole Rollback step, green unloaded too",
                unit="ms",
                median=m,
                target="-",
                ok=None,
                samples=[s * 1000 for s in samples],
                note=note
                + "; flips first on every node, then unloads (gitopsd/rollout/executor.py)",
            ),
        ]
    return rows
