"""Holds: after `gitopsd rollback`, the function stays on the version the operator chose and
is not re-synced until Git changes that function (its version or module) or an operator
runs `gitopsd resume FUNCTION`."""

from __future__ import annotations

from gitopsd.store.protocol import Store


def _key(function: str) -> str:
    return f"held-for:{function}"


def hold(store: Store, function: str, now: float, reason: str, desired: str) -> None:
    """Hold `function`; `desired` names what Git asked for at that moment ("version sha").

    A second rollback while held keeps the first `desired`: Git has not changed since, and the
    latest rollout is now the operator's own rollback, not what Git asks for."""
    if not (store.controls(function).held and store.get(_key(function)) is not None):
        store.put(_key(function), desired)
    store.set_control(function, now, held=1, held_reason=reason)


def hold_reason(store: Store, function: str, version: str, sha256: str, now: float) -> str:
    """Why `function` must not be synced now ("" when it may). A hold lifts by itself once
    Git asks for something else than it did when the hold was set."""
    controls = store.controls(function)
    if not controls.held:
        return ""
    held_for = store.get(_key(function))
    if held_for is not None and held_for != f"{version} {sha256}":
        store.set_control(function, now, held=0, held_reason="")
        return ""
    return controls.held_reason or "held by operator"
