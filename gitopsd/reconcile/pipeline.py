"""The reconcile pass, written once: an ordered list of steps with one signature.

    load (+ verify, fast-forward) → live state → unchanged? → diff → drift → pending note
    → resume → start rollouts → prune → retire → report

Each step takes the pass (`Pass`: what the pass knows so far and the ports of its caller)
and returns NEXT or STOP, or raises a typed error (gitopsd/errors.py) that carries its
reason. `gitopsd sync`, the Python API (`GitOpsSynchronizer.sync`) and the daemon all run
`STEPS`; they differ only in the ports they pass (`PassPorts`): a one-shot pass (sync, API)
loads the branch, waits for each rollout and publishes its notes at once; the daemon's
continuous pass keeps its last good desired state, runs rollouts as tasks and queues notes.

`Pass.acts_for(function)` is the one place where the daemon's leader check applies: a
function it is false for is neither resumed, started, pruned nor retired by this process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING

from gitopsd.clock import Clock
from gitopsd.diff import Action, Change, ChangeSet, diff
from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.live import LiveState
from gitopsd.function_state import FunctionState
from gitopsd.log import get_logger
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.notify.dispatcher import NotificationDispatcher
from gitopsd.notify.wiring import observe_drift, observe_results
from gitopsd.reconcile import policy
from gitopsd.reconcile.keys import retry_key, waiting_key
from gitopsd.reconcile.outcomes import (
    REFUSALS,
    Publish,
    finished_report,
    refusal_outcome,
    report_outcome,
    started_outcome,
    starting,
)
from gitopsd.reconcile.results import FunctionResult, SyncReport
from gitopsd.reconcile.summary import ended_paused, summarize_rollout
from gitopsd.rollout.engine import Engine
from gitopsd.rollout.hold import hold_reason
from gitopsd.source.git import SourceSpec
from gitopsd.store.protocol import Store

if TYPE_CHECKING:
    from gitopsd.reconcile.reconciler import Reconciler


class Flow(Enum):
    """What a step tells the pass: go on with the next step, or end here."""

    NEXT = "next"
    STOP = "stop"


def everyone(_function: str) -> bool:
    """`acts_for` of a process that acts for every function (no HA, or one leader)."""
    return True


def nothing_running() -> Collection[str]:
    return ()


def never_unchanged(_p: Pass) -> bool:
    return False


def show_nothing(_changes: ChangeSet) -> None:
    return None


def no_window(_fn: DesiredFunction) -> str:
    return ""


@dataclass(frozen=True)
class PassPorts:
    """What differs between the callers of the pass (sync and the API; the daemon)."""

    publish: Publish
    # Desired state of the source's head, verified and fast-forward-checked; raises a
    # Refusal (outcomes.py) for a commit that must not be applied. None: none known yet.
    load: Callable[[Pass], Awaitable[DesiredState | None]]
    read_live: Callable[[Pass], Awaitable[LiveState]]
    # Resumes rollouts a previous pass or process left unfinished; returns those that ended.
    resume: Callable[[Pass], Awaitable[list[FunctionResult]]]
    # Starts (or runs) the rollout of a change; returns its result when it ended already.
    start: Callable[[Pass, DesiredFunction, Change], Awaitable[FunctionResult | None]]
    running: Callable[[], Collection[str]] = nothing_running  # functions whose rollout runs
    # A continuous pass's gate: why `function` is outside its deploy windows now ("" when it
    # is not); a one-shot pass leaves windows to Reconciler.rollout_function.
    window_closed: Callable[[DesiredFunction], str] = no_window
    unchanged: Callable[[Pass], bool] = never_unchanged  # nothing moved since the last pass
    show_changes: Callable[[ChangeSet], None] = show_nothing


@dataclass
class Pass:
    """The context of one pass: its caller's ports and settings, and what steps found."""

    rec: Reconciler
    source: SourceSpec | None  # None: the pass is given its diff (Reconciler.apply)
    client: AgentClient
    engine: Engine
    ports: PassPorts
    notes: NotificationDispatcher
    # A continuous pass (the daemon) keeps the last good desired state in force when the
    # head is refused, and gates each start on the loop's rules (may_start: selfHeal,
    # policy.restart_blocker, deploy-window wake-ups); a one-shot pass is an operator's
    # request and rolls out what differs.
    continuous: bool = False
    acts_for: Callable[[str], bool] = everyone
    last_good: DesiredState | None = None
    desired: DesiredState | None = None
    live: LiveState | None = None
    changes: ChangeSet | None = None
    results: list[FunctionResult] = field(default_factory=list)
    decided: set[tuple[str, str]] = field(default_factory=set)  # (function, version)
    states: dict[str, FunctionState] = field(default_factory=dict)  # this pass's, dependsOn
    unchanged: bool = False

    @property
    def store(self) -> Store:
        return self.rec.store

    @property
    def clock(self) -> Clock:
        return self.rec.clock

    def report(self) -> SyncReport:
        """What the pass did (its changes: none when it stopped before the diff)."""
        assert self.desired is not None
        changes = self.changes or ChangeSet(self.desired.commit, (), ())
        return SyncReport(self.desired.commit, changes, tuple(self.results))


Step = Callable[[Pass], Awaitable[Flow]]


# the steps -------------------------------------------------------------------------------


async def load_desired(p: Pass) -> Flow:
    """The head's desired state. A refused commit gets its failure note; a one-shot pass
    then raises the refusal, a continuous one goes on with its last good desired state."""
    try:
        p.desired = await p.ports.load(p)
    except REFUSALS as exc:
        await p.ports.publish(refusal_outcome(exc))
        if not p.continuous:
            raise
        p.desired = p.last_good
    return Flow.NEXT if p.desired is not None else Flow.STOP


async def read_live(p: Pass) -> Flow:
    """What the agents of the desired state's nodes run."""
    p.live = await p.ports.read_live(p)
    return Flow.NEXT


async def skip_unchanged(p: Pass) -> Flow:
    """Nothing moved since the last pass (same commit, inventories, controls): only due
    retirements are carried out."""
    if not p.ports.unchanged(p):
        return Flow.NEXT
    p.unchanged = True
    await retire_due(p)
    return Flow.STOP


async def diff_desired_live(p: Pass) -> Flow:
    assert p.desired is not None and p.live is not None
    p.changes = diff(p.desired, p.live)
    p.ports.show_changes(p.changes)
    return Flow.NEXT


async def notice_drift(p: Pass) -> Flow:
    """Tell the notification sinks of drift (and of drift that healed) of the functions this
    process acts for: with shards, each leader tells of its own, so none is told thrice."""
    assert p.desired is not None and p.changes is not None
    desired, changes = p.desired, p.changes
    if p.acts_for is not everyone:
        desired = replace(
            desired, functions={n: f for n, f in desired.functions.items() if p.acts_for(n)}
        )
        changes = replace(
            changes, changes=tuple(c for c in changes.changes if p.acts_for(c.function))
        )
    observe_drift(p.notes, p.store, desired, changes)
    return Flow.NEXT


async def announce_pending(p: Pass) -> Flow:
    """A one-shot pass marks the commit "pending" while its rollouts run; a continuous pass
    announces each rollout as it starts it (start_rollouts)."""
    assert p.desired is not None and p.changes is not None
    if p.continuous:
        return Flow.NEXT
    names = starting(p.desired, p.changes, lambda fn: held(p, fn))
    pending = started_outcome(p.desired.commit, [fn for fn in names if p.acts_for(fn.name)])
    if pending is not None:
        await p.ports.publish(pending)
    return Flow.NEXT


async def resume_rollouts(p: Pass) -> Flow:
    """Rollouts left unfinished (a crash, a restart, an approval) continue first."""
    resumed = await p.ports.resume(p)
    p.results.extend(resumed)
    # A resumed rollout that just ended decided its version's fate in this pass; going
    # again would expose a version that was just rolled back to users a second time.
    p.decided |= {(r.function, r.version) for r in resumed}
    if resumed:
        assert p.desired is not None
        p.live = await p.ports.read_live(p)
        p.changes = diff(p.desired, p.live)
    return Flow.NEXT


async def start_rollouts(p: Pass) -> Flow:
    """Roll out every change not held back by policy, each after what it dependsOn."""
    assert p.desired is not None and p.changes is not None
    desired = p.desired
    by_name = {c.function: c for c in p.changes.changes}
    running = p.ports.running()
    names = [
        c.function
        for c in p.changes.changes
        if c.action is not Action.PRUNE
        and c.function not in running
        and p.acts_for(c.function)
        and (c.function, desired.functions[c.function].spec.version) not in p.decided
    ]
    for name in policy.dependency_order(desired, names):
        fn, change = desired.functions[name], by_name[name]
        if p.continuous and not may_start(p, fn, change):
            continue
        result = await p.ports.start(p, fn, change)
        if result is not None:
            p.results.append(result)
            p.states[name] = result.state
    return Flow.NEXT


async def prune_removed(p: Pass) -> Flow:
    """Undeploy what left Git."""
    assert p.desired is not None and p.changes is not None
    p.results.extend(await p.rec.prune_all(p.client, p.desired, p.changes, p.acts_for))
    return Flow.NEXT


async def retire_due(p: Pass) -> Flow:
    """Unload blue versions whose retention ended."""
    await p.rec.retire_due(p.client, p.acts_for)
    return Flow.NEXT


async def report(p: Pass) -> Flow:
    """The commit's note of what the pass finished, and its last applied commit. A
    continuous pass finished only its prunes here: each rollout reports when it ends."""
    assert p.desired is not None and p.changes is not None
    commit = p.desired.commit
    if p.continuous:
        if p.results:
            await report_outcome(p.store, p.ports.publish, finished_report(commit, p.results))
        return Flow.NEXT
    observe_results(p.notes, p.results, commit)
    await report_outcome(p.store, p.ports.publish, p.report())
    return Flow.NEXT


STEPS: tuple[Step, ...] = (
    load_desired,
    read_live,
    skip_unchanged,
    diff_desired_live,
    notice_drift,
    announce_pending,
    resume_rollouts,
    start_rollouts,
    prune_removed,
    retire_due,
    report,
)
"""The pass."""

APPLY_STEPS: tuple[Step, ...] = STEPS[STEPS.index(resume_rollouts) : STEPS.index(report)]
"""What `Reconciler.apply` does with a diff it is given: resume → start → prune → retire."""


async def run_steps(p: Pass, steps: Sequence[Step] = STEPS) -> Pass:
    """Run `steps` in order until one says STOP (or raises)."""
    for step in steps:
        if await step(p) is Flow.STOP:
            break
    return p


# decisions the steps take (facts gathered here, verdicts from policy.py) -----------------


def held(p: Pass, fn: DesiredFunction) -> str:
    """Why an operator's hold keeps `fn` back ("" when none); lifts a hold Git moved past."""
    return hold_reason(p.store, fn.name, fn.spec.version, fn.module.sha256, p.clock.now())


def may_start(p: Pass, fn: DesiredFunction, change: Change) -> bool:
    """A continuous pass's gate before it starts a rollout task: drift left alone without
    selfHeal; a hold, a rollout of this version that waits, is paused or stalled at this
    commit; only unreachable nodes differing; a closed deploy window. The reason is kept
    for `gitopsd status`."""
    assert p.desired is not None
    log = get_logger(component="reconcile", function=fn.name)
    version, sha256 = fn.spec.version, fn.module.sha256
    history = p.store.rollouts(fn.name, limit=5)
    if policy.leaves_drift(policy.is_drift(history, version, sha256), fn.spec.self_heal):
        log.warning("drift reported, not corrected (selfHeal: false)", detail=change.reason)
        return False
    last = history[0] if history else None
    why_not = (
        held(p, fn)
        or policy.restart_blocker(
            fn.name,
            version,
            sha256,
            p.desired.commit,
            last,
            p.store.get(retry_key(fn.name)),
            last is not None and ended_paused(p.store, last),
        )
        or (policy.waiting_for(change) if change.only_unreachable else "")
        or p.ports.window_closed(fn)
    )
    if why_not:
        log.debug("not starting a rollout", reason=why_not)
        p.store.put(waiting_key(fn.name), why_not)
        return False
    return True


# the ports of a one-shot pass (`gitopsd sync`, the Python API) --------------------------


async def load_head(p: Pass) -> DesiredState:
    """The head of the source, verified, then checked to descend from the last applied
    commit (a refusal is kept for `gitopsd status`)."""
    assert p.source is not None
    _snapshot, desired = p.rec.load(p.source)
    p.rec.check_fast_forward(p.source, desired.commit)
    return desired


async def read_fleet(p: Pass) -> LiveState:
    assert p.desired is not None
    addresses = {n: node.address for n, node in p.desired.nodes.items()}
    p.client.addresses = addresses
    return await p.client.live_state(addresses)


async def resume_and_wait(p: Pass) -> list[FunctionResult]:
    """Every unfinished rollout not waiting for an operator (approval, resume), run to its
    end."""
    resumed = []
    for row in p.store.active_rollouts():
        if row.state in policy.WAITS_FOR_OPERATOR or not p.acts_for(row.function):
            continue
        get_logger(rollout=row.id).info("resuming rollout", state=row.state)
        resumed.append(summarize_rollout(p.store, await p.engine.run(row.id)))
    return resumed


async def run_to_end(p: Pass, fn: DesiredFunction, change: Change) -> FunctionResult:
    assert p.desired is not None and p.live is not None
    return await p.rec.rollout_function(p.engine, fn, p.desired, p.live, change, p.states)


def one_shot_ports(
    publish: Publish, show_changes: Callable[[ChangeSet], None] | None = None
) -> PassPorts:
    """The ports of `gitopsd sync` and the Python API: the head is loaded and checked, each
    rollout runs to its end, notes are published before the pass goes on."""
    return PassPorts(
        publish=publish,
        load=load_head,
        read_live=read_fleet,
        resume=resume_and_wait,
        start=run_to_end,
        show_changes=show_changes or show_nothing,
    )
