"""P3: CPU time of one no-op reconcile pass with 2,000 functions on 500 nodes.

The daemon's own `Daemon.reconcile_pass` runs in this process, against the real Git
repository and 500 real agent endpoints in another process (bench/bigfleet.py), with its
fleet client made by `Daemon.open_client` as `Daemon.run` does: it holds one inventory
request per agent (fleet/watch.py), so an unchanged pass asks no agent anything. The first
pass loads the commit and every inventory and finds nothing to do; each measured pass then
has the same commit and the same inventories. CPU time is `time.process_time()` of this
process around one pass (every thread of the daemon; the agents' CPU is theirs).
Baseline: the same pass of a daemon whose repository has no nodes and no functions.

Also reported, so that the held requests are not free by assumption: the CPU of the idle
daemon over one whole watch period (every agent answers its held request 304 once and it
is sent again), and the pass of a client without watches (one conditional GET per agent).

The row of issue 21, 10,000 functions x 5,000 nodes, runs the same passes against the
simulated fleet of bench/inventory_fleet.py: one process answering on 5,000 ports with the
agent's real inventory API (ETags, held requests), no WASM; 50 regions of 100 nodes, so a
million function-node pairs.

Both rows are measured again with the PostgreSQL store (issue 16): the same passes, in the
same run, by a daemon holding the lease of a database on a local server (bench/pgserver.py,
Debian's PostgreSQL); their baseline is the SQLite row. Sizes: `--param P3.functions=N`,
`P3.nodes=N` (the old row), `P3.sim_functions=N`, `P3.sim_nodes=N` (the new one),
`P3.reps=N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from pathlib import Path

from bench import inventory_fleet
from bench.bigfleet import shared
from bench.harness import Context, Row, median
from bench.pgserver import PgServer, running_pg_server
from bench.support import GitRemote, pg_state


def config(root: Path, remote: GitRemote, token_file: Path, state: str = "") -> Path:
    """`state`: more `[state]` lines (bench.support.pg_state's: the PostgreSQL store)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "gitopsd.toml"
    path.write_text(
        f'[source]\nurl = "{remote.bare}"\nbranch = "main"\ninterval = "PT1H"\nwatch = false\n'
        "allow_empty = true\n"
        f'[fleet]\ntoken_file = "{token_file}"\n'
        'token_mode = "shared"\n'  # `agent --count N`: one token for every endpoint
        f'[state]\ndir = "{root / "state"}"\n{state}'
    )
    return path


async def passes(
    config_path: Path, reps: int, watch: bool = True, idle: bool = False
) -> tuple[list[float], list[float], dict[str, float]]:
    """(CPU seconds, wall seconds) of `reps` passes after a first (loading) one."""
    from gitopsd.daemon.service import INVENTORY_WATCH_S, Daemon
    from gitopsd.rollout.engine import Engine

    daemon = Daemon(config_path)
    cpu: list[float] = []
    wall: list[float] = []
    idle_ms = -1.0
    opened = daemon.open_client() if watch else daemon.reconciler.client({})
    async with opened as client, contextlib.AsyncExitStack() as leases:
        # On PostgreSQL the daemon acts only while it holds the lease (renewed meanwhile in
        # the background, as in `gitopsd run`); on SQLite this does nothing.
        await daemon.control.start(leases)
        if not daemon.control.leads_any():
            raise RuntimeError("the daemon does not lead: its passes would do nothing")
        daemon.client = client
        daemon.engine = Engine(daemon.store, client, daemon.clock)
        await daemon.reconcile_pass(["start"])
        await daemon.reconcile_pass(["settle"])
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(reps):
            c0, w0 = time.process_time(), time.perf_counter()
            await daemon.reconcile_pass(["bench"])
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if idle:
            c0 = time.process_time()
            await asyncio.sleep(INVENTORY_WATCH_S + 1)
            idle_ms = (time.process_time() - c0) * 1000
            held = len(client.watch.held)
    state = daemon.pass_state
    if state.last_error or state.rollouts or daemon.store.rollouts(limit=1):
        raise RuntimeError(f"the passes were not no-ops: {state.last_error or 'rollouts started'}")
    desired = state.desired
    info = {
        "functions": len(desired.functions) if desired else 0,
        "nodes": len(desired.nodes) if desired else 0,
        "agent_requests_failed": client.request_errors,
        # Kernel time is mostly loopback TCP: a send on 127.0.0.1 runs the receiving side's
        # network stack too, and the kernel splits user/system time by sampling (a share).
        "user_ms_mean": (r1.ru_utime - r0.ru_utime) * 1000 / reps,
        "system_ms_mean": (r1.ru_stime - r0.ru_stime) * 1000 / reps,
    }
    if idle:
        info["idle_cpu_ms_per_watch_period"] = idle_ms
        info["watch_period_s"] = INVENTORY_WATCH_S
        info["held_requests_after_idle"] = held
    return cpu, wall, info


def simulated(ctx: Context, reps: int, base_cpu: list[float], pg: PgServer) -> list[Row]:
    """The 10,000 x 5,000 row against the simulated inventory-only fleet, and the same
    passes with the PostgreSQL store."""
    functions = ctx.size("sim_functions", 200 if ctx.quick else 10000)
    nodes = ctx.size("sim_nodes", 100 if ctx.quick else 5000)
    t0 = time.monotonic()
    sim = inventory_fleet.shared(ctx.work, functions, nodes)
    ctx.log(f"P3 simulated fleet {functions} x {nodes} written in {time.monotonic() - t0:.0f}s")
    with sim:
        sim.start()
        t0 = time.monotonic()
        cpu, wall, info = asyncio.run(
            passes(config(ctx.work / "sim", sim.remote, sim.token_file), reps)
        )
        ctx.log(f"P3 simulated: passes done in {time.monotonic() - t0:.0f}s")
        state = pg_state(pg, ctx.work / "sim-pg")
        pg_cpu, pg_wall, pg_info = asyncio.run(
            passes(config(ctx.work / "sim-pg", sim.remote, sim.token_file, state), reps)
        )
    for got in (info, pg_info):
        if got["functions"] != functions or got["nodes"] != nodes or got["agent_requests_failed"]:
            raise RuntimeError(f"unexpected pass state {got}")
    m = median(cpu) * 1000
    pairs = functions * nodes // sim.regions
    sqlite_row = Row(
        id="P3",
        measure=f"no-op reconcile CPU, {functions} fn x {nodes} nodes",
        unit="ms",
        median=m,
        baseline=median(base_cpu) * 1000,
        baseline_measure="no-op reconcile CPU, repository without nodes or functions",
        target="<= 20 ms",
        ok=m <= 20,
        samples=[c * 1000 for c in cpu],
        baseline_samples=[c * 1000 for c in base_cpu],
        extra={"wall_ms_median": median(wall) * 1000, "pairs": pairs, **info},
        note=f"Daemon.reconcile_pass in-process against {nodes} SIMULATED endpoints "
        "(bench/inventory_fleet.py: one process, the agent's real inventory API with ETags "
        f"and held requests, no WASM); {pairs:,} function-node pairs ({sim.regions} regions); "
        f"wall {median(wall) * 1000:.1f} ms; CPU split user {info['user_ms_mean']:.1f} ms, "
        f"system {info['system_ms_mean']:.1f} ms (mean)",
    )
    return [sqlite_row, postgres_row(sqlite_row, pg_cpu, pg_wall, pg_info)]


def postgres_row(
    sqlite_row: Row, cpu: list[float], wall: list[float], info: dict[str, float]
) -> Row:
    """The passes of `sqlite_row` with the PostgreSQL store; its baseline is that row."""
    m = median(cpu) * 1000
    return Row(
        id="P3",
        measure=f"{sqlite_row.measure}, PostgreSQL store",
        unit="ms",
        median=m,
        baseline=sqlite_row.median,
        baseline_measure="the same passes with the SQLite store (the row above, same run)",
        target=sqlite_row.target,
        was=sqlite_row.was,
        ok=m <= 20,
        samples=[c * 1000 for c in cpu],
        baseline_samples=sqlite_row.samples,
        extra={"wall_ms_median": median(wall) * 1000, **info},
        note="the same passes as the row above, the daemon leading its lease (renewed in the "
        "background: its CPU is counted) on a local PostgreSQL (Debian's server, started by "
        f"bench/pgserver.py, fsync off); wall {median(wall) * 1000:.1f} ms; CPU split user "
        f"{info['user_ms_mean']:.1f} ms, system {info['system_ms_mean']:.1f} ms (mean)",
    )


def run(ctx: Context) -> list[Row]:
    functions = ctx.size("functions", 200 if ctx.quick else 2000)
    nodes = ctx.size("nodes", 50 if ctx.quick else 500)
    reps = ctx.reps(30, 5)
    with running_pg_server() as pg:
        return _run(ctx, functions, nodes, reps, pg)


def _run(ctx: Context, functions: int, nodes: int, reps: int, pg: PgServer) -> list[Row]:
    fleet = shared(ctx.work, functions, nodes)
    empty = GitRemote(ctx.work / "empty")
    empty.write("README.md", "no manifests yet\n")
    empty.commit("empty")
    empty.push()
    with fleet.agents as agents:
        t0 = time.monotonic()
        agents.start(timeout=900)
        ctx.log(
            f"P3 {nodes} endpoints restored {functions} functions in {time.monotonic() - t0:.0f}s"
        )
        cpu, wall, info = asyncio.run(
            passes(
                config(ctx.work / "d", fleet.remote, agents.token_file), reps, idle=not ctx.quick
            )
        )
        probe_cpu, _, _ = asyncio.run(
            passes(config(ctx.work / "p", fleet.remote, agents.token_file), reps, watch=False)
        )
        info["without_watches_cpu_ms"] = median(probe_cpu) * 1000
        state = pg_state(pg, ctx.work / "d-pg")
        pg_cpu, pg_wall, pg_info = asyncio.run(
            passes(config(ctx.work / "d-pg", fleet.remote, agents.token_file, state), reps)
        )
    base_cpu, _base_wall, _ = asyncio.run(
        passes(config(ctx.work / "e", empty, fleet.agents.token_file), reps)
    )
    for got in (info, pg_info):
        if got["functions"] != functions or got["nodes"] != nodes or got["agent_requests_failed"]:
            raise RuntimeError(f"unexpected pass state {got}")
    m = median(cpu) * 1000
    sqlite_row = Row(
        id="P3",
        measure=f"no-op reconcile CPU, {functions} fn x {nodes} nodes",
        unit="ms",
        median=m,
        baseline=median(base_cpu) * 1000,
        baseline_measure="no-op reconcile CPU, repository without nodes or functions",
        target="-",
        was="<= 20 ms",
        ok=m <= 20,
        samples=[c * 1000 for c in cpu],
        baseline_samples=[c * 1000 for c in base_cpu],
        extra={"wall_ms_median": median(wall) * 1000, **info},
        note=f"Daemon.reconcile_pass in-process, {nodes} endpoints in one agent process; "
        f"wall {median(wall) * 1000:.1f} ms; CPU split user {info['user_ms_mean']:.1f} ms, "
        f"system {info['system_ms_mean']:.1f} ms (mean); without held inventory requests "
        f"{info['without_watches_cpu_ms']:.1f} ms{_idle_note(info)}",
    )
    return [
        sqlite_row,
        postgres_row(sqlite_row, pg_cpu, pg_wall, pg_info),
        *simulated(ctx, reps, base_cpu, pg),
    ]


def _idle_note(info: dict[str, float]) -> str:
    if "idle_cpu_ms_per_watch_period" not in info:
        return ""  # --quick does not wait a whole watch period
    return (
        f"; idle daemon {info['idle_cpu_ms_per_watch_period']:.0f} ms CPU per "
        f"{info['watch_period_s']:.0f} s watch period"
    )
