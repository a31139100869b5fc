"""The wasmtime runtime and the WASI host, called directly (no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from gitopsd.agent.runtime import MIB, CallResult, Outcome, Prepared, Runtime
from gitopsd.errors import ModuleError
from tests import wasm_bombs
from tests.wasm_modules import compile_wat, handler_wasm, handler_wat


def call(
    runtime: Runtime,
    prepared: Prepared,
    export: str = "_start",
    *,
    stdin: bytes = b"",
    env: Sequence[tuple[str, str]] = (),
    args: Sequence[str] = (),
) -> CallResult:
    """A call under generous limits (16 MiB, 200 ms)."""
    return runtime.call(
        prepared, export, stdin=stdin, env=env, args=args, memory_bytes=16 * MIB, timeout_ms=200
    )


def test_ok_writes_the_reply(runtime: Runtime, wasm: dict[str, bytes]) -> None:
    result = call(runtime, runtime.compile(wasm["ok"]))
    assert result.outcome is Outcome.OK
    assert result.stdout == b"hello"
    assert result.memory_bytes > 0


def test_echo_copies_stdin_after_the_reply(runtime: Runtime, wasm: dict[str, bytes]) -> None:
    body = bytes(range(256)) * 1000  # several fd_read chunks
    result = call(runtime, runtime.compile(wasm["echo"]), stdin=body)
    assert result.stdout == b"hello" + body


def test_env_reads_the_version_variable(runtime: Runtime, wasm: dict[str, bytes]) -> None:
    env = [("A", "1"), ("X_GITOPSD_VERSION", "2.0.0-rc.1"), ("Z", "")]
    result = call(runtime, runtime.compile(wasm["env"]), env=env)
    assert result.stdout == b"2.0.0-rc.1"


def test_health_export(runtime: Runtime) -> None:
    prepared = runtime.compile(handler_wasm(health="fine \u2713"))
    result = call(runtime, prepared, "health_check")
    assert result.stdout.decode() == "fine \u2713"


def test_trap_exit_and_missing_export_are_results(runtime: Runtime, wasm: dict[str, bytes]) -> None:
    trap = call(runtime, runtime.compile(wasm["trap"]))
    assert trap.outcome is Outcome.TRAP
    assert "unreachable" in (trap.error or "")
    exit1 = call(runtime, runtime.compile(wasm["exit1"]))
    assert (exit1.outcome, exit1.exit_code) == (Outcome.EXIT, 1)
    missing = call(runtime, runtime.compile(wasm["ok"]), "nope")
    assert missing.outcome is Outcome.TRAP
    assert "nope" in (missing.error or "")


def test_loop_times_out(runtime: Runtime, wasm: dict[str, bytes]) -> None:
    result = runtime.call(runtime.compile(wasm["loop"]), "_start", memory_bytes=MIB, timeout_ms=30)
    assert result.outcome is Outcome.TIMEOUT
    assert result.duration_ms >= 30


def test_memory_grow_stops_at_the_limit(runtime: Runtime, wasm: dict[str, bytes]) -> None:
    result = runtime.call(runtime.compile(wasm["grow"]), "_start", memory_bytes=MIB, timeout_ms=500)
    # The module saw memory.grow return -1 at the limit, then trapped on purpose.
    assert result.outcome is Outcome.TRAP
    assert result.memory_bytes == MIB


def test_not_wasm_is_refused(runtime: Runtime) -> None:
    with pytest.raises(ModuleError, match="not WASM"):
        runtime.compile(b"hello world")
    with pytest.raises(ModuleError, match="not WASM"):
        runtime.compile(handler_wat().encode())  # text, even valid WAT, is not a module
    with pytest.raises(ModuleError, match="not valid WASM"):
        runtime.compile(b"\0asm\x01\0\0\0\xff\xff")


def test_imports_outside_wasi_do_not_link(runtime: Runtime) -> None:
    prepared = runtime.compile(
        compile_wat('(module (import "env" "foo" (func)) (func (export "_start")))')
    )
    with pytest.raises(ModuleError, match="does not link"):
        runtime.check(prepared, MIB, 100)


def test_memory_minimum_over_the_limit_does_not_instantiate(runtime: Runtime) -> None:
    prepared = runtime.compile(compile_wat('(module (memory 32) (func (export "_start")))'))
    runtime.check(prepared, 4 * MIB, 100)
    with pytest.raises(ModuleError, match="does not instantiate"):
        runtime.check(prepared, MIB, 100)


def test_module_without_start_is_refused(runtime: Runtime) -> None:
    prepared = runtime.compile(compile_wat('(module (func (export "main")))'))
    with pytest.raises(ModuleError, match="_start"):
        runtime.check(prepared, MIB, 100)


# Calls WASI functions and writes one byte per result (an errno, or a value) to stdout.
_PROBE = """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek"
    (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get"
    (func $fd_fdstat_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 100) (call $args_sizes_get (i32.const 200) (i32.const 204)))
    (i32.store8 (i32.const 101) (i32.load (i32.const 200)))
    (i32.store8 (i32.const 102) (call $args_get (i32.const 300) (i32.const 400)))
    ;; first byte of argv[0]
    (i32.store8 (i32.const 103) (i32.load8_u (i32.load (i32.const 300))))
    (i32.store8 (i32.const 104) (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 208)))
    ;; the realtime clock is after 2020 (1.6e18 ns)
    (i32.store8 (i32.const 105)
      (i64.gt_u (i64.load (i32.const 208)) (i64.const 1600000000000000000)))
    (i32.store8 (i32.const 106) (call $random_get (i32.const 500) (i32.const 64)))
    (i32.store8 (i32.const 107) (call $fd_prestat_get (i32.const 3) (i32.const 216)))
    (i32.store8 (i32.const 108) (call $path_open (i32.const 3) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 216)))
    (i32.store8 (i32.const 109) (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0)
      (i32.const 216)))
    (i32.store8 (i32.const 110) (call $fd_fdstat_get (i32.const 1) (i32.const 224)))
    ;; fd_write to a descriptor that does not exist, and with an iovec outside memory
    (i32.store8 (i32.const 111) (call $fd_write (i32.const 7) (i32.const 0) (i32.const 0)
      (i32.const 216)))
    (i32.store (i32.const 0) (i32.const 70000))
    (i32.store (i32.const 4) (i32.const 10))
    (i32.store8 (i32.const 112) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1)
      (i32.const 216)))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 216)))
    (i32.store (i32.const 0) (i32.const 500))
    (i32.store (i32.const 4) (i32.const 64))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 216))))
)"""


def test_wasi_host_functions(runtime: Runtime) -> None:
    prepared = runtime.compile(compile_wat(_PROBE))
    result = call(runtime, prepared, args=["fn-name"])
    assert result.outcome is Outcome.OK, result.error
    out = result.stdout
    assert out[0:2] == bytes([0, 1])  # args_sizes_get ok, one argument
    assert out[2:4] == bytes([0, ord("f")])  # args_get ok, argv[0] = "fn-name"
    assert out[4:6] == bytes([0, 1])  # clock_time_get ok, a plausible time
    assert out[6] == 0  # random_get ok
    assert out[7] == 8  # fd_prestat_get: EBADF, there are no preopens
    assert out[8] == 52  # path_open: ENOSYS
    assert out[9] == 70  # fd_seek on stdout: ESPIPE
    assert out[10] == 0  # fd_fdstat_get ok
    assert out[11] == 8  # fd_write to fd 7: EBADF
    assert out[12] == 21  # fd_write of an iovec outside memory: EFAULT
    assert len(result.stderr) == 64  # random bytes went to stderr
    assert len(set(result.stderr)) > 8


def test_concurrent_exits_and_traps_are_told_apart(
    runtime: Runtime, wasm: dict[str, bytes]
) -> None:
    # wasmtime-py passes host exceptions (our proc_exit) through one global slot.
    exit1, trap = runtime.compile(wasm["exit1"]), runtime.compile(wasm["trap"])
    jobs = [exit1, trap] * 100
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: call(runtime, p), jobs))
    for prepared, result in zip(jobs, results, strict=True):
        expected = Outcome.EXIT if prepared is exit1 else Outcome.TRAP
        assert result.outcome is expected


def test_concurrent_exits_leave_timeouts_and_traps_their_own_reason(
    runtime: Runtime, wasm: dict[str, bytes]
) -> None:
    """A call ends by its own cause whatever other threads' modules do at the same time: an
    interrupted loop once picked up another thread's proc_exit from wasmtime-py's global
    slot and was answered as a trap (500 where 504 was due)."""
    exit1, trap, loop = (runtime.compile(wasm[n]) for n in ("exit1", "trap", "loop"))
    jobs = [exit1, exit1, trap, loop] * 40

    def one(prepared: Prepared) -> CallResult:
        timeout = 10 if prepared is loop else 2000
        return runtime.call(prepared, "_start", memory_bytes=16 * MIB, timeout_ms=timeout)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    seen = [(r.outcome, r.error) for r in results]
    for prepared, result in zip(jobs, results, strict=True):
        if prepared is exit1:
            assert (result.outcome, result.exit_code) == (Outcome.EXIT, 1), seen
        elif prepared is loop:
            assert result.outcome is Outcome.TIMEOUT, seen
        else:
            assert result.outcome is Outcome.TRAP and "unreachable" in (result.error or ""), seen


async def test_run_moves_a_slow_module_off_the_loop(runtime: Runtime) -> None:
    # A fresh module (own sha) so its pace is not shared with other tests.
    spin = runtime.compile(handler_wasm("spin-pace", behaviour="loop"))
    ok = runtime.compile(handler_wasm("ok-pace"))
    # Pace counts CPU time, not wall time: on a busy machine the first inline budget may
    # pass with the thread descheduled, so a few calls are allowed to learn it.
    for _ in range(10):
        first = await runtime.run(spin, "_start", memory_bytes=MIB, timeout_ms=50)
        assert first.outcome is Outcome.TIMEOUT
        if spin.pace.pooled:
            break
    assert spin.pace.pooled  # it burned its inline budget: next calls go to the pool
    # The well-behaved calls get a generous timeout: they are not what is measured here.
    results = await asyncio.gather(
        runtime.run(spin, "_start", memory_bytes=MIB, timeout_ms=50),
        *(runtime.run(ok, "_start", memory_bytes=MIB, timeout_ms=10_000) for _ in range(20)),
    )
    assert results[0].outcome is Outcome.TIMEOUT
    assert all(r.stdout == b"ok-pace" for r in results[1:])
    assert not ok.pace.pooled


def test_close_is_idempotent() -> None:
    own = Runtime(workers=1)
    own.close()
    own.close()


def test_stdout_cap(wasm: dict[str, bytes]) -> None:
    small = Runtime(workers=1, stdout_cap=100)
    try:
        prepared = small.compile(wasm["echo"])
        fits = small.call(prepared, "_start", stdin=b"x" * 90, memory_bytes=MIB, timeout_ms=200)
        assert fits.outcome is Outcome.OK
        over = small.call(prepared, "_start", stdin=b"x" * 200, memory_bytes=MIB, timeout_ms=200)
        assert over.outcome is Outcome.TRAP
        assert "stdout cap" in (over.error or "")
    finally:
        small.close()


async def test_a_long_host_call_leaves_the_loop_within_the_inline_budget(
    runtime: Runtime,
) -> None:
    # Four 64 MiB random_get calls, no loop in between: epoch checks cannot stop them, so
    # before the host stopped at the inline budget they all ran on the event loop.
    bomb = runtime.compile(wasm_bombs.random_then_reply(1024, 4))
    task = asyncio.create_task(
        runtime.run(bomb, "_start", memory_bytes=64 * MIB, timeout_ms=60_000)
    )
    await asyncio.sleep(0)  # the call starts inline here, and must give the loop back
    assert not task.done()  # the loop runs this test again while the call goes on elsewhere
    result = await task
    assert result.outcome is Outcome.OK and result.stdout == b"done"
    assert bomb.pace.pooled  # it is slow, so its next calls start on the pool
