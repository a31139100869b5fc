"""Instances come from wasmtime's pooling allocator; modules over its per-instance limits
run on an Engine without a pool, and a full pool fails one call, not the agent."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.agent.runtime import MIB, CallResult, Outcome, Prepared, Runtime
from tests.wasm_modules import compile_wat, handler_wasm

# Valid WASM (reference types) that the pool refuses: one table per instance is its limit.
_TWO_TABLES = """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (table 1 funcref)
  (table 1 funcref)
  (data (i32.const 16) "two tables")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "spin") (loop $forever (br $forever))))"""


@pytest.fixture
def small_pool() -> Iterator[Runtime]:
    made = Runtime(workers=1, pool_slots=3)
    assert made.pooled, "this wasmtime release lacks the pooling allocator"
    yield made
    made.close()


def call(runtime: Runtime, prepared: Prepared) -> CallResult:
    return runtime.call(prepared, "_start", memory_bytes=16 * MIB, timeout_ms=500)


def test_a_module_over_the_pool_limits_runs_without_the_pool() -> None:
    runtime = Runtime(workers=1)
    try:
        pooled = runtime.compile(handler_wasm("pooled"))
        apart = runtime.compile(compile_wat(_TWO_TABLES))
        assert runtime.pooled and pooled.host.pooled and not apart.host.pooled
        for _ in range(40):  # more calls than a kept Store serves, on both Engines
            assert call(runtime, pooled).stdout == b"pooled"
            assert call(runtime, apart).stdout == b"two tables"
        runtime.check(apart, 16 * MIB, 500)
        # The Engine without a pool gets epoch ticks too: its timeouts work.
        spin = runtime.call(apart, "spin", memory_bytes=MIB, timeout_ms=20)
        assert spin.outcome is Outcome.TIMEOUT
    finally:
        runtime.close()


def test_failed_calls_give_their_pool_slots_back_at_once(small_pool: Runtime) -> None:
    exit1 = small_pool.compile(handler_wasm(behaviour="exit1"))
    ok = small_pool.compile(handler_wasm("still serving"))
    gc.disable()  # proc_exit leaves its Store in a reference cycle: only closing frees it
    try:
        for _ in range(20):
            assert call(small_pool, exit1).outcome is Outcome.EXIT
    finally:
        gc.enable()
    assert call(small_pool, ok).stdout == b"still serving"


def test_a_full_pool_fails_one_call_with_a_clear_error(small_pool: Runtime) -> None:
    ok = small_pool.compile(handler_wasm("fits"))
    # A thread's kept Store holds its finished instances: the fourth call finds no slot.
    results = [call(small_pool, ok) for _ in range(4)]
    assert [r.outcome for r in results[:3]] == [Outcome.OK] * 3
    assert results[3].outcome is Outcome.TRAP
    assert "no free instance slot" in (results[3].error or "")
    # The failed call dropped the Store: its slots are free again.
    assert call(small_pool, ok).stdout == b"fits"


def test_an_address_space_limit_turns_the_pool_off_instead_of_aborting() -> None:
    # wasmtime aborts the whole process when it cannot map its pool: the runtime must see
    # the limit first (an operator's `ulimit -v` or systemd `LimitAS=`).
    script = (
        "from gitopsd.agent.main import new_runtime\n"
        "from gitopsd.agent.runtime import MIB\n"
        "from tests.wasm_modules import handler_wasm\n"
        "r = new_runtime()\n"
        "res = r.call(r.compile(handler_wasm('unpooled')), '_start', memory_bytes=MIB,"
        " timeout_ms=500)\n"
        "print(r.pooled, res.stdout.decode())\n"
        "r.close()\n"
    )

    done = subprocess.run(
        # 16 GiB of address space: plenty for Python and wasmtime, too little for the pool.
        ["sh", "-c", 'ulimit -v 16777216 && exec "$0" -c "$1"', sys.executable, script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["False", "unpooled"]
    assert "agent.instance_pool_off" in done.stdout + done.stderr  # the operator is told


def test_a_pool_costs_the_process_few_memory_mappings() -> None:
    # Tests and `--count` processes hold many Runtimes; Linux allows 65,530 mappings per
    # process (vm.max_map_count), and wasmtime aborts when it runs out. A pool with the
    # default 1,000 async stacks took about 2,000 mappings by itself.
    def mappings() -> int:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)

    before = mappings()
    runtimes = [Runtime(workers=1) for _ in range(5)]
    try:
        assert all(r.pooled for r in runtimes)
        ok = [r.compile(handler_wasm("mapped")) for r in runtimes]
        assert all(call(r, p).stdout == b"mapped" for r, p in zip(runtimes, ok, strict=True))
        assert mappings() - before < 5 * 100
    finally:
        for made in runtimes:
            made.close()
