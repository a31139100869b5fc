"""WASM bombs on a real agent process: each is contained within its limit, and the agent keeps
serving a well-behaved function at the same time.

Bombs: an infinite loop (timeoutMs), a memory.grow loop and a huge grow (memoryMiB), deep
recursion (wasmtime's stack limit), a 17 MiB stdout (the 16 MiB cap), a memory minimum over
the limit (refused at load), a module over the 8 MiB upload cap (413), a module near the cap
(a 6 MiB data segment) and one of 20,000 functions (compile time). A `table.grow` bomb, which
the memory limit does not cover, is in test_found_bugs.py.

Issue 14 (findings 3 and 4): bombs aimed at the WASI host rather than at WebAssembly (one
fd_write of 700 iovecs naming the whole memory; fd_write calls of millions of iovecs, each
once a multi-second host call on the event loop) and a module of eight memories under one
memory limit.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import wasmtime

from tests import wasm_bombs
from tests.faults.agentproc import TOKEN, AgentProcess, gather_limited
from tests.faults.conftest import Figures, scale
from tests.wasm_modules import handler_wasm

_WRITE = """
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
"""


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def recursion(locals_: int) -> bytes:
    extra = " i64" * locals_
    return wat(
        '(module (memory (export "memory") 1)'
        f" (func $r (param i64) (result i64) (local{extra})"
        "  (call $r (i64.add (local.get 0) (i64.const 1))))"
        ' (func (export "_start") (drop (call $r (i64.const 0)))))'
    )


def stdout_flood(mib: int) -> bytes:
    """Writes one 64 KiB page of zeros `16 * mib` times."""
    return wat(
        f"""(module {_WRITE}
  (memory (export "memory") 2)
  (func (export "_start") (local $i i32)
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {16 * mib}))))))"""
    )


BIG_GROW = wat(
    '(module (memory (export "memory") 1)'
    ' (func (export "_start") (drop (memory.grow (i32.const 60000))) unreachable))'
)
OVER_MINIMUM = wat('(module (memory (export "memory") 2000) (func (export "_start")))')
NEAR_CAP = wat(
    '(module (memory (export "memory") 100) (data (i32.const 0) "'
    + "a" * (6 * 1024 * 1024)
    + '") (func (export "_start")))'
)
MANY_FUNCTIONS = wat(
    '(module (memory (export "memory") 1)'
    + "".join(f" (func $f{i} (result i32) (i32.const {i}))" for i in range(20_000))
    + ' (func (export "_start")))'
)
OVER_CAP = b"\0asm\x01\0\0\0" + b"\0" * (8 * 1024 * 1024 + 1)

# name: (module, memoryMiB, timeoutMs, expected status of a call, or of the load when refused)
BOMBS: dict[str, tuple[bytes, int, int, int]] = {
    "infinite-loop": (handler_wasm(behaviour="loop"), 16, 50, 504),
    # generous timeouts below: these must fail (or pass) for their own reason, even when the
    # test machine is busy
    "memory-grow-loop": (handler_wasm(behaviour="grow"), 16, 10_000, 500),
    "memory-grow-60000-pages": (BIG_GROW, 16, 10_000, 500),
    "deep-recursion": (recursion(0), 16, 10_000, 500),
    "deep-recursion-fat-frames": (recursion(200), 16, 10_000, 500),
    "stdout-17mib": (stdout_flood(17), 64, 30_000, 500),
    "near-cap-data-segment": (NEAR_CAP, 16, 10_000, 200),
    "20000-functions": (MANY_FUNCTIONS, 16, 10_000, 200),
}
REFUSED_AT_LOAD = {"memory-minimum-over-limit": (OVER_MINIMUM, 64, 400)}
REFUSED_AT_UPLOAD = {"module-over-8mib": (OVER_CAP, 413)}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(tmp_path / "agent")
    yield proc
    proc.close()


@pytest.mark.timeout(scale(120, 900))
async def test_bombs_are_contained_and_the_agent_keeps_serving(
    agent: AgentProcess, figures: Figures
) -> None:
    rounds = scale(4, 40)
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        # timeoutMs is wall-clock (epoch ticks): on a test machine whose 2 cores also run the
        # bombs and another test worker, 100 ms can pass before a healthy call gets a core.
        # What is asserted is that it is served, not how fast (the figures say that).
        status, _ = await agent.load(session, "healthy", handler_wasm("fine"), 16, 2000)
        assert status == 200
        for name, (module, _limit_bytes, _expected) in REFUSED_AT_LOAD.items():
            status, text = await agent.load(session, name, module, 16)
            results[name] = {"load": status, "why": text[:120]}
        for name, (module, _expected) in REFUSED_AT_UPLOAD.items():
            status, _ = await agent.upload(session, module)
            results[name] = {"upload": status}
        hwm_before = agent.kib("VmHWM")
        load_ms: dict[str, float] = {}
        for name, (module, memory, timeout, _status) in BOMBS.items():
            started = asyncio.get_running_loop().time()
            status, text = await agent.load(session, name, module, memory, timeout)
            load_ms[name] = round((asyncio.get_running_loop().time() - started) * 1000)
            assert status == 200, f"{name}: {text}"
        healthy: list[tuple[int, float, Any]] = []
        bombs: list[tuple[str, tuple[int, float, Any]]] = []
        for _ in range(rounds):
            names = [n for n in BOMBS for _ in range(4)]
            calls = [agent.invoke(session, n) for n in names]
            calls += [agent.invoke(session, "healthy") for _ in range(len(names))]
            answers = await gather_limited(calls, limit=24)
            bombs += list(zip(names, answers[: len(names)], strict=True))
            healthy += answers[len(names) :]
        healthz = [await agent.healthz_ms(session) for _ in range(20)]
        hwm_growth_mib = (agent.kib("VmHWM") - hwm_before) / 1024
        alive = agent.alive()
    per_bomb: dict[str, dict[str, Any]] = {}
    for name, (status, ms, body) in bombs:
        entry = per_bomb.setdefault(name, {"statuses": {}, "max_ms": 0.0})
        entry["statuses"][status] = entry["statuses"].get(status, 0) + 1
        entry["max_ms"] = round(max(entry["max_ms"], ms), 1)
        entry["error"] = str(body.get("error", ""))[:80]
    latencies = sorted(ms for _, ms, _ in healthy)
    figures.update(
        bomb_calls=len(bombs),
        bombs=per_bomb,
        load_ms=load_ms,
        refused=results,
        healthy_calls=len(healthy),
        healthy_ok=sum(1 for s, _, _ in healthy if s == 200),
        healthy_p50_ms=round(statistics.median(latencies), 1),
        healthy_p95_ms=round(latencies[int(len(latencies) * 0.95)], 1),
        healthz_max_ms=round(max(healthz), 1),
        agent_peak_rss_growth_mib=round(hwm_growth_mib),
        agent_alive=alive,
    )
    assert alive
    for name, (_module, _memory, _timeout, expected) in BOMBS.items():
        assert per_bomb[name]["statuses"] == {expected: 4 * rounds}, (name, per_bomb[name])
    assert results["memory-minimum-over-limit"]["load"] == 400
    assert results["module-over-8mib"]["upload"] == 413
    assert all(s == 200 for s, _, _ in healthy), [h for h in healthy if h[0] != 200][:3]
    # 24 calls in flight at most, each under a 16-64 MiB cap: bounded well below that sum
    assert hwm_growth_mib < 24 * 64


def _cpu_ticks(agent: AgentProcess) -> int:
    """User plus system CPU time of the agent process, in clock ticks."""
    stat = Path(f"/proc/{agent.proc.pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.timeout(120)
async def test_one_fd_write_of_700_iovecs_stays_within_the_call_limits(
    agent: AgentProcess, figures: Figures
) -> None:
    # The report's reproduction: 700 iovecs over a 1 MiB memory asked the host for 700 MiB
    # (1.4 GiB allocated) under {memoryMiB: 1, timeoutMs: 50}.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        status, text = await agent.load(session, "iovecs", wasm_bombs.iovec_flood(700), 1, 50)
        assert status == 200, text
        hwm_before = agent.kib("VmHWM")
        answers = [await agent.invoke(session, "iovecs") for _ in range(3)]
        growth_mib = (agent.kib("VmHWM") - hwm_before) / 1024
    figures.update(
        statuses=[a[0] for a in answers],
        max_ms=round(max(a[1] for a in answers)),
        peak_rss_growth_mib=round(growth_mib),
    )
    for status, _ms, body in answers:
        # A limit error of the module: over the stdout cap (500) or out of time (504).
        assert status in (500, 504), (status, body)
        assert "stdout cap" in body["error"] or "timeout" in body["error"], body
    # At most the 16 MiB stdout cap per call is copied (the old host: 1,400 MiB).
    assert growth_mib < 128
    assert agent.alive()


@pytest.mark.timeout(120)
async def test_the_agent_answers_healthz_while_a_host_call_bomb_runs(
    agent: AgentProcess, figures: Figures
) -> None:
    # fd_write calls of two million iovecs each, in a loop: one such call held the old
    # host, and the event loop with it, for seconds (longer than the call's timeout).
    bomb = wasm_bombs.iovec_count_loop(pages=256)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        status, text = await agent.load(session, "iovec-count", bomb, 16, 2000)
        assert status == 200, text
        ticks = _cpu_ticks(agent)
        call = asyncio.create_task(agent.invoke(session, "iovec-count"))
        # Wait until the agent is busy with the bomb (a tenth of a second of its CPU): it
        # is another process, so poll its counters.
        for _ in range(3000):
            if _cpu_ticks(agent) >= ticks + 10 or call.done():
                break
            await asyncio.sleep(0.01)
        async with session.get(f"{agent.url}/healthz") as r:
            healthz = r.status
        bomb_running = not call.done()
        status, _ms, body = await call
    figures.update(healthz=healthz, answered_while_the_bomb_ran=bomb_running, bomb=status)
    assert healthz == 200
    assert bomb_running, "/healthz was answered only once the bomb had finished"
    assert status == 504, body


@pytest.mark.timeout(120)
async def test_eight_memories_share_one_memory_limit(agent: AgentProcess, figures: Figures) -> None:
    # Eight memories that each grow as far as allowed and touch every page: under a 64 MiB
    # limit they once used 64 MiB each, and metrics saw only the exported one (64 KiB).
    module = wasm_bombs.many_memories(8, touch=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        status, text = await agent.load(session, "memories", module, 64, 10_000)
        assert status == 200, text
        hwm_before = agent.kib("VmHWM")
        answers = [await agent.invoke(session, "memories") for _ in range(3)]
        growth_mib = (agent.kib("VmHWM") - hwm_before) / 1024
        async with session.get(
            f"{agent.url}/functions/memories/metrics",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            peak = (await r.json())["versions"]["1.0.0"]["memoryPeakBytes"]
    figures.update(
        statuses=[a[0] for a in answers],
        peak_rss_growth_mib=round(growth_mib),
        memory_peak_mib=round(peak / 2**20, 1),
    )
    assert [a[0] for a in answers] == [200, 200, 200]
    assert growth_mib < 2 * 64  # one call's 64 MiB, and slack (the old host: 7 x 64 MiB)
    # The real peak: all eight memories, within the limit.
    assert 7 * 7 * 2**20 < peak <= 64 * 2**20
