"""What a rollout will do, before it does it: `gitopsd diff --plan`.

A strategy is a pure plan generator, so previewing it is running it with every step answered
"all healthy" (Analyze passes, Compare picks B, gates are promoted). `run_plan` is the
driver; tests use it with scripted answers, the engine has its own (journaled) one.
"""

from __future__ import annotations

from collections.abc import Callable

from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    Finish,
    Gate,
    HealthCheck,
    Plan,
    PlanContext,
    Retire,
    Rollback,
    SetTraffic,
    Step,
    StepOutcome,
    Strategy,
    Wait,
)
from gitopsd.rollout.strategies._common import names, pct, step_nodes

Answer = Callable[[Step], StepOutcome]

_MAX_STEPS = 100_000  # far beyond any real plan; stops a buggy plugin looping forever


def healthy_outcome(step: Step) -> StepOutcome:
    """The answer of a fleet where everything works: all nodes ok, analysis passes, B wins."""
    verdict = {"analyze": "pass", "compare": "B"}.get(step.kind, "")
    return StepOutcome.all_ok(step_nodes(step), verdict)


def run_plan(plan: Plan, answer: Answer, *, max_steps: int = _MAX_STEPS) -> list[Step]:
    """Drive `plan` to its Finish step, answering each step with `answer(step)`.

    Returns every step yielded, Finish last. Raises RuntimeError if the plan ends without a
    Finish or runs past `max_steps`.
    """
    steps: list[Step] = []
    try:
        step = next(plan)
        while not isinstance(step, Finish):
            steps.append(step)
            if len(steps) >= max_steps:
                raise RuntimeError(f"plan still running after {max_steps} steps")
            step = plan.send(answer(step))
    except StopIteration:
        raise RuntimeError("plan ended without a Finish step") from None
    finally:
        plan.close()
    steps.append(step)
    return steps


def preview(strategy: Strategy, ctx: PlanContext) -> list[Step]:
    """The steps `strategy` takes on `ctx` if everything goes well, Finish last."""
    return run_plan(strategy.plan(ctx), healthy_outcome)


def format_seconds(seconds: float) -> str:
    """A duration as people read it: `30s`, `5m0s`, `1h30m0s`, `1.5s`."""
    if seconds < 60:
        return f"{seconds:g}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h" if hours else ""
    return f"{text}{minutes}m{secs + (seconds - whole):g}s"


def describe_step(step: Step, version: str | None = None) -> str:
    """One line of human text for a step, e.g. `deploy 1.2.0 to edge-a, edge-b`."""
    new = version or "the new version"
    if isinstance(step, Deploy):
        return f"deploy {new} to {names(step.nodes)}"
    if isinstance(step, HealthCheck):
        extra = f" (timeout {format_seconds(step.timeout)})" if step.timeout else ""
        return f"health-check {new} on {names(step.nodes)}{extra}"
    if isinstance(step, SetTraffic):
        return f"traffic {pct(step.new_percent)} → {new} on {names(step.nodes)}"
    if isinstance(step, Wait):
        return f"wait {format_seconds(step.seconds)} ({step.reason})"
    if isinstance(step, Analyze):
        return f"analyze {new} on {names(step.nodes)}"
    if isinstance(step, Compare):
        better = "lower" if step.comparison == "lower_is_better" else "higher"
        return (
            f"compare {new} on {names(step.b_nodes)} (B) with the old version on "
            f"{names(step.a_nodes)} (A): B wins if {step.metric} is at least {pct(step.threshold)} "
            f"{better}, with at least {step.minimum_sample_size} requests on each side"
        )
    if isinstance(step, Gate):
        return f"wait for `gitopsd promote` or `gitopsd abort`: {step.reason}"
    if isinstance(step, Rollback):
        return f"roll back {names(step.nodes)} to the old version"
    if isinstance(step, Retire):
        later = f" after {format_seconds(step.after)}" if step.after else ""
        return f"retire the old version on {names(step.nodes)}{later}"
    return f"finish {step.state.value}: {step.message}"
