"""The engine: the only executor of rollouts.

It runs a strategy's plan step by step, journals every step before and after executing it,
and on a restart replays the journal into a fresh plan generator (strategies are
deterministic) to continue exactly where it stopped: finished steps are not redone, a wait
resumes toward its journaled deadline, a step caught mid-way is run again (steps are
idempotent). Operator controls (pause, promote, abort, approve) are read from the store
between steps and while waiting, so they work from another process too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitopsd.clock import Clock
from gitopsd.fleet.client import AgentClient
from gitopsd.log import get_logger
from gitopsd.manifest.deploy_windows import waiting_message, window_state
from gitopsd.manifest.strategy_options import OPTION_MODELS
from gitopsd.rollout.executor import StepExecutor
from gitopsd.rollout.preview import describe_step
from gitopsd.rollout.spec import RolloutSpec
from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    Finish,
    Gate,
    HealthCheck,
    Retire,
    Rollback,
    RolloutState,
    SetTraffic,
    Step,
    StepOutcome,
    Strategy,
    Wait,
    outcome_from_json,
    outcome_to_json,
    step_from_json,
    step_to_json,
)
from gitopsd.rollout.strategies import create_strategy, strategy_for
from gitopsd.rollout.windows import waits_at_boundary, windows_of
from gitopsd.store.protocol import Store
from gitopsd.store.rows import RolloutRow

CONTROL_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class RolloutEvent:
    """A step started (outcome None) or ended; fed to live progress displays."""

    rollout_id: str
    function: str
    version: str
    seq: int
    step: Step
    outcome: StepOutcome | None
    replayed: bool = False
    deadline: float | None = None


EventSink = Callable[[RolloutEvent], None]


class _Stop(Exception):
    """Raised inside a wait or gate when an operator paused or aborted the rollout."""

    def __init__(self, action: str) -> None:
        self.action = action


def _canon(data: Any) -> Any:
    return json.loads(json.dumps(data))


class Engine:
    """Runs rollouts against the fleet through `client`, journaling in `store`."""

    def __init__(
        self,
        store: Store,
        client: AgentClient,
        clock: Clock,
        on_event: EventSink | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.on_event = on_event or (lambda _e: None)
        # Set by the daemon on SIGTERM: stop before the next step, leave the rollout resumable.
        self.stopping = False
        # function -> reason: a newer commit wants another version; roll back, then re-plan.
        self.superseded: dict[str, str] = {}

    def create(self, spec: RolloutSpec) -> str:
        """Record a new rollout (DRAFT when it needs approval) and return its id."""
        now = self.clock.now()
        approved = self.store.controls(spec.function).approved_version == spec.version
        state = (
            RolloutState.DRAFT
            if spec.approval == "manual" and not approved
            else (RolloutState.PENDING)
        )
        rollout_id = f"{spec.function}-{spec.version}-{uuid.uuid4().hex[:8]}"
        self.store.create_rollout(
            RolloutRow(
                id=rollout_id,
                function=spec.function,
                version=spec.version,
                commit=spec.commit,
                strategy=spec.strategy_name,
                state=str(state),
                message="waiting for `gitopsd approve`" if state is RolloutState.DRAFT else "",
                step="",
                context=spec.to_json(),
                created_at=now,
                updated_at=now,
                finished_at=None,
                aborting=False,
            )
        )
        return rollout_id

    async def run(self, rollout_id: str) -> RolloutRow:
        """Run (or resume) a rollout until it finishes, pauses, or waits for approval."""
        row = self.store.rollout(rollout_id)
        if row is None:
            raise KeyError(rollout_id)
        if RolloutState(row.state).is_final or row.state == RolloutState.DRAFT:
            return row
        spec = RolloutSpec.from_json(row.context)
        executor = StepExecutor(spec, self.client, self.store, self.clock.now)
        if row.aborting or self.store.controls(spec.function).abort:
            return await self._abort(row, spec, executor, "aborted by operator")
        if row.state == RolloutState.PAUSED and self.store.controls(spec.function).paused:
            return row
        try:
            return await self._drive(row, spec, executor)
        except _Stop as stop:
            if stop.action == "shutdown":
                return self._row(rollout_id)
            if stop.action == "abort":
                return await self._abort(row, spec, executor, "aborted by operator")
            if stop.action == "supersede":
                reason = self.superseded.pop(spec.function, "superseded by a newer commit")
                return await self._abort(row, spec, executor, reason, superseded=True)
            self.store.update_rollout(
                rollout_id,
                self.clock.now(),
                state=str(RolloutState.PAUSED),
                message="paused by operator (`gitopsd resume` continues)",
            )
            return self._row(rollout_id)

    def _row(self, rollout_id: str) -> RolloutRow:
        row = self.store.rollout(rollout_id)
        assert row is not None
        return row

    async def _drive(
        self, row: RolloutRow, spec: RolloutSpec, executor: StepExecutor
    ) -> RolloutRow:
        plan = build_strategy(spec).plan(spec.plan_context())
        journal = self.store.journal(row.id)
        log = get_logger(rollout=row.id, function=spec.function, version=spec.version)
        step = next(plan)
        seq = 0
        while True:
            done = journal[seq] if seq < len(journal) else None
            if done is not None and done.outcome is not None:
                if _canon(step_to_json(step)) != done.step:
                    return self._fail(row.id, f"journal step {seq} does not match the plan")
                outcome = outcome_from_json(done.outcome)
                executor.remember(step, outcome)
                self.on_event(
                    RolloutEvent(
                        row.id, spec.function, spec.version, seq, step, outcome, replayed=True
                    )
                )
            else:
                self._check_controls(spec.function)
                await self._window_boundary(row.id, spec, step)
                deadline = (
                    done.deadline
                    if done
                    else (self.clock.now() + step.seconds if isinstance(step, Wait) else None)
                )
                if done is None:
                    self.store.begin_step(
                        row.id,
                        seq,
                        step_to_json(step),
                        self.clock.now(),
                        deadline,
                        label=describe_step(step),
                    )
                self.on_event(
                    RolloutEvent(
                        row.id, spec.function, spec.version, seq, step, None, deadline=deadline
                    )
                )
                outcome = await self._execute(step, executor, spec.function, deadline)
                self.store.finish_step(row.id, seq, outcome_to_json(outcome), self.clock.now())
                executor.remember(step, outcome)
                log.info("step", seq=seq, kind=step.kind, ok=outcome.ok, message=outcome.message)
                self.on_event(RolloutEvent(row.id, spec.function, spec.version, seq, step, outcome))
            if isinstance(step, Finish):
                return self._finish(row.id, step)
            step = plan.send(outcome)
            seq += 1

    def _finish(self, rollout_id: str, step: Finish) -> RolloutRow:
        now = self.clock.now()
        self.store.update_rollout(
            rollout_id,
            now,
            state=str(step.state),
            message=step.message,
            finished_at=now if step.state.is_final else None,
        )
        return self._row(rollout_id)

    def _fail(self, rollout_id: str, message: str) -> RolloutRow:
        now = self.clock.now()
        self.store.update_rollout(
            rollout_id, now, state=str(RolloutState.FAILED), message=message, finished_at=now
        )
        return self._row(rollout_id)

    async def _window_boundary(self, rollout_id: str, spec: RolloutSpec, step: Step) -> None:
        """Deploy windows with `onClose: pause`: a forward step waits here, at its boundary,
        until a window is open (operator controls still act while it waits); rollbacks and
        the final step never wait."""
        windows = windows_of(spec.deploy_windows)
        if windows is None or not waits_at_boundary(windows, step):
            return
        state = window_state(windows.windows, self.clock.now())
        if state.open:
            return
        get_logger(rollout=rollout_id).info("deploy window closed: pausing at a step boundary")
        while not state.open:
            now = self.clock.now()
            message = waiting_message(windows.windows, state, now)
            self.store.update_rollout(rollout_id, now, message=message)
            check_at = state.changes_at if state.changes_at is not None else now + 3600.0
            while self.clock.now() < check_at:
                self._check_controls(spec.function)
                await self.clock.sleep_until(min(check_at, self.clock.now() + CONTROL_POLL_SECONDS))
            state = window_state(windows.windows, self.clock.now())
        self.store.update_rollout(rollout_id, self.clock.now(), message="")

    def _check_controls(self, function: str) -> None:
        if self.stopping:
            raise _Stop("shutdown")
        if function in self.superseded:
            raise _Stop("supersede")
        controls = self.store.controls(function)
        if controls.abort:
            raise _Stop("abort")
        if controls.paused:
            raise _Stop("pause")

    async def _execute(
        self, step: Step, ex: StepExecutor, function: str, deadline: float | None
    ) -> StepOutcome:
        match step:
            case Deploy():
                return await ex.deploy(step)
            case HealthCheck():
                return await ex.health(step)
            case SetTraffic():
                return await ex.traffic(step)
            case Analyze():
                return await ex.analyze(step)
            case Compare():
                return await ex.compare(step)
            case Rollback():
                return await ex.rollback(step)
            case Retire():
                return await ex.retire(step)
            case Wait():
                assert deadline is not None
                return await self._wait(function, deadline)
            case Gate():
                return await self._gate(function)
            case Finish():
                return StepOutcome(ok=True, message=step.message)
        raise TypeError(f"unknown step {step!r}")

    async def _wait(self, function: str, deadline: float) -> StepOutcome:
        while self.clock.now() < deadline:
            self._check_controls(function)
            if self._take_promote(function):
                return StepOutcome(ok=True, message="wait skipped: promoted by operator")
            await self.clock.sleep_until(min(deadline, self.clock.now() + CONTROL_POLL_SECONDS))
        return StepOutcome(ok=True, message="waited")

    async def _gate(self, function: str) -> StepOutcome:
        while True:
            self._check_controls(function)
            if self._take_promote(function):
                return StepOutcome(ok=True, message="promoted by operator")
            await self.clock.sleep_until(self.clock.now() + CONTROL_POLL_SECONDS)

    def _take_promote(self, function: str) -> bool:
        if self.store.controls(function).promote:
            self.store.set_control(function, self.clock.now(), promote=0)
            return True
        return False

    async def _abort(
        self,
        row: RolloutRow,
        spec: RolloutSpec,
        executor: StepExecutor,
        message: str,
        *,
        superseded: bool = False,
    ) -> RolloutRow:
        """Roll back every node the rollout touched, then finish ROLLED_BACK.

        `superseded`: a newer commit wants another version, which is no verdict on this
        one. Where this version is the function's first (no earlier version to go back
        to), rolling back would take the function off the node, and every such endpoint
        would answer 404 until the newer rollout got there; it is left serving instead, and
        the newer rollout replaces (and retires) it as it would any serving version. An
        operator's abort still removes it."""
        now = self.clock.now()
        self.store.update_rollout(row.id, now, aborting=1, message="aborting")
        journal = self.store.journal(row.id)
        touched: list[str] = []
        for entry in journal:
            if entry.outcome is not None:
                executor.remember(step_from_json(entry.step), outcome_from_json(entry.outcome))
            if entry.outcome is None:
                self.store.finish_step(
                    row.id,
                    entry.seq,
                    outcome_to_json(StepOutcome(ok=False, message="interrupted by abort")),
                    now,
                )
            step = step_from_json(entry.step)
            if isinstance(step, Deploy):
                touched.extend(n for n in step.nodes if n not in touched)
        if superseded:
            kept = [n for n in touched if spec.node(n).old_version is None]
            touched = [n for n in touched if spec.node(n).old_version is not None]
            if kept:
                message += (
                    f"; {spec.version} left on {len(kept)} node(s) where it is the first "
                    "version of the function, for the newer rollout to replace"
                )
        seq = len(journal)
        for step in (Rollback(tuple(touched)), Finish(RolloutState.ROLLED_BACK, message)):
            self.store.begin_step(
                row.id, seq, step_to_json(step), self.clock.now(), label=describe_step(step)
            )
            outcome = (
                await self._execute(step, executor, spec.function, None)
                if isinstance(step, Rollback)
                else StepOutcome(ok=True, message=message)
            )
            self.store.finish_step(row.id, seq, outcome_to_json(outcome), self.clock.now())
            get_logger(rollout=row.id, function=spec.function, version=spec.version).info(
                "step", seq=seq, kind=step.kind, ok=outcome.ok, message=outcome.message
            )
            self.on_event(RolloutEvent(row.id, spec.function, spec.version, seq, step, outcome))
            seq += 1
        self.store.set_control(spec.function, self.clock.now(), abort=0, promote=0)
        return self._finish(row.id, Finish(RolloutState.ROLLED_BACK, message))


def build_strategy(spec: RolloutSpec) -> Strategy:
    """The spec's strategy: a built-in from its options model, a plugin by its name."""
    name = spec.strategy_name
    model = OPTION_MODELS.get(name)
    if model is not None:
        return strategy_for(model.model_validate(spec.strategy))  # type: ignore[arg-type]
    options = {k: v for k, v in spec.strategy.items() if k != "type"}
    return create_strategy(name, **options)
