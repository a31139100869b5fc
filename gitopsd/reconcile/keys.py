"""Store keys the pass writes for `gitopsd status` and operator commands (the last applied
commit's is source/ancestry.py's LAST_APPLIED_KEY: the fast-forward check reads it)."""

from __future__ import annotations


def waiting_key(function: str) -> str:
    """Store key of the last reason a function was skipped (held, blocked, stalled...)."""
    return f"waiting:{function}"


def retry_key(function: str) -> str:
    """Store key of the failure-paused rollout (pauseOnFailure) an operator asked to retry."""
    return f"retry-paused:{function}"
