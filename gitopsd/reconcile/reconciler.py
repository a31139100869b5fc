"""Reconciler: the store, clock and fleet settings a pass runs with, and what a pass does
to one function (roll it out, prune it, retire its old blue versions)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from gitopsd.clock import Clock
from gitopsd.diff import Action, Change, ChangeSet, diff
from gitopsd.errors import AgentError, GitopsdError, InvalidManifests
from gitopsd.fleet.client import AgentClient, gather_nodes
from gitopsd.fleet.live import LiveState
from gitopsd.fleet.tokens import FleetAuth
from gitopsd.function_state import FunctionState, PassState, RolloutState
from gitopsd.log import get_logger
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.manifest.loader import load_snapshot
from gitopsd.notify.dispatcher import NotificationDispatcher
from gitopsd.reconcile import policy
from gitopsd.reconcile.keys import waiting_key
from gitopsd.reconcile.outcomes import Publish
from gitopsd.reconcile.pipeline import (
    APPLY_STEPS,
    STEPS,
    Pass,
    PassPorts,
    everyone,
    one_shot_ports,
    run_steps,
)
from gitopsd.reconcile.results import FunctionResult, ReadResult, SyncReport
from gitopsd.reconcile.summary import ended_paused, summarize_rollout
from gitopsd.reconcile.targets import build_spec
from gitopsd.report.notes import CommitOutcome
from gitopsd.rollout.engine import Engine, EventSink
from gitopsd.rollout.hold import hold_reason
from gitopsd.rollout.windows import why_not_now
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


async def _no_publish(_outcome: CommitOutcome) -> None:
    return None


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
        """Desired and live state and their diff; nothing is applied (`gitopsd diff`)."""
        snapshot, desired = self.load(source, fetch)
        addresses = {n: node.address for n, node in desired.nodes.items()}
        async with self.client(addresses) as client:
            live = await client.live_state(addresses)
        return ReadResult(snapshot, desired, live, diff(desired, live))

    @contextlib.asynccontextmanager
    async def open_pass(
        self,
        source: SourceSpec | None,
        ports: PassPorts,
        notes: NotificationDispatcher | None = None,
        addresses: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Pass]:
        """A pass with a fleet client of its own (`addresses`: known already) and an engine."""
        async with self.client(dict(addresses or {})) as client:
            yield Pass(
                rec=self,
                source=source,
                client=client,
                engine=Engine(self.store, client, self.clock, self.on_event),
                ports=ports,
                notes=notes if notes is not None else NotificationDispatcher((), None),
            )

    async def sync(
        self,
        source: SourceSpec,
        publish: Publish,
        notes: NotificationDispatcher | None = None,
        show_changes: Callable[[ChangeSet], None] | None = None,
    ) -> SyncReport:
        """One whole pass (`gitopsd sync`): a refused commit gets its failure note and raises
        (SignatureRefused, InvalidManifests, NonFastForward); otherwise the commit is noted
        "pending" while its rollouts run, then with their outcome."""
        async with self.open_pass(source, one_shot_ports(publish, show_changes), notes) as p:
            await run_steps(p, STEPS)
        return p.report()

    async def apply(self, read: ReadResult) -> SyncReport:
        """Resume unfinished rollouts, then roll out every change of `read`, then prune and
        retire; nothing is published."""
        desired = read.desired
        addresses = {n: node.address for n, node in desired.nodes.items()}
        ports = one_shot_ports(_no_publish)
        async with self.open_pass(None, ports, addresses=addresses) as p:
            p.desired, p.live, p.changes = desired, read.live, read.changes
            await run_steps(p, APPLY_STEPS)
        return p.report()

    async def retire_due(
        self, client: AgentClient, acts_for: Callable[[str], bool] = everyone
    ) -> None:
        """Unload blue versions whose retention period ended. The agent refuses (409) to
        unload a version that serves traffic again, e.g. after an operator rollback to it."""
        for function, node, version in self.store.due_retirements(self.clock.now()):
            if not acts_for(function):
                continue
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
        self,
        client: AgentClient,
        desired: DesiredState,
        changes: ChangeSet,
        acts_for: Callable[[str], bool] = everyone,
    ) -> list[FunctionResult]:
        """Undeploy what left Git, unless Git became empty and allowEmpty is not set."""
        prunes = [
            c
            for c in changes.changes
            if any(n.action is Action.PRUNE for n in c.nodes) and acts_for(c.function)
        ]
        if not desired.functions and prunes and not self.allow_empty:
            return [
                FunctionResult(
                    c.function,
                    c.version or "",
                    "prune",
                    PassState.PRUNE_REFUSED,
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

    async def rollout_function(
        self,
        engine: Engine,
        fn: DesiredFunction,
        desired: DesiredState,
        live: LiveState,
        change: Change,
        states: Mapping[str, FunctionState],
    ) -> FunctionResult:
        """Roll `fn` out (or continue its open draft) unless policy.start_verdict holds it
        back; `states`: the state of each function it dependsOn that is not COMPLETED."""
        now = self.clock.now()
        verdict = policy.start_verdict(
            hold_reason(self.store, fn.name, fn.spec.version, fn.module.sha256, now),
            why_not_now(fn.spec.deploy_windows, now),
            policy.blocked_by(fn.spec.depends_on, states),
            change,
        )
        if verdict is not None:
            result = FunctionResult(
                fn.name,
                fn.spec.version,
                str(change.action),
                verdict.state,
                verdict.reason,
                strategy=fn.spec.strategy.type,
            )
            # Why it was not rolled out, for `gitopsd status`.
            self.store.put(waiting_key(fn.name), f"{result.state}: {result.message}")
            return result
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
            result = replace(result, state=PassState.PAUSED_BY_OPERATOR)
        if unreachable and result.state != RolloutState.COMPLETED:
            result = replace(
                result, message=f"{result.message} (unreachable: {', '.join(unreachable)})"
            )
        return result

    def _open_draft(self, fn: DesiredFunction) -> RolloutRow | None:
        """An earlier rollout of this very version still waiting for approval, if any; the
        function's other drafts and failure-paused rollouts are closed (policy.draft_decision)."""
        for row in self.store.active_rollouts():
            if row.function != fn.name:
                continue
            paused = ended_paused(self.store, row)
            decision = policy.draft_decision(row, fn.spec.version, paused)
            if decision is policy.DraftDecision.CONTINUE:
                return row
            if decision is not policy.DraftDecision.LEAVE:
                self.store.update_rollout(
                    row.id,
                    self.clock.now(),
                    state=RolloutState.FAILED,
                    message=policy.superseded_message(row, fn.name, decision),
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
            state=PassState.PRUNE_FAILED if failed else PassState.PRUNED,
            message="; ".join(errors) if failed else f"removed from {', '.join(nodes)}",
            nodes_ok=tuple(n for n in nodes if n not in failed),
            nodes_failed=failed,
        )
