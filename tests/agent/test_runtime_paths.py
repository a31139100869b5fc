"""The C-API fast path (agent/wasm_ffi.py) and wasmtime-py's object layer give the same
results: the runtime falls back to the latter when a wasmtime release lacks the former."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gitopsd.agent import wasm_ffi
from gitopsd.agent.runtime import MIB, CallResult, Outcome, Runtime, table_limit
from tests import wasm_bombs
from tests.agent.test_runtime import _PROBE
from tests.wasm_modules import compile_wat, handler_wasm

# An export that takes a parameter: never called through the nullary fast path.
_WITH_PARAM = """(module
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "takes") (param i32)))"""


@pytest.fixture(params=["c-api", "object-layer"])
def runtime(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    if request.param == "object-layer":
        monkeypatch.setattr(wasm_ffi, "AVAILABLE", False)
    else:
        assert wasm_ffi.AVAILABLE, "this wasmtime release lacks the C-API fast path"
    made = Runtime(workers=2)
    yield made
    made.close()


def run(runtime: Runtime, wasm: bytes, export: str = "_start", **kw: object) -> CallResult:
    kw.setdefault("memory_bytes", 16 * MIB)
    kw.setdefault("timeout_ms", 500)
    return runtime.call(runtime.compile(wasm), export, **kw)  # type: ignore[arg-type]


def test_handlers_behave_the_same_on_both_paths(runtime: Runtime) -> None:
    assert run(runtime, handler_wasm()).stdout == b"hello"
    body = bytes(range(256)) * 100
    assert run(runtime, handler_wasm(behaviour="echo"), stdin=body).stdout == b"hello" + body
    env = [("X_GITOPSD_VERSION", "3.1.4")]
    assert run(runtime, handler_wasm(behaviour="env"), env=env).stdout == b"3.1.4"
    assert run(runtime, handler_wasm(health="fine"), "health_check").stdout == b"fine"


def test_failures_are_classified_the_same_on_both_paths(runtime: Runtime) -> None:
    trap = run(runtime, handler_wasm(behaviour="trap"))
    assert trap.outcome is Outcome.TRAP and "unreachable" in (trap.error or "")
    exit1 = run(runtime, handler_wasm(behaviour="exit1"))
    assert (exit1.outcome, exit1.exit_code) == (Outcome.EXIT, 1)
    missing = run(runtime, handler_wasm(), "nope")
    assert missing.outcome is Outcome.TRAP and "nope" in (missing.error or "")
    loop = run(runtime, handler_wasm(behaviour="loop"))
    assert loop.outcome is Outcome.TIMEOUT
    needs_arg = run(runtime, compile_wat(_WITH_PARAM), "takes")
    assert needs_arg.outcome is Outcome.TRAP


def test_wasi_host_functions_answer_the_same_on_both_paths(runtime: Runtime) -> None:
    result = run(runtime, compile_wat(_PROBE), args=["fn-name"])
    assert result.outcome is Outcome.OK, result.error
    # args ok/1, argv[0] "f", clock ok/plausible, random ok, EBADF, ENOSYS, ESPIPE, ok,
    # EBADF for fd 7, EFAULT for an iovec outside memory
    assert list(result.stdout[:13]) == [0, 1, 0, ord("f"), 0, 1, 0, 8, 52, 70, 0, 8, 21]
    assert len(result.stderr) == 64


# Each call increments a global and a memory cell, then writes both: 1 and 1 when every
# call gets a fresh instance, whatever Store it runs in.
_COUNTER = """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $calls (mut i32) (i32.const 0))
  (func (export "_start")
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store8 (i32.const 64) (i32.add (i32.load8_u (i32.const 64)) (i32.const 1)))
    (i32.store8 (i32.const 65) (global.get $calls))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""

# Grows its memory to 5 MiB (80 pages) before answering: more than a Store may keep.
_BIG = """(module
  (memory (export "memory") 1)
  (func (export "_start") (drop (memory.grow (i32.const 79)))))"""


def _store(runtime: Runtime) -> object:
    return runtime._stores.slots[next(iter(runtime._stores.slots))].store


def test_calls_sharing_a_store_still_get_fresh_instances(runtime: Runtime) -> None:
    counter = compile_wat(_COUNTER)
    first = run(runtime, counter)
    store = _store(runtime)
    for _ in range(5):
        assert run(runtime, counter).stdout == first.stdout == bytes([1, 1])
    assert _store(runtime) is store  # reused: fresh instances, not fresh Stores


def test_a_store_is_dropped_after_a_failure_or_a_large_memory(runtime: Runtime) -> None:
    counter = compile_wat(_COUNTER)
    run(runtime, counter)
    store = _store(runtime)
    assert run(runtime, handler_wasm(behaviour="trap")).outcome is Outcome.TRAP
    assert run(runtime, counter).stdout == bytes([1, 1])
    after_trap = _store(runtime)
    assert after_trap is not store
    assert run(runtime, compile_wat(_BIG)).outcome is Outcome.OK
    run(runtime, counter)
    assert _store(runtime) is not after_trap


# Grows by 16 pages (1 MiB + one page in all) and answers whether the host allowed it.
_GROWS_PAST_1_MIB = """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ny")
  (func (export "_start")
    (i32.store (i32.const 0)
      (i32.add (i32.const 16) (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def test_a_kept_store_takes_each_calls_own_memory_limit(runtime: Runtime) -> None:
    grows = runtime.compile(compile_wat(_GROWS_PAST_1_MIB))

    def grew(limit: int) -> bytes:
        return runtime.call(grows, "_start", memory_bytes=limit, timeout_ms=500).stdout

    assert grew(2 * MIB) == b"y"
    store = _store(runtime)
    assert grew(MIB) == b"n"
    assert grew(2 * MIB) == b"y"
    assert _store(runtime) is store  # all three calls shared one Store


# --- the WASI host stays within the call's limits (issue 14, findings 3 and 4) ---------------


def test_one_fd_write_copies_no_more_than_the_stdout_cap(runtime: Runtime) -> None:
    # 100 iovecs naming the whole 1 MiB memory ask for 100 MiB; the cap allows 16 MiB.
    result = run(runtime, wasm_bombs.iovec_flood(iovecs=100), memory_bytes=MIB)
    assert result.outcome is Outcome.TRAP
    assert "stdout cap" in (result.error or "")
    # What fits was copied (a partial write), nothing more was.
    assert len(result.stdout) == runtime.stdout_cap


def test_more_iovecs_than_iov_max_is_einval(runtime: Runtime) -> None:
    assert run(runtime, wasm_bombs.iov_max_probe(1024)).stdout == bytes([0, 0])
    assert run(runtime, wasm_bombs.iov_max_probe(1025)).stdout == bytes([28, 28])


def test_a_host_function_stops_at_the_calls_deadline(runtime: Runtime) -> None:
    # Four 64 MiB random_get calls in straight-line code: no epoch check between them, so
    # only the host can stop the call before it writes "done".
    result = run(
        runtime, wasm_bombs.random_then_reply(1024, 4), memory_bytes=64 * MIB, timeout_ms=20
    )
    assert result.outcome is Outcome.TIMEOUT, (result.outcome, result.stdout)
    assert result.stdout == b""


def test_the_memory_limit_caps_the_sum_of_all_memories(runtime: Runtime) -> None:
    result = run(runtime, wasm_bombs.many_memories(8), memory_bytes=64 * MIB)
    assert result.outcome is Outcome.OK, result.error
    granted = int.from_bytes(result.stdout, "little") * wasm_bombs.PAGE
    total = granted + 8 * wasm_bombs.PAGE  # and the first page of each memory
    assert total <= 64 * MIB
    # Each of the 7 growing memories got its 8 MiB share, to within one 16-page step.
    assert total > 7 * (8 * MIB - 16 * wasm_bombs.PAGE)
    # The call's memory figure is every memory, not only the exported one.
    assert result.memory_bytes == total


def test_the_table_budget_caps_the_sum_of_all_tables(runtime: Runtime) -> None:
    result = run(runtime, wasm_bombs.many_tables(4), memory_bytes=16 * MIB)
    assert result.outcome is Outcome.OK, result.error
    granted = int.from_bytes(result.stdout, "little")
    assert 4 + granted <= table_limit(16 * MIB)
    assert 4 + granted > table_limit(16 * MIB) - 4 * 1000
