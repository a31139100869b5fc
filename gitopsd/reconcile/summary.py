"""A rollout's row and journal read back as a FunctionResult."""

from __future__ import annotations

from gitopsd.function_state import RolloutState
from gitopsd.reconcile.policy import journal_ended_paused
from gitopsd.reconcile.results import FunctionResult
from gitopsd.rollout.steps import outcome_from_json, step_from_json
from gitopsd.store.protocol import Store
from gitopsd.store.rows import RolloutRow


def ended_paused(store: Store, row: RolloutRow) -> bool:
    """True for a rollout its strategy ended PAUSED (pauseOnFailure), not an operator's pause:
    resuming it cannot continue it, only roll the version out again."""
    paused = row.state == RolloutState.PAUSED  # the journal is read for a paused one only
    return journal_ended_paused(row, store.journal(row.id) if paused else [])


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
        state=RolloutState(row.state),
        message=row.message,
        strategy=row.strategy,
        nodes_ok=tuple(ok_nodes),
        nodes_failed=tuple(failed),
        failed_step=failed_step,
        rollout_id=row.id,
    )
