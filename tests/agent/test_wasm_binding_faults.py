"""A wasmtime binding that no longer matches agent/wasm_ffi.py is the agent's fault (issue 15
item 3): at start the fast path's self-test fails and the object layer serves the calls; a
binding that fails during a call is answered 500 and counted as the agent's, never against
the version.

The binding is broken by replacing one attribute of wasmtime-py's `_bindings` module (what a
renamed or changed entry point in a new release would do) with one that raises
AttributeError. wasmtime itself is real: the object layer keeps its own references to the
bindings, so it still works, as it would after such a release.
"""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from gitopsd.agent import RunningAgent, wasm_ffi
from gitopsd.agent.runtime import MIB, Outcome, Runtime
from tests.agent.conftest import Client
from tests.agent.test_data_plane import PLAIN_CALL, exchange
from tests.wasm_modules import handler_wasm


def _renamed(*_args: Any, **_kwargs: Any) -> Any:
    raise AttributeError("module 'wasmtime._bindings' has no attribute 'wasmtime_func_call'")


def break_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wasm_ffi._c, "wasmtime_func_call", _renamed)


def test_a_broken_binding_turns_the_fast_path_off_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    break_binding(monkeypatch)
    with capture_logs() as logs:
        runtime = Runtime(workers=1)
    try:
        assert not runtime.fast
        [event] = [e for e in logs if e["event"] == "agent.wasm_fast_path_off"]
        assert "AttributeError" in event["reason"]
        assert event["log_level"] == "warning"
        # The object layer serves calls, with the same results.
        prepared = runtime.compile(handler_wasm())
        result = runtime.call(prepared, "_start", memory_bytes=16 * MIB, timeout_ms=500)
        assert (result.outcome, result.stdout) == (Outcome.OK, b"hello")
    finally:
        runtime.close()


def test_a_working_binding_keeps_the_fast_path() -> None:
    assert wasm_ffi.self_test() is None
    runtime = Runtime(workers=1)
    try:
        assert runtime.fast
    finally:
        runtime.close()


def test_a_binding_failing_in_a_call_raises_a_binding_fault_not_an_outcome(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runtime.fast
    prepared = runtime.compile(handler_wasm())
    break_binding(monkeypatch)
    with pytest.raises(wasm_ffi.BindingFault, match="wasmtime_func_call"):
        runtime.call(prepared, "_start", memory_bytes=16 * MIB, timeout_ms=500)


@pytest.mark.parametrize("path", ["fast", "aiohttp"])
async def test_a_binding_failing_in_a_call_is_the_agents_fault(
    client: Client, agent: RunningAgent, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    await client.deploy("f", "1", handler_wasm())
    break_binding(monkeypatch)
    # Percent-escaped, the same call is handed to aiohttp (data_plane.py).
    request = PLAIN_CALL if path == "fast" else PLAIN_CALL.replace(b"/fn/f", b"/fn/%66")
    with capture_logs() as logs:
        answer = await exchange(agent, request)
    assert answer.status == 500
    assert b"BindingFault" in answer.body
    assert any(e["event"] == "agent.request_crashed" for e in logs)
    assert agent._plane.counters.internal_errors == 1
    metrics = await client.get_json("/functions/f/metrics")
    counted = metrics["versions"]["1"]
    assert (counted["requests"], counted["errors"], counted["traps"]) == (0, 0, 0)
    monkeypatch.undo()
    # The binding back, the same version serves again: nothing was held against it.
    assert (await exchange(agent, PLAIN_CALL)).status == 200
