"""P10: failover mid-canary, from SIGKILL of the leader to the standby's first step.

Two `gitopsd run` processes (watch, webhook, metrics on, as deployed) share one database on
a local PostgreSQL server (Debian's, started by bench/pgserver.py as an unprivileged user
when root) with the default `[ha] lease` (PT5S), over three agent endpoints in one
`gitopsd agent --count 3` process. Each run pushes a new version of `hello` with a canary
strategy (stages 34 and 100, evaluationPeriod PT1S) and tells the leader with a signed
webhook; once the canary's wait is journaled, 0.3 s into it, the leader gets SIGKILL. The
figure is the time from the kill to the first journal write of that rollout after it (the
resumed wait's end, or a step begun): the standby's first step. Journal times are the
daemons' wall clocks, on this machine. The wait's deadline falls before the lease can have
passed, so the figure is the takeover plus the resume, not the wait.

Each run also checks what the failover tests check: the rollout completes, the wait row is
the one the old leader began (finished by the standby, not begun again) and no step is
journaled twice. The killed process is then started again as the new standby; the next run
kills the other one. Baseline: the configured lease. Goal (issue 16): lease + 1 s.
Sizes: `--param P10.reps=N`, `P10.lease_s=N` (whole seconds, at least 1).
"""

from __future__ import annotations

import json
import signal
import time

from bench.harness import Context, Row, median
from bench.pgserver import running_pg_server
from bench.support import (
    AgentFleet,
    DaemonProcess,
    GitRemote,
    function_manifest,
    handler_wasm,
    nodes_manifest,
    pg_state,
    wait_for,
)
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.rows import JournalRow, RolloutRow

FUNCTION = "hello"
CANARY = "{type: canary, stages: [34, 100], evaluationPeriod: PT1S}"
INTO_WAIT_S = 0.3


def push(remote: GitRemote, version: str, strategy: str) -> None:
    remote.write(f"functions/modules/{FUNCTION}.wasm", handler_wasm(f"{FUNCTION} {version}\n"))
    remote.write(
        f"functions/{FUNCTION}.yaml",
        function_manifest(FUNCTION, version, f"modules/{FUNCTION}.wasm", strategy=strategy),
    )
    remote.commit(f"{FUNCTION} {version}")
    remote.push()


class SharedState:
    """Reads of the daemons' database behind their backs."""

    def __init__(self, url: str) -> None:
        self.store = PostgresStore(pg_target(url))

    def rollout(self, version: str) -> RolloutRow | None:
        rows = [r for r in self.store.rollouts(FUNCTION) if r.version == version]
        return rows[0] if rows else None

    def journal(self, version: str) -> list[JournalRow]:
        row = self.rollout(version)
        return self.store.journal(row.id) if row is not None else []

    def open_wait(self, version: str) -> JournalRow | None:
        for entry in self.journal(version):
            if entry.step.get("kind") == "wait" and entry.outcome is None:
                return entry
        return None

    def completed(self, version: str) -> bool:
        row = self.rollout(version)
        if row is not None and row.state in ("ROLLED_BACK", "FAILED"):
            raise RuntimeError(f"{version}: the rollout ended {row.state}: {row.message}")
        return row is not None and row.state == "COMPLETED"


def leads(daemon: DaemonProcess) -> bool:
    try:
        return daemon.metric("gitopsd_leader") == 1
    except OSError:
        return False


def failover(
    remote: GitRemote,
    state: SharedState,
    leader: DaemonProcess,
    standby: DaemonProcess,
    version: str,
) -> tuple[float, float]:
    """(kill to the standby's first journal write, kill to its leader metric), seconds."""
    assert leader.proc is not None
    push(remote, version, CANARY)
    if leader.hook() not in (200, 202, 204):
        raise RuntimeError("the leader refused the push's webhook delivery")
    wait_for(lambda: state.open_wait(version) is not None, 120, f"{version}'s canary wait")
    wait = state.open_wait(version)
    assert wait is not None
    time.sleep(INTO_WAIT_S)
    leader.proc.send_signal(signal.SIGKILL)
    killed, killed_mono = time.time(), time.monotonic()
    leader.proc.wait(30)
    leader.proc = None
    wait_for(lambda: leads(standby), 120, "the standby to lead", step=0.01)
    took_lead = time.monotonic() - killed_mono

    def first_write() -> float | None:
        times = [
            t
            for j in state.journal(version)
            for t in (j.started_at, j.finished_at)
            if t is not None and t > killed
        ]
        return min(times) if times else None

    wait_for(lambda: first_write() is not None, 120, "the standby's first step", step=0.01)
    first = first_write()
    assert first is not None
    wait_for(lambda: state.completed(version), 120, f"{version} to complete")
    journal = state.journal(version)
    resumed = next(j for j in journal if j.seq == wait.seq)
    if resumed.started_at != wait.started_at or (resumed.finished_at or 0) <= killed:
        raise RuntimeError(f"{version}: the wait was not resumed by the standby: {resumed}")
    steps = [json.dumps(j.step, sort_keys=True) for j in journal]
    if len(steps) != len(set(steps)):
        raise RuntimeError(f"{version}: a step was journaled twice: {steps}")
    return first - killed, took_lead


def run(ctx: Context) -> list[Row]:
    reps = ctx.reps(5, 2)
    lease = ctx.size("lease_s", 5)  # the default [ha] lease
    with running_pg_server() as pg, AgentFleet(ctx.work / "agents", 3) as agents:
        agents.start()
        remote = GitRemote(ctx.work / "git")
        remote.write("nodes.yaml", nodes_manifest(agents.names, agents.base_port, ["r0"]))
        push(remote, "1.0.0", "{type: blue-green}")
        db = pg.create_database("p10")
        config = pg_state(pg, ctx.work / "pg", lease=f"PT{lease}S", db=db)
        state = SharedState(pg.url(db, with_password=True))
        a = DaemonProcess(ctx.work / "a", remote, agents.token_file, state=config)
        b = DaemonProcess(ctx.work / "b", remote, agents.token_file, state=config)
        try:
            a.start()
            wait_for(lambda: leads(a), 60, "the first daemon to lead")
            wait_for(lambda: state.completed("1.0.0"), 120, "the first sync")
            b.start()
            leader, standby = a, b
            samples: list[float] = []
            takeovers: list[float] = []
            for i in range(reps):
                first, took = failover(remote, state, leader, standby, f"{i + 2}.0.0")
                samples.append(first)
                takeovers.append(took)
                ctx.log(f"P10 run {i + 1}: first step {first:.2f} s after SIGKILL")
                leader.start()  # the killed one comes back as the standby
                leader, standby = standby, leader
        finally:
            a.stop()
            b.stop()
            state.store.close()
    m = median(samples)
    return [
        Row(
            id="P10",
            measure="failover: SIGKILL of the leader mid-canary to the standby's first step",
            unit="s",
            median=m,
            baseline=float(lease),
            baseline_measure="the configured [ha] lease",
            target=f"<= {lease + 1} s",
            ok=m <= lease + 1,
            samples=samples,
            extra={
                "lease_s": lease,
                "standby_leads_after_s": takeovers,
                "standby_leads_after_s_median": median(takeovers),
            },
            note=f"two gitopsd run on one local PostgreSQL, [ha] lease PT{lease}S, 3 agent "
            f"endpoints; canary killed {INTO_WAIT_S} s into its 1 s wait; kill to the first "
            "journal write of the rollout by the standby (its gitopsd_leader metric said 1 "
            f"after {median(takeovers):.2f} s, median)",
        )
    ]
