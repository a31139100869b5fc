"""Pieces every strategy shares: sizing, step sequences that stop at the first failure, endings.

Sub-plans here are generators used with `yield from`: they yield steps to the engine, receive
outcomes, and *return* a value to the strategy (a `Failure`, the nodes a rollback missed...).
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeAlias, TypeVar

from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    Finish,
    Gate,
    Nodes,
    PlanContext,
    Retire,
    Rollback,
    RolloutState,
    Step,
    StepOutcome,
    Wait,
)

T = TypeVar("T")
SubPlan: TypeAlias = Generator[Step, StepOutcome, T]

_SHOWN_NODES = 6


def share(total: int, percent: float) -> int:
    """`ceil(total * percent / 100)`, never fewer than one node nor more than `total`.

    Exact decimal arithmetic: 10 % of 30 must be 3, not 4 because 30 * 0.1 is 3.0000000000000004.
    """
    if total <= 0:
        return 0
    exact = Fraction(total) * Fraction(repr(float(percent))) / 100
    return min(total, max(1, math.ceil(exact)))


def pct(percent: float) -> str:
    """`10.0` → `10%`, `12.5` → `12.5%`."""
    return f"{percent:g}%"


def names(nodes: Iterable[str]) -> str:
    """Node list for messages, shortened past a handful so a 200-node fleet stays one line."""
    listed = list(nodes)
    if len(listed) <= _SHOWN_NODES:
        return ", ".join(listed)
    return f"{', '.join(listed[:_SHOWN_NODES])} and {len(listed) - _SHOWN_NODES} more"


def step_nodes(step: Step) -> Nodes:
    """The nodes a step acts on (both variants for Compare, none for Wait/Gate/Finish)."""
    if isinstance(step, Compare):
        return (*step.a_nodes, *step.b_nodes)
    if isinstance(step, Wait | Gate | Finish):
        return ()
    return step.nodes


def passed(outcome: StepOutcome) -> bool:
    """True when a step fully succeeded: ok, no failed node, and no failing verdict."""
    return outcome.ok and not outcome.failed_nodes and outcome.verdict != "fail"


@dataclass(frozen=True)
class Failure:
    """Why a step sequence stopped: the step, the nodes to blame and the engine's words."""

    step: Step
    nodes: Nodes
    detail: str = ""

    @classmethod
    def of(cls, step: Step, outcome: StepOutcome) -> Failure:
        # A failing outcome without per-node results blames every node of the step.
        blamed = outcome.failed_nodes or step_nodes(step)
        details = [r.detail for r in outcome.nodes if not r.ok and r.detail]
        return cls(step, blamed, outcome.message or "; ".join(details))

    def __str__(self) -> str:
        what = {
            "deploy": "deploy",
            "health": "health check",
            "traffic": "traffic change",
            "analyze": "analysis",
            "compare": "comparison",
            "wait": "wait",
            "gate": "promotion",
        }.get(self.step.kind, self.step.kind)
        text = f"{what} failed"
        if self.nodes:
            text += f" on {names(self.nodes)}"
        return f"{text}: {self.detail}" if self.detail else text


class Touched:
    """The nodes a plan has sent a Deploy to, in order: exactly what a full rollback must undo.

    A node counts as touched as soon as the Deploy is issued, even if it failed there: a
    half-loaded version must be cleaned up too.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, None] = {}

    def add(self, nodes: Iterable[str]) -> None:
        self._nodes.update(dict.fromkeys(nodes))

    @property
    def nodes(self) -> Nodes:
        return tuple(self._nodes)


def run(*steps: Step | None, touched: Touched | None = None) -> SubPlan[Failure | None]:
    """Yield `steps` in order (None entries are skipped) and stop at the first that fails."""
    for step in steps:
        if step is None:
            continue
        if isinstance(step, Deploy) and touched is not None:
            touched.add(step.nodes)
        outcome = yield step
        if not passed(outcome):
            return Failure.of(step, outcome)
    return None


def wait(seconds: float, reason: str) -> Wait | None:
    """A Wait step, or None (skipped by `run`) when there is nothing to wait for."""
    return Wait(seconds, reason) if seconds > 0 else None


EXTENDING_STRATEGIES = frozenset({"canary"})  # those whose analyses go through `judged`


def judged(nodes: Nodes, what: str) -> SubPlan[tuple[Failure | None, StepOutcome]]:
    """Analyze `nodes`; while the judge answers "inconclusive" and offers more time (the
    outcome's `extend_s`, which the executor bounds by autoRollback.analysis.maxExtension),
    wait that long and look again. The waits are ordinary journaled Wait steps, so a restart
    resumes an extension toward its deadline. Returns the failure, if the analysis failed,
    and the last analysis outcome."""
    step = Analyze(nodes)
    outcome = yield step
    while outcome.verdict == "inconclusive" and outcome.figures.get("extend_s", 0.0) > 0:
        yield Wait(float(outcome.figures["extend_s"]), f"more evidence for {what}")
        outcome = yield step
    return (None if passed(outcome) else Failure.of(step, outcome)), outcome


def rollback(nodes: Nodes) -> SubPlan[Nodes]:
    """Roll `nodes` back; return the nodes where the rollback itself failed."""
    if not nodes:
        return ()
    step = Rollback(nodes)
    outcome = yield step
    return () if passed(outcome) else Failure.of(step, outcome).nodes


def rollback_and_finish(
    nodes: Nodes, reason: str, state: RolloutState = RolloutState.ROLLED_BACK
) -> SubPlan[None]:
    """Roll `nodes` back, then finish in `state`; FAILED if the rollback did not take."""
    stuck = yield from rollback(nodes)
    if stuck:
        yield Finish(
            RolloutState.FAILED,
            f"{reason}; rollback failed on {names(stuck)}: they need manual attention",
        )
    else:
        yield Finish(state, reason)


def nodes_with_old(ctx: PlanContext, among: Iterable[str] | None = None) -> Nodes:
    """Nodes (of `among`, default all) that served another version before this rollout."""
    wanted = None if among is None else set(among)
    return tuple(
        n.name
        for n in ctx.nodes
        if n.old_version is not None
        and n.old_version != ctx.version  # retiring "old" would unload the new version itself
        and (wanted is None or n.name in wanted)
    )


def retire(
    ctx: PlanContext, among: Iterable[str] | None = None, after: float = 0.0
) -> SubPlan[str]:
    """Retire the old version where there is one; return a note for the final message."""
    nodes = nodes_with_old(ctx, among)
    if not nodes:
        return ""
    step = Retire(nodes, after)
    outcome = yield step
    if passed(outcome):
        return ""
    # The new version serves everywhere: a leftover old version is untidy, not a failure.
    return f"; old version still loaded on {names(Failure.of(step, outcome).nodes)}"


def no_nodes(ctx: PlanContext) -> SubPlan[None]:
    """The ending when the function targets no node at all."""
    yield Finish(
        RolloutState.FAILED,
        f"no target nodes for {ctx.function}: check spec.targets and the EdgeNode manifests",
    )
