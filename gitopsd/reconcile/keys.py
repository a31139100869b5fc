"""Store keys the pass writes for `gitopsd status` and operator commands."""

from __future__ import annotations

LAST_APPLIED_COMMIT_KEY = "last_applied_commit"  # the newest commit every change of went well


def waiting_key(function: str) -> str:
    """Store key of the last reason a function was skipped (held, blocked, stalled...)."""
    return f"waiting:{function}"


def retry_key(function: str) -> str:
    """Store key of the failure-paused rollout (pauseOnFailure) an operator asked to retry."""
    return f"retry-paused:{function}"
