"""DeploymentManager: plan, execute, roll back and report deployments through the engine.

A thin synchronous face over the rollout engine: a plan becomes a RolloutSpec, the engine
creates and runs the rollout against the agents (journaling every step in the state dir's
store, where `gitopsd status` and `history` see it too), and the plan is filled from the
journal. No rollout logic lives here.

Every public method runs its own event loop (asyncio.run): call them from ordinary code or a
worker thread, never from inside a running event loop (RuntimeError).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from gitopsd.api._run import ensure_no_loop, run_blocking
from gitopsd.api._store import open_api_store
from gitopsd.api.cluster import EdgeCluster
from gitopsd.api.deployment import (
    DeploymentHistory,
    DeploymentPlan,
    DeploymentRecord,
    DeploymentResult,
    DeploymentStatus,
)
from gitopsd.api.health import HealthChecker, HealthStatus
from gitopsd.api.models import EdgeFunction
from gitopsd.clock import Clock, SystemClock
from gitopsd.fleet.live import LiveNode, LiveState
from gitopsd.log import get_logger
from gitopsd.manifest.strategy_options import OPTION_MODELS, normalize_strategy_name
from gitopsd.reconcile.summary import summarize_rollout
from gitopsd.reconcile.targets import target_node
from gitopsd.rollout.engine import Engine, EventSink
from gitopsd.rollout.operator_rollback import rollback_function
from gitopsd.rollout.spec import HealthSpec, RolloutSpec, TargetNode
from gitopsd.rollout.steps import RolloutState
from gitopsd.rollout.strategies import create_strategy
from gitopsd.status import deployment_phase, node_serving
from gitopsd.store.rows import RolloutRow

T = TypeVar("T")
CONFIG_KEYS = frozenset({"strategies", "health_timeout"})
ROLLBACK_STRATEGY = "blue-green"  # what rollout/operator_rollback.py rolls back with


def strategy_json(
    name: str, options: Mapping[str, Any], canary_percent: int, rollback_on_error: bool
) -> dict[str, Any]:
    """The strategy options as the engine stores them (manifest aliases, JSON values).

    Raises ValueError for an unknown strategy or invalid options (create_strategy's words),
    NotImplementedError for a plugin strategy: the engine runs the built-in ones only.
    """
    key = normalize_strategy_name(name)
    opts = dict(options)
    if key == "canary" and "stages" not in opts:
        opts["stages"] = [canary_percent, 100] if canary_percent < 100 else [100]
    if key == "rolling" and not rollback_on_error and "pause_on_failure" not in opts:
        opts.setdefault("pauseOnFailure", True)
    create_strategy(key, **opts)
    model = OPTION_MODELS.get(key)
    if model is None:
        raise NotImplementedError(
            f"strategy {key!r} is a plugin: the engine runs only the built-in strategies"
        )
    try:
        validated = model.model_validate({**opts, "type": key})
    except ValidationError as exc:  # create_strategy accepted it: should not happen
        raise ValueError(f"invalid options for strategy {key!r}: {exc}") from exc
    return validated.model_dump(mode="json", by_alias=True)


class DeploymentManager:
    """Deploys EdgeFunctions to an EdgeCluster with a strategy, and keeps their history.

    `state_dir` holds the SQLite store (rollouts, their journal, module bytes); give it the
    daemon's state dir to share history and operator controls with the CLI, or `state_url`
    (`postgresql://...`, with `state_password_file`) for the daemon's PostgreSQL store.
    `strategy` is the default strategy name; `config` may hold `strategies` (default options
    per strategy name) and `health_timeout` (seconds, for get_status).
    """

    def __init__(
        self,
        cluster: EdgeCluster,
        state_dir: str | Path,
        clock: Clock | None = None,
        strategy: str = "rolling",
        config: Mapping[str, Any] | None = None,
        *,
        on_event: EventSink | None = None,
        state_url: str | None = None,
        state_password_file: str | Path | None = None,
    ) -> None:
        config = dict(config or {})
        unknown = set(config) - CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}: use {sorted(CONFIG_KEYS)}")
        self.cluster = cluster
        self.store = open_api_store(Path(state_dir), state_url, state_password_file)
        self.clock: Clock = clock or SystemClock()
        self.strategy = normalize_strategy_name(strategy)
        self.config = config
        self.on_event = on_event
        self.health = HealthChecker(cluster, float(config.get("health_timeout", 5.0)))
        self._plans: list[DeploymentPlan] = []
        self._refused: list[DeploymentRecord] = []
        self._log = get_logger(component="api")

    def close(self) -> None:
        self.store.close()

    def _run(self, what: str, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return run_blocking(f"DeploymentManager.{what}", start)

    # plans --------------------------------------------------------------------------------

    def create_plan(
        self,
        function: EdgeFunction,
        strategy: str | None = None,
        target_nodes: Iterable[str] | None = None,
        canary_percent: int = 10,
        rollback_on_error: bool = True,
        **options: Any,
    ) -> DeploymentPlan:
        """A PENDING plan; targets every ONLINE node (after a refresh) unless given.

        `options` are strategy options; they override the config's defaults for that
        strategy. Raises ValueError for an unknown strategy, bad options or unknown nodes.
        """
        name = normalize_strategy_name(strategy or self.strategy)
        defaults = dict(self.config.get("strategies", {}).get(name, {}))
        merged = {**defaults, **options}
        strategy_json(name, merged, canary_percent, rollback_on_error)
        if target_nodes is None:
            self.cluster.refresh()
            targets = [n.name for n in self.cluster.online_nodes()]
        else:
            targets = list(dict.fromkeys(target_nodes))
            unknown = [n for n in targets if n not in self.cluster.addresses]
            if unknown:
                raise ValueError(f"unknown target nodes: {', '.join(unknown)}")
        return DeploymentPlan(
            function=function,
            strategy=name,
            target_nodes=targets,
            canary_percent=canary_percent,
            rollback_on_error=rollback_on_error,
            options=merged,
        )

    def execute(self, plan: DeploymentPlan) -> DeploymentPlan:
        """Run `plan` through the engine and fill it from the rollout's journal.

        Raises RuntimeError for a plan that is not PENDING; errors before the rollout was
        created (bad options, store) propagate and leave the plan FAILED.
        """
        ensure_no_loop("DeploymentManager.execute")
        if plan.state is not RolloutState.PENDING:
            raise RuntimeError(f"plan of {plan.function.name} is {plan.state}, not PENDING")
        self._plans.append(plan)
        try:
            self._run("execute", lambda: self._execute(plan))
        except BaseException as exc:
            if plan.rollout_id is None:
                plan.state = RolloutState.FAILED
                plan.message = plan.message or f"{type(exc).__name__}: {exc}"
            raise
        return plan

    async def _execute(self, plan: DeploymentPlan) -> None:
        fn = plan.function
        strategy = strategy_json(
            plan.strategy, plan.options, plan.canary_percent, plan.rollback_on_error
        )
        async with self.cluster.client(plan.target_nodes) as client:
            inventories = await self.cluster.read_inventories(client)
            spec = RolloutSpec(
                function=fn.name,
                version=fn.version,
                commit="",
                sha256=fn.sha256,
                strategy=strategy,
                nodes=self._targets(fn, plan.target_nodes, inventories),
                health=HealthSpec(fn.health_function, fn.health_expect, fn.health_timeout),
                memory_mib=fn.memory_mib,
                timeout_ms=fn.timeout_ms,
                sticky_header=fn.sticky_header,
            )
            self.store.put_module(fn.sha256, fn.wasm)
            engine = Engine(self.store, client, self.clock, self.on_event)
            plan.rollout_id = engine.create(spec)
            plan.state = RolloutState.IN_PROGRESS
            row = await engine.run(plan.rollout_id)
        self._fill(plan, row)

    def _fill(self, plan: DeploymentPlan, row: RolloutRow) -> None:
        """The plan as its rollout ended, from the rollout's row and journal."""
        summary = summarize_rollout(self.store, row)
        plan.rollout_id = row.id
        plan.state = RolloutState(row.state)
        plan.message = row.message
        plan.failed_step = summary.failed_step
        plan.failed_nodes = list(summary.nodes_failed)
        plan.deployed_nodes = (
            [] if plan.state is RolloutState.ROLLED_BACK else list(summary.nodes_ok)
        )

    def _targets(
        self, fn: EdgeFunction, names: Iterable[str], inventories: Mapping[str, object]
    ) -> tuple[TargetNode, ...]:
        """The plan's nodes with what each serves now (gitopsd/reconcile/targets.py, as for a
        sync), by region then name (PlanContext)."""
        out = []
        for name in names:
            node = self.cluster.node(name)
            inv = inventories.get(name)
            live = inv if isinstance(inv, LiveNode) else None
            out.append(target_node(fn.name, fn.version, name, node.region, node.address, live))
        return tuple(sorted(out, key=lambda n: (n.region, n.name)))

    # deploy / rollback --------------------------------------------------------------------

    def deploy(
        self, function: EdgeFunction, strategy: str | None = None, **options: Any
    ) -> DeploymentResult:
        """Plan and execute in one call; never raises (seed): errors come back in the result.

        `options`: `target_nodes`, `canary_percent`, `rollback_on_error`, and the strategy's
        options (`batchSize`, `evaluationPeriod`...).
        """
        name = normalize_strategy_name(strategy or self.strategy)
        return self._attempt(
            function.name,
            function.version,
            name,
            lambda: self.create_plan(function, name, **options),
        )

    def rollback(self, target: str, version: str | None = None) -> DeploymentResult:
        """Put `target` back on `version` (default: the newest completed version other than
        the one its nodes serve) with a blue-green rollout that unloads the version it
        replaces, then hold it there: `gitopsd rollback`'s rollback
        (gitopsd/rollout/operator_rollback.py), so that neither a sync nor the daemon undoes
        it until Git changes the function or `gitopsd resume`. Never raises."""
        return self._attempt(
            target, version or "", ROLLBACK_STRATEGY, lambda: self._rolled_back(target, version)
        )

    def _rolled_back(self, target: str, to: str | None) -> DeploymentPlan:
        """Run the operator rollback of `target`; its rollout as an executed plan."""
        if not self.store.rollouts(target, limit=1):
            raise LookupError(f"{target} has no completed rollout: nothing to roll back to")

        async def go() -> RolloutRow:
            async with self.cluster.client(()) as client:  # the last rollout's nodes
                return await rollback_function(
                    self.store, client, self.clock, target, to, self.on_event
                )

        row = self._run("rollback", go)
        spec = RolloutSpec.from_json(row.context)
        function = EdgeFunction(
            target,
            row.version,
            self.store.module(spec.sha256) or b"",  # rollback_function found it there
            memory_mib=spec.memory_mib,
            timeout_ms=spec.timeout_ms,
            health_function=spec.health.function,
            health_expect=spec.health.expect,
            health_timeout=spec.health.timeout,
            sticky_header=spec.sticky_header,
        )
        plan = DeploymentPlan(
            function, ROLLBACK_STRATEGY, [n.name for n in spec.nodes], state=RolloutState(row.state)
        )
        self._fill(plan, row)
        self._plans.append(plan)
        return plan

    def _attempt(
        self, function: str, version: str, strategy: str, make: Callable[[], DeploymentPlan]
    ) -> DeploymentResult:
        """Make a plan and execute it; any exception becomes a failed result (and a record)."""
        ensure_no_loop(f"DeploymentManager.deploy/rollback of {function}")
        started = self.clock.now()
        plan: DeploymentPlan | None = None
        try:
            plan = make()
            if plan.state is RolloutState.PENDING:  # a rollback's plan ran already
                self.execute(plan)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._log.warning("deployment failed", function=function, error=error)
            if plan is None or plan.rollout_id is None:
                self._refused.append(
                    DeploymentRecord(
                        function=function,
                        version=plan.function.version if plan else version,
                        strategy=plan.strategy if plan else strategy,
                        state=RolloutState.FAILED,
                        message=error,
                        started_at=started,
                        finished_at=self.clock.now(),
                    )
                )
            return DeploymentResult(
                success=False,
                version=plan.function.version if plan else version,
                target=function,
                strategy=plan.strategy if plan else strategy,
                duration=self.clock.now() - started,
                errors=[error],
                state=RolloutState.FAILED,
                rollout_id=plan.rollout_id if plan else None,
                plan=plan,
            )
        success = plan.state is RolloutState.COMPLETED
        errors: list[str] = []
        if not success:
            errors = [plan.message or f"rollout ended {plan.state}"]
            if plan.failed_step and plan.failed_step not in errors[0]:
                errors.append(plan.failed_step)
        return DeploymentResult(
            success=success,
            version=plan.function.version,
            target=function,
            strategy=plan.strategy,
            duration=self.clock.now() - started,
            errors=errors,
            state=plan.state,
            rollout_id=plan.rollout_id,
            plan=plan,
        )

    # reading ------------------------------------------------------------------------------

    def get_status(self, target: str) -> DeploymentStatus:
        """The function's live versions, latest rollout state and health; KeyError if neither
        the store nor any agent knows it."""
        return self._run("get_status", lambda: self._status(target))

    async def _status(self, target: str) -> DeploymentStatus:
        rows = self.store.rollouts(target)
        completed = [r for r in rows if r.state == RolloutState.COMPLETED]
        async with self.cluster.client() as client:
            inventories = await self.cluster.read_inventories(client)
            live = LiveState(
                nodes={n: i for n, i in inventories.items() if isinstance(i, LiveNode)},
                errors={n: str(i) for n, i in inventories.items() if not isinstance(i, LiveNode)},
            )
            serving = node_serving(target, live)
            counts = Counter(v for v in serving.values() if v is not None)
            if not rows and not counts:
                raise KeyError(f"no deployment of {target!r} is known")
            current = counts.most_common(1)[0][0] if counts else None
            if current is None and completed:
                current = completed[0].version
            expected = [n for n, v in serving.items() if v is not None and v == current]
            for row in completed:
                if row.version == current:
                    nodes = RolloutSpec.from_json(row.context).nodes
                    expected += [n.name for n in nodes if n.name in serving]
                    break
            expected = list(dict.fromkeys(expected))
            health = HealthStatus.UNHEALTHY
            if current is not None and expected:
                report = await self.health.check_with(client, target, current, expected)
                health = report.status
        latest = rows[0] if rows else None
        return DeploymentStatus(
            target=target,
            current_version=current,
            status=deployment_phase(latest),
            health=health,
            instances=counts.get(current, 0) if current else 0,
            nodes=serving,
            message=latest.message if latest else "",
        )

    @property
    def history(self) -> DeploymentHistory:
        """Every rollout in the store plus attempts this manager refused, oldest first;
        `manager.history("fn")` filters by function."""
        records = [
            DeploymentRecord(
                function=r.function,
                version=r.version,
                strategy=r.strategy,
                state=RolloutState(r.state),
                message=r.message,
                started_at=r.created_at,
                finished_at=r.finished_at,
                rollout_id=r.id,
                commit=r.commit,
            )
            for r in self.store.rollouts(limit=1_000_000)
        ]
        records.extend(self._refused)
        return DeploymentHistory(sorted(records, key=lambda r: r.started_at))

    def list_deployments(self) -> list[DeploymentPlan]:
        """The plans this manager executed (or tried to), in order."""
        return list(self._plans)

    def summary(self) -> dict[str, int]:
        """Counts over the history (seed deployment-manager)."""
        records = self.history
        states = Counter(r.state for r in records)
        return {
            "total_deployments": len(records),
            "active_services": len(
                {r.function for r in records if r.state is RolloutState.COMPLETED}
            ),
            "completed": states[RolloutState.COMPLETED],
            "failed": states[RolloutState.FAILED],
            "rolled_back": states[RolloutState.ROLLED_BACK],
        }
