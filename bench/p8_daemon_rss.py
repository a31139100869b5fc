"""P8: resident memory of `gitopsd run` once started on 2,000 functions and 500 nodes.

The daemon process (watch, webhook and metrics on, as deployed) starts against the fleet
of bench/bigfleet.py; "started" is the end of its first reconcile pass, which loaded the
commit (every manifest and module), read all 500 inventories and diffed them. VmRSS is
read from /proc one second later. Each run is a new process. Baseline: the same daemon on
a repository with no nodes and no functions.

Rows of issue 21: the empty repository on its own (goal 60 MiB), and 10,000 functions on
5,000 nodes (goal 300 MiB) against the simulated fleet of bench/inventory_fleet.py (one
process answering on 5,000 ports with the agent's real inventory API and held requests,
no WASM; a million function-node pairs). Each row is measured again with the PostgreSQL
store (issue 16): a `[state] url` of a new database on a local server (bench/pgserver.py),
the daemon alone, so leading; baseline: the SQLite row of the same run. Sizes: `--param
P8.functions=N`, `P8.nodes=N` (old row), `P8.sim_functions=N`, `P8.sim_nodes=N`, `P8.reps=N`.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import inventory_fleet
from bench.bigfleet import shared
from bench.harness import Context, Row, median
from bench.pgserver import PgServer, running_pg_server
from bench.support import DaemonProcess, GitRemote, pg_state, rss_mib, wait_for


def started_rss(
    root: Path, remote: GitRemote, token_file: Path, pg: PgServer | None = None
) -> float:
    """VmRSS of a daemon 1 s after its first pass; with `pg`, on a new database of it."""
    state = pg_state(pg, root) if pg is not None else ""
    with DaemonProcess(root, remote, token_file, state=state) as daemon:
        daemon.start(timeout=300)
        wait_for(lambda: daemon.metric("gitopsd_reconcile_total") >= 1, 600, "the first pass", 0.2)
        if pg is not None and daemon.metric("gitopsd_leader") != 1:
            raise RuntimeError("the daemon on PostgreSQL does not lead: its pass did nothing")
        if daemon.metric("gitopsd_agent_request_errors_total"):
            raise RuntimeError("agents did not answer the daemon")
        time.sleep(1.0)
        assert daemon.proc is not None
        return rss_mib(daemon.proc.pid)


def run(ctx: Context) -> list[Row]:
    functions = ctx.size("functions", 200 if ctx.quick else 2000)
    nodes = ctx.size("nodes", 50 if ctx.quick else 500)
    sim_functions = ctx.size("sim_functions", 200 if ctx.quick else 10000)
    sim_nodes = ctx.size("sim_nodes", 100 if ctx.quick else 5000)
    reps = ctx.reps(3, 1)
    with running_pg_server() as pg:
        return _run(ctx, functions, nodes, sim_functions, sim_nodes, reps, pg)


def _run(
    ctx: Context,
    functions: int,
    nodes: int,
    sim_functions: int,
    sim_nodes: int,
    reps: int,
    pg: PgServer,
) -> list[Row]:
    fleet = shared(ctx.work, functions, nodes)
    empty = GitRemote(ctx.work / "empty")
    empty.write("README.md", "no manifests yet\n")
    empty.commit("empty")
    empty.push()
    samples: list[float] = []
    on_pg: list[float] = []
    with fleet.agents as agents:
        agents.start(timeout=900)
        for i in range(reps):
            samples.append(started_rss(ctx.work / f"d{i}", fleet.remote, agents.token_file))
            ctx.log(f"P8 daemon RSS {samples[-1]:.0f} MiB")
            on_pg.append(started_rss(ctx.work / f"d{i}-pg", fleet.remote, agents.token_file, pg))
            ctx.log(f"P8 daemon RSS, PostgreSQL store: {on_pg[-1]:.0f} MiB")
    base = [started_rss(ctx.work / f"e{i}", empty, fleet.agents.token_file) for i in range(reps)]
    base_pg = [
        started_rss(ctx.work / f"e{i}-pg", empty, fleet.agents.token_file, pg) for i in range(reps)
    ]
    sim = inventory_fleet.shared(ctx.work, sim_functions, sim_nodes)
    big: list[float] = []
    big_pg: list[float] = []
    with sim:
        sim.start()
        for i in range(reps):
            big.append(started_rss(ctx.work / f"s{i}", sim.remote, sim.token_file))
            ctx.log(f"P8 daemon RSS, {sim_functions} x {sim_nodes} simulated: {big[-1]:.0f} MiB")
            big_pg.append(started_rss(ctx.work / f"s{i}-pg", sim.remote, sim.token_file, pg))
            ctx.log(f"P8 daemon RSS, simulated, PostgreSQL store: {big_pg[-1]:.0f} MiB")
    m = median(samples)
    note = "gitopsd run (watch, webhook, metrics); VmRSS 1 s after the first pass"
    pairs = sim_functions * sim_nodes // sim.regions
    rows = [
        Row(
            id="P8",
            measure=f"daemon RSS after start, {functions} fn x {nodes} nodes",
            unit="MiB",
            median=m,
            baseline=median(base),
            baseline_measure="daemon RSS after start, repository without nodes or functions",
            target="-",
            was="<= 150 MiB",
            ok=m <= 150,
            samples=samples,
            baseline_samples=base,
            note=note,
        ),
        Row(
            id="P8",
            measure="daemon RSS after start, empty repository",
            unit="MiB",
            median=median(base),
            target="<= 60 MiB",
            ok=median(base) <= 60,
            samples=base,
            note=note + "; a repository with no nodes and no functions",
        ),
        Row(
            id="P8",
            measure=f"daemon RSS after start, {sim_functions} fn x {sim_nodes} nodes",
            unit="MiB",
            median=median(big),
            baseline=median(base),
            baseline_measure="daemon RSS after start, repository without nodes or functions",
            target="<= 300 MiB",
            ok=median(big) <= 300,
            samples=big,
            baseline_samples=base,
            note=note + f"; {sim_nodes} SIMULATED endpoints (bench/inventory_fleet.py: one "
            "process, the agent's real inventory API with ETags and held requests, no WASM), "
            f"{pairs:,} function-node pairs",
        ),
    ]
    return [
        *rows,
        *(on_postgres(row, got) for row, got in zip(rows, (on_pg, base_pg, big_pg), strict=True)),
    ]


def on_postgres(row: Row, samples: list[float]) -> Row:
    """`row` measured with the PostgreSQL store; its baseline is `row` (SQLite)."""
    goal = row.target if row.target != "-" else row.was
    limit = float(goal.split()[1])  # "<= 150 MiB"
    return Row(
        id="P8",
        measure=f"{row.measure}, PostgreSQL store",
        unit="MiB",
        median=median(samples),
        baseline=row.median,
        baseline_measure="the same daemon with the SQLite store (same run)",
        target=row.target,
        was=row.was,
        ok=median(samples) <= limit,
        samples=samples,
        baseline_samples=row.samples,
        note=f"{row.note}; [state] url of a local PostgreSQL (bench/pgserver.py), the daemon "
        "leading its lease",
    )
