"""Every decision a pass takes about a function, as pure functions of the store's rows, the
desired state and the diff: no agents, no Git, no clock, no store writes.

The pass (pipeline.py) gathers the facts (a hold read through rollout/hold.py, a deploy
window through rollout/windows.py, the function's last rollouts) and acts on the verdicts:

- `start_verdict`: held → outside its deploy windows → blocked by `dependsOn` → only
  unreachable nodes differ; None lets the rollout run.
- `restart_blocker` (continuous passes, the daemon): a version whose last rollout waits for
  approval, is paused, or ended ROLLED_BACK/FAILED at this very commit is not started again
  by the loop (a one-shot `gitopsd sync` is an operator's request and runs it).
- `leaves_drift`: without selfHeal, drift is reported, not corrected (continuous passes).
- `draft_decision`: an open draft of this version is continued, any other is superseded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from gitopsd.diff import Action, Change
from gitopsd.function_state import FunctionState, PassState, RolloutState
from gitopsd.manifest.desired import DesiredState
from gitopsd.store.rows import JournalRow, RolloutRow

__all__ = [
    "WAITS_FOR_OPERATOR",
    "DraftDecision",
    "Verdict",
    "blocked_by",
    "dependency_order",
    "dependency_states",
    "draft_decision",
    "is_drift",
    "journal_ended_paused",
    "leaves_drift",
    "restart_blocker",
    "start_verdict",
    "superseded",
    "superseded_message",
    "waiting_for",
]


# Active rollouts a pass leaves alone: they wait for `gitopsd approve` or `resume`.
WAITS_FOR_OPERATOR: frozenset[RolloutState] = frozenset({RolloutState.DRAFT, RolloutState.PAUSED})


@dataclass(frozen=True)
class Verdict:
    """Why a function is not rolled out in this pass, and the state it is reported in."""

    state: FunctionState
    reason: str


class DraftDecision(Enum):
    """What a new rollout of a function does with one of its active rollouts."""

    CONTINUE = "continue"  # the same version waits for (or got) approval: run that one
    SUPERSEDE = "supersede"  # a draft of another version: closed, superseded
    CLOSE_PAUSED = "close-paused"  # ended by pauseOnFailure: over, closed
    LEAVE = "leave"


def journal_ended_paused(row: RolloutRow, journal: Sequence[JournalRow]) -> bool:
    """True for a rollout its strategy ended PAUSED (pauseOnFailure), not an operator's
    pause: its journal ends with the strategy's finish step."""
    return bool(
        row.state == RolloutState.PAUSED
        and journal
        and journal[-1].outcome is not None
        and journal[-1].step.get("kind") == "finish"
    )


def is_drift(history: Sequence[RolloutRow], version: str, sha256: str) -> bool:
    """True when the last finished rollout (`history` newest first) already put this very
    version out: the fleet moved away from it."""
    for row in history:
        if row.state == RolloutState.COMPLETED:
            return row.version == version and row.context.get("sha256") == sha256
    return False


def leaves_drift(drift: bool, self_heal: bool) -> bool:
    """True when a change is drift that this function's selfHeal: false leaves alone."""
    return drift and not self_heal


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


def dependency_states(
    deps: Sequence[str], running: Collection[str], latest: Mapping[str, RolloutRow | None]
) -> dict[str, FunctionState]:
    """The dependencies that are not COMPLETED, with their state: IN_PROGRESS while a
    rollout of theirs runs, else their latest rollout's state (none: not blocking)."""
    out: dict[str, FunctionState] = {}
    for dep in deps:
        if dep in running:
            out[dep] = RolloutState.IN_PROGRESS
            continue
        row = latest.get(dep)
        if row is not None and row.state != RolloutState.COMPLETED:
            out[dep] = RolloutState(row.state)
    return out


def blocked_by(deps: Sequence[str], states: Mapping[str, FunctionState]) -> str:
    """Why `dependsOn` blocks a function ("" when it does not): the first dependency whose
    state is known and not COMPLETED."""
    for dep in deps:
        state = states.get(dep, RolloutState.COMPLETED)
        if state != RolloutState.COMPLETED:
            return f"blocked by dependsOn {dep} ({state})"
    return ""


def start_verdict(held: str, window_closed: str, blocked: str, change: Change) -> Verdict | None:
    """Whether a rollout of the changed function runs in this pass (None) or why not, in
    this order: an operator's hold, a closed deploy window, `dependsOn`, unreachable nodes."""
    if held:
        return Verdict(PassState.HELD, held)
    if window_closed:
        return Verdict(PassState.WAITING_FOR_WINDOW, window_closed)
    if blocked:
        return Verdict(PassState.BLOCKED, blocked)
    if change.only_unreachable:
        return Verdict(PassState.WAITING_FOR_NODES, waiting_for(change))
    return None


def restart_blocker(
    function: str,
    version: str,
    sha256: str,
    commit: str,
    last: RolloutRow | None,
    retry_id: str | None,
    last_ended_paused: bool,
) -> str:
    """Why a continuous pass must not start this version again ("" when it may), from the
    function's last rollout: it waits for approval, is paused (by an operator or by
    pauseOnFailure), or ended ROLLED_BACK/FAILED at this very commit (a new commit retries)."""
    if last is None or (last.version, last.context.get("sha256")) != (version, sha256):
        return ""
    if retry_id == last.id:
        return ""  # an operator resumed a rollout pauseOnFailure had ended: roll out anew
    if last.state == RolloutState.DRAFT:
        return "waiting for `gitopsd approve`"
    if last.state == RolloutState.PAUSED and last_ended_paused:
        return f"paused after a failure: {last.message}; `gitopsd resume {function}` retries"
    if last.state == RolloutState.PAUSED:
        return "paused by operator (`gitopsd resume` continues)"
    final = (RolloutState.ROLLED_BACK, RolloutState.FAILED)
    if last.state in final and last.commit == commit:
        return f"stalled: {version} ended {last.state} at this commit; push a new commit"
    return ""


def superseded(running: Mapping[str, tuple[str, str]], desired: DesiredState) -> list[str]:
    """The functions whose running rollout (`running`: function -> (version, sha256) it
    rolls out) a new desired state no longer asks for: they stop at their next step
    boundary and roll back, and the next pass plans the newest version from there."""
    out = []
    for name, target in running.items():
        fn = desired.functions.get(name)
        if fn is None or target != (fn.spec.version, fn.module.sha256):
            out.append(name)
    return out


def draft_decision(row: RolloutRow, version: str, ended_paused: bool) -> DraftDecision:
    """What a new rollout of `version` does with `row`, an active rollout of its function."""
    drafts = (RolloutState.DRAFT, RolloutState.APPROVED)
    if row.version == version and row.state in drafts:
        return DraftDecision.CONTINUE
    # A rollout pauseOnFailure ended is over: left "active", a later `abort` of the
    # function would revive it and roll its nodes back under the new rollout.
    if ended_paused:
        return DraftDecision.CLOSE_PAUSED
    if row.state in drafts:
        return DraftDecision.SUPERSEDE
    return DraftDecision.LEAVE


def superseded_message(row: RolloutRow, function: str, decision: DraftDecision) -> str:
    """The message a rollout closed by `draft_decision` ends with."""
    if decision is DraftDecision.CLOSE_PAUSED:
        return f"{row.message}; closed: a new rollout of {function} started"
    return "superseded by a newer commit"
