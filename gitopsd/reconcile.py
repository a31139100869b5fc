"""One reconcile pass: source → manifest → diff → rollouts → report, as small steps.

`Reconciler.read` answers "what would change" (used by `diff`); `Reconciler.apply` carries it
out (used by `sync` and the daemon). A bad commit is an outcome, not a crash: it gets a
failure note and nothing of it is applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from gitopsd.clock import Clock
from gitopsd.diff import Action, Change, ChangeSet, diff
from gitopsd.errors import AgentError, GitopsdError, InvalidManifests
from gitopsd.fleet.client import AgentClient, gather_nodes
from gitopsd.fleet.live import LiveFunction, LiveState
from gitopsd.fleet.tokens import FleetAuth
from gitopsd.log import get_logger
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.manifest.loader import load_snapshot
from gitopsd.report.notes import CommitOutcome, FunctionOutcome
from gitopsd.rollout.engine import Engine, EventSink
from gitopsd.rollout.hold import hold_reason
from gitopsd.rollout.judge import JudgeSettings
from gitopsd.rollout.spec import HealthSpec, RolloutSpec, TargetNode
from gitopsd.rollout.steps import RolloutState, outcome_from_json, step_from_json
from gitopsd.rollout.windows import WAITING_STATE, why_not_now
from gitopsd.source.ancestry import (
    ACCEPTED_HEAD_KEY,
    LAST_APPLIED_KEY,
    REFUSED_HEAD_KEY,
    NonFastForward,
    check_fast_forward,
)
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import take_snapshot
from gitopsd.source.snapshot import Snapshot
from gitopsd.store.protocol import Store
from gitopsd.store.rows import RolloutRow


@dataclass(frozen=True)
class ReadResult:
    """Desired and live state of one pass, and their diff."""

    snapshot: Snapshot
    desired: DesiredState
    live: LiveState
    changes: ChangeSet


@dataclass(frozen=True)
class FunctionResult:
    """What a pass did with one function."""

    function: str
    version: str
    action: str
    state: str  # a RolloutState, or PRUNED / PRUNE_FAILED / HELD / BLOCKED / DRAFT
    message: str
    strategy: str = ""
    nodes_ok: tuple[str, ...] = ()
    nodes_failed: tuple[str, ...] = ()
    failed_step: str | None = None
    rollout_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in (
            "COMPLETED",
            "PRUNED",
            "HELD",
            "DRAFT",
            "PAUSED_BY_OPERATOR",
            WAITING_STATE,  # outside its deploy windows: nothing failed, it starts later
        )

    @property
    def note_status(self) -> str:
        waiting = (
            "DRAFT",
            "IN_PROGRESS",
            "PENDING",
            "PAUSED_BY_OPERATOR",
            "WAITING_FOR_NODES",
            WAITING_STATE,
        )
        if self.state in waiting:
            return "pending"
        return "success" if self.ok else "failure"


@dataclass(frozen=True)
class SyncReport:
    """Everything one `apply` did."""

    commit: str
    changes: ChangeSet
    results: tuple[FunctionResult, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.results)

    def outcome(self) -> CommitOutcome:
        failed = [r for r in self.results if not r.ok]
        # Nodes that are down leave the commit unfinished, not failed: it completes once
        # they answer.
        waiting = all(r.state == "WAITING_FOR_NODES" for r in failed) and not self.problems
        status = "success" if self.ok else "pending" if waiting else "failure"
        if self.ok and any(r.note_status == "pending" for r in self.results):
            status = "pending"
        message = (
            "; ".join(f"{r.function}: {r.message}" for r in failed) or self.changes.summary
            if self.results
            else "fleet already matches this commit"
        )
        return CommitOutcome(
            commit=self.commit,
            status=status,
            message=message,
            functions={
                r.function: FunctionOutcome(
                    status=r.note_status,
                    version=r.version,
                    strategy=r.strategy,
                    state=r.state,
                    nodes_ok=r.nodes_ok,
                    nodes_failed=r.nodes_failed,
                    failed_step=r.failed_step,
                    message=r.message,
                )
                for r in self.results
            },
        )


def waiting_key(function: str) -> str:
    """Store key of the last reason a function was skipped (held, blocked, stalled...)."""
    return f"waiting:{function}"


def retry_key(function: str) -> str:
    """Store key of the failure-paused rollout (pauseOnFailure) an operator asked to retry."""
    return f"retry-paused:{function}"


def ended_paused(store: Store, row: RolloutRow) -> bool:
    """True for a rollout its strategy ended PAUSED (pauseOnFailure), not an operator's pause:
    resuming it cannot continue it, only roll the version out again."""
    journal = store.journal(row.id)
    return bool(
        row.state == "PAUSED"
        and journal
        and journal[-1].outcome is not None
        and journal[-1].step.get("kind") == "finish"
    )


def waiting_for(change: Change) -> str:
    """Why a change whose only differing nodes are unreachable is not rolled out. Only the
    target nodes that answered are said to run the version: nothing is known of the others."""
    waiting = f"waiting for unreachable nodes ({', '.join(change.only_unreachable)})"
    answered = [n.node for n in change.nodes if n.action is Action.OK]
    if not answered:
        return f"{waiting}: no target node answered, what they run is unknown"
    if len(answered) == 1:
        return f"{waiting}; the 1 target node that answered already runs this version"
    return f"{waiting}; the {len(answered)} target nodes that answered already run this version"


def previous_version(lf: LiveFunction, new: str) -> str | None:
    """The version the rollout starts from on a node: the most-served one other than `new`
    (a feature flag at 60 % still has its old version serving the other 40 %)."""
    others = [(pct, v) for v, pct in lf.traffic if v != new and pct > 0]
    if others:
        return max(others)[1]
    return None


def limits_only_nodes(change: Change | None) -> tuple[str, ...] | None:
    """The nodes that differ when each of them differs only in its limits (a change to
    spec.limits or spec.overrides), else None: such a rollout goes to those nodes only."""
    if change is None:
        return None
    pending = [n for n in change.nodes if n.action is not Action.OK]
    if not pending or not all(n.only_limits for n in pending):
        return None
    return tuple(n.node for n in pending)


def build_spec(
    fn: DesiredFunction, desired: DesiredState, live: LiveState, change: Change | None = None
) -> RolloutSpec:
    """A RolloutSpec for `fn` on its target nodes, with each node's current version and,
    where spec.overrides change them, its own limits. Given the diff's `change`, a change of
    limits alone rolls out to the nodes whose limits differ, and the others are left alone."""
    only = limits_only_nodes(change)
    base = (float(fn.spec.limits.memory_mib), int(fn.spec.limits.timeout_ms))
    nodes = []
    for name in desired.targets_of(fn.name):
        if only is not None and name not in only:
            continue
        node = desired.nodes[name]
        inv = live.nodes.get(name)
        lf = inv.functions.get(fn.name) if inv else None
        limits = desired.limits_on(fn.name, name)
        own = (float(limits.memory_mib), int(limits.timeout_ms))
        nodes.append(
            TargetNode(
                name=name,
                region=node.region,
                address=node.address,
                old_version=previous_version(lf, fn.spec.version) if lf else None,
                memory_free_mib=inv.memory_free_mib if inv else None,
                serving_new=lf is not None and lf.percent(fn.spec.version) >= 100,
                unseen=inv is None,
                limits=own if own != base else None,
            )
        )
    spec = fn.spec
    hc = spec.health_check
    return RolloutSpec(
        function=fn.name,
        version=spec.version,
        commit=desired.commit,
        sha256=fn.module.sha256,
        strategy=spec.strategy.model_dump(mode="json", by_alias=True),
        nodes=tuple(nodes),
        health=HealthSpec(
            hc.function, hc.expect, hc.timeout, hc.success_threshold, hc.failure_threshold
        ),
        memory_mib=float(spec.limits.memory_mib),
        timeout_ms=int(spec.limits.timeout_ms),
        sticky_header=spec.sticky_header,
        triggers=tuple((t.metric, float(t.threshold)) for t in spec.auto_rollback.triggers),
        approval=spec.approval,
        analysis=JudgeSettings(
            baseline=spec.auto_rollback.analysis.baseline,
            confidence=spec.auto_rollback.analysis.confidence,
            minimum_samples=spec.auto_rollback.analysis.minimum_samples,
            max_extension=spec.auto_rollback.analysis.max_extension,
        ),
        deploy_windows=spec.deploy_windows.model_dump(mode="json", by_alias=True)
        if spec.deploy_windows
        else None,
    )


def dependency_order(desired: DesiredState, names: Sequence[str]) -> list[str]:
    """`names` ordered so that every function comes after what it dependsOn."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in desired.functions:
            return
        seen.add(name)
        for dep in desired.functions[name].spec.depends_on:
            visit(dep)
        if name in names:
            order.append(name)

    for name in sorted(names):
        visit(name)
    return order


def summarize_rollout(store: Store, row: RolloutRow) -> FunctionResult:
    """FunctionResult of a rollout from its row and journal."""
    failed: list[str] = []
    deployed: list[str] = []
    failed_step: str | None = None
    for entry in store.journal(row.id):
        if entry.outcome is None:
            continue
        outcome = outcome_from_json(entry.outcome)
        if entry.step.get("kind") == "deploy":
            deployed.extend(n for n in entry.step["nodes"] if n not in deployed)
        for node in outcome.failed_nodes:
            if node not in failed:
                failed.append(node)
        if not outcome.ok and failed_step is None:
            step = step_from_json(entry.step)
            failed_step = f"{step.kind} (step {entry.seq}): {outcome.message}"
    # nodesOk: nodes that got the new version and passed every step on it.
    ok_nodes = [n for n in deployed if n not in failed]
    return FunctionResult(
        function=row.function,
        version=row.version,
        action="rollout",
        state=row.state,
        message=row.message,
        strategy=row.strategy,
        nodes_ok=tuple(ok_nodes),
        nodes_failed=tuple(failed),
        failed_step=failed_step,
        rollout_id=row.id,
    )


class Reconciler:
    """Reads Git and the fleet, diffs, and rolls changes out through the engine."""

    def __init__(
        self,
        store: Store,
        state_dir: Path,
        clock: Clock,
        token: str | FleetAuth | None,  # the fleet secret, or a FleetAuth (fleet/tokens.py)
        timeout: float = 10.0,
        concurrency: int = 64,
        on_event: EventSink | None = None,
        allow_empty: bool = False,
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.clock = clock
        self.token = token
        self.timeout = timeout
        self.concurrency = concurrency
        self.on_event = on_event
        self.allow_empty = allow_empty

    def client(self, addresses: Mapping[str, str], watch_seconds: float = 0.0) -> AgentClient:
        return AgentClient(
            addresses, self.token, self.timeout, self.concurrency, watch_seconds=watch_seconds
        )

    def load(self, source: SourceSpec, fetch: bool = True) -> tuple[Snapshot, DesiredState]:
        """Snapshot and desired state; InvalidManifests carries the snapshot's commit."""
        snapshot = take_snapshot(source, self.state_dir, fetch=fetch)
        try:
            return snapshot, load_snapshot(snapshot)
        except InvalidManifests as exc:
            exc.commit = snapshot.commit
            raise

    def check_fast_forward(self, source: SourceSpec, commit: str) -> None:
        """NonFastForward unless `commit` descends from the last applied commit (or the source
        allows it); the refusal is kept in the store for `gitopsd status` until a head is
        accepted. Every path that applies a commit calls this first."""
        reference = self.store.get(ACCEPTED_HEAD_KEY) or self.store.get(LAST_APPLIED_KEY)
        try:
            check_fast_forward(source, self.state_dir, commit, reference)
        except NonFastForward as exc:
            self.store.put(REFUSED_HEAD_KEY, str(exc))
            raise
        if reference != commit:
            self.store.put(ACCEPTED_HEAD_KEY, commit)
        if self.store.get(REFUSED_HEAD_KEY):
            self.store.put(REFUSED_HEAD_KEY, "")

    async def read(self, source: SourceSpec, fetch: bool = True) -> ReadResult:
        snapshot, desired = self.load(source, fetch)
        addresses = {n: node.address for n, node in desired.nodes.items()}
        async with self.client(addresses) as client:
            live = await client.live_state(addresses)
        return ReadResult(snapshot, desired, live, diff(desired, live))

    async def apply(self, read: ReadResult) -> SyncReport:
        """Resume unfinished rollouts, then roll out every change of `read`, then prune."""
        desired = read.desired
        addresses = {n: node.address for n, node in desired.nodes.items()}
        results: list[FunctionResult] = []
        async with self.client(addresses) as client:
            engine = Engine(self.store, client, self.clock, self.on_event)
            resumed = await self._resume(engine)
            live, changes = read.live, read.changes
            results.extend(summarize_rollout(self.store, row) for row in resumed)
            if resumed:
                live = await client.live_state(addresses)
                changes = diff(desired, live)
            by_name = {c.function: c for c in changes.changes}
            # A resumed rollout that just ended decided its version's fate in this pass; going
            # again would expose a version that was just rolled back to users a second time.
            decided = {(r.function, r.version) for r in resumed}
            rollouts = [
                c.function
                for c in changes.changes
                if c.action is not Action.PRUNE
                and (c.function, desired.functions[c.function].spec.version) not in decided
            ]
            states: dict[str, str] = {}
            for name in dependency_order(desired, rollouts):
                result = await self.rollout_function(
                    engine, desired.functions[name], desired, live, by_name[name], states
                )
                states[name] = result.state
                results.append(result)
            results.extend(await self.prune_all(client, desired, changes))
            await self.retire_due(client)
        return SyncReport(desired.commit, changes, tuple(results))

    async def retire_due(self, client: AgentClient) -> None:
        """Unload blue versions whose retention period ended. The agent refuses (409) to
        unload a version that serves traffic again, e.g. after an operator rollback to it."""
        for function, node, version in self.store.due_retirements(self.clock.now()):
            try:
                await client.delete_version(node, function, version)
            except GitopsdError as exc:
                unreachable = isinstance(exc, AgentError) and exc.status is None
                if unreachable and node in client.addresses:
                    continue  # try again on a later pass
                get_logger(function=function, node=node).info(
                    "retirement dropped", version=version, reason=str(exc)
                )
            self.store.cancel_retirement(function, node, version)

    async def prune_all(
        self, client: AgentClient, desired: DesiredState, changes: ChangeSet
    ) -> list[FunctionResult]:
        """Undeploy what left Git, unless Git became empty and allowEmpty is not set."""
        prunes = [c for c in changes.changes if any(n.action is Action.PRUNE for n in c.nodes)]
        if not desired.functions and prunes and not self.allow_empty:
            return [
                FunctionResult(
                    c.function,
                    c.version or "",
                    "prune",
                    "PRUNE_REFUSED",
                    "the manifests name no function at all: refusing to prune the whole fleet "
                    "(set [source] allow_empty = true if that is what you want)",
                )
                for c in prunes
            ]
        results = []
        for change in prunes:
            nodes = [n.node for n in change.nodes if n.action is Action.PRUNE]
            results.append(await self.prune(client, change, nodes))
        return results

    async def _resume(self, engine: Engine) -> list[RolloutRow]:
        resumed = []
        for row in self.store.active_rollouts():
            if row.state in (RolloutState.DRAFT, RolloutState.PAUSED):
                continue
            get_logger(rollout=row.id).info("resuming rollout", state=row.state)
            resumed.append(await engine.run(row.id))
        return resumed

    async def rollout_function(
        self,
        engine: Engine,
        fn: DesiredFunction,
        desired: DesiredState,
        live: LiveState,
        change: Change,
        states: Mapping[str, str],
    ) -> FunctionResult:
        base = FunctionResult(
            fn.name, fn.spec.version, str(change.action), "", "", strategy=fn.spec.strategy.type
        )
        held = hold_reason(self.store, fn.name, fn.spec.version, fn.module.sha256, self.clock.now())
        if held:
            return self._waiting(replace(base, state="HELD", message=held))
        closed = why_not_now(fn.spec.deploy_windows, self.clock.now())
        if closed:
            return self._waiting(replace(base, state=WAITING_STATE, message=closed))
        for dep in fn.spec.depends_on:
            if states.get(dep, "COMPLETED") != "COMPLETED":
                return self._waiting(
                    replace(
                        base, state="BLOCKED", message=f"blocked by dependsOn {dep} ({states[dep]})"
                    )
                )
        if change.only_unreachable:
            return self._waiting(
                replace(base, state="WAITING_FOR_NODES", message=waiting_for(change))
            )
        self.store.put(waiting_key(fn.name), "")
        unreachable = [n.node for n in change.nodes if n.action is Action.UNKNOWN]
        draft = self._open_draft(fn)
        if draft is not None:
            rollout_id = draft.id
        else:
            spec = build_spec(fn, desired, live, change)
            self.store.put_module(fn.module.sha256, fn.module.wasm)
            rollout_id = engine.create(spec)
        row = await engine.run(rollout_id)
        result = summarize_rollout(self.store, row)
        result = replace(result, action=str(change.action))
        if row.state == RolloutState.PAUSED and self.store.controls(fn.name).paused:
            result = replace(result, state="PAUSED_BY_OPERATOR")
        if unreachable and result.state != "COMPLETED":
            result = replace(
                result, message=f"{result.message} (unreachable: {', '.join(unreachable)})"
            )
        return result

    def _waiting(self, result: FunctionResult) -> FunctionResult:
        """Remember why a function was not rolled out, for `gitopsd status`."""
        self.store.put(waiting_key(result.function), f"{result.state}: {result.message}")
        return result

    def _open_draft(self, fn: DesiredFunction) -> RolloutRow | None:
        """An earlier rollout of this very version still waiting for approval, if any."""
        for row in self.store.active_rollouts():
            if row.function != fn.name:
                continue
            if row.version == fn.spec.version and row.state in ("DRAFT", "APPROVED"):
                return row
            # A rollout pauseOnFailure ended is over: left "active", a later `abort` of the
            # function would revive it and roll its nodes back under the new rollout.
            paused = ended_paused(self.store, row)
            if row.state in ("DRAFT", "APPROVED") or paused:
                self.store.update_rollout(
                    row.id,
                    self.clock.now(),
                    state="FAILED",
                    message=f"{row.message}; closed: a new rollout of {fn.name} started"
                    if paused
                    else "superseded by a newer commit",
                    finished_at=self.clock.now(),
                )
        return None

    async def prune(
        self, client: AgentClient, change: Change, nodes: Sequence[str]
    ) -> FunctionResult:
        async def one(node: str) -> None:
            await client.delete_function(node, change.function)

        done = await gather_nodes(nodes, one)
        failed = tuple(n for n, r in done.items() if isinstance(r, Exception))
        errors = [str(r) for r in done.values() if isinstance(r, AgentError)]
        return FunctionResult(
            function=change.function,
            version=change.version or "",
            action="prune",
            state="PRUNE_FAILED" if failed else "PRUNED",
            message="; ".join(errors) if failed else f"removed from {', '.join(nodes)}",
            nodes_ok=tuple(n for n in nodes if n not in failed),
            nodes_failed=failed,
        )
