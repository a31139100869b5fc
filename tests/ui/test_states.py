"""A function's state on the page, from its newest rollout, controls and live versions."""

from __future__ import annotations

from gitopsd.store.sqlite import Controls
from gitopsd.ui.readmodel import RolloutHead
from gitopsd.ui.states import classify


def head(state: str, version: str = "2.0.0", message: str = "") -> RolloutHead:
    return RolloutHead("r", "hello", version, "c", "canary", state, message, "step", 1, 2, None)


def test_states() -> None:
    assert classify("2.0.0", {"2.0.0"}, False, head("COMPLETED"), None, "").key == "in-sync"
    assert classify("2.0.0", {"1.0.0", "2.0.0"}, False, head("IN_PROGRESS"), None, "").key == (
        "rolling-out"
    )
    held = classify("2.0.0", {"1.0.0"}, False, head("COMPLETED"), Controls(held=True), "")
    assert (held.key, held.shape) == ("held", "square")
    failed = classify("3.0.0", {"2.0.0"}, False, head("ROLLED_BACK", "3.0.0", "health"), None, "")
    assert (failed.key, failed.detail) == ("failed", "rolled back: health")
    drifted = classify("2.0.0", {"1.0.0", "2.0.0"}, False, head("COMPLETED"), None, "")
    assert drifted.key == "drifted" and "1.0.0" in drifted.detail
    waiting = classify("2.0.0", {"2.0.0"}, True, head("COMPLETED"), None, "")
    assert waiting.key == "waiting" and "unreachable" in waiting.detail
    assert classify("2.0.0", set(), False, head("DRAFT"), None, "").key == "waiting"
    assert classify("2.0.0", set(), False, head("PAUSED"), None, "").key == "paused"
    assert classify(None, {"1.0.0"}, False, None, None, "").key == "unknown"
