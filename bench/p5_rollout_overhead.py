"""P5: a blue-green rollout to 100 agent endpoints, against the same HTTP calls made directly.

Engine: `Reconciler.rollout_function` (spec, journal in SQLite, strategy, engine, fleet
client) rolls a new version out to 100 endpoints (one `gitopsd agent --count 100` process),
timed from the start of the rollout to its end. Baseline: the HTTP calls that rollout made
(recorded step by step), issued for the next version with a bare aiohttp session and the
same concurrency limit (64): each step's calls for one node in order, the nodes
concurrently, the steps one after another. Runs alternate (engine, direct, engine, ...),
so both do the same transition (old version retired, new version uploaded and loaded).
Goal 1.1x (issue 21; was 1.2x). Sizes: `--param P5.count=N`, `P5.reps=N` (pairs of runs).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import defaultdict
from typing import Any

import aiohttp

from bench.harness import Context, Row, median
from bench.rollouts import CONCURRENCY, Call, Rollouts
from bench.support import TOKEN


def version(k: int) -> str:
    return f"1.{k:03d}.0"  # no version is a substring of another: safe to substitute


def substitute(calls: list[Call], mapping: dict[str, str], modules: dict[str, bytes]) -> list[Call]:
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))

    def sub(text: str) -> str:
        return pattern.sub(lambda m: mapping[m[0]], text)

    out = []
    for c in calls:
        body = None if c.json is None else json.loads(sub(json.dumps(c.json)))
        data = c.data
        if data is not None:
            digest = sub(c.path.rsplit("/", 1)[1])
            data = modules[digest]
        out.append(Call(c.step, c.node, c.method, sub(c.path), body, data))
    return out


async def direct(calls: list[Call], addresses: dict[str, str]) -> float:
    """Issue `calls` step by step (per node in order, nodes concurrently); seconds taken."""
    steps: dict[int, dict[str, list[Call]]] = defaultdict(lambda: defaultdict(list))
    for c in calls:
        steps[c.step][c.node].append(c)
    limit = asyncio.Semaphore(CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def node_calls(node_calls: list[Call]) -> None:
            for c in node_calls:
                extra = {"Content-Type": "application/wasm"} if c.data is not None else None
                url = addresses[c.node] + c.path
                async with (
                    limit,
                    session.request(c.method, url, json=c.json, data=c.data, headers=extra) as r,
                ):
                    await r.read()
                    if r.status >= 400 and not (r.status == 404 and c.method == "HEAD"):
                        raise RuntimeError(f"{c.method} {c.path} -> {r.status}")

        start = time.perf_counter()
        for step in sorted(steps):
            await asyncio.gather(*(node_calls(cs) for cs in steps[step].values()))
        return time.perf_counter() - start


async def measure(
    ctx: Context, rollouts: Rollouts, pairs: int
) -> tuple[list[float], list[float], int]:
    engine_s: list[float] = []
    direct_s: list[float] = []
    addresses = {n: rollouts.agents.url(i) for i, n in enumerate(rollouts.agents.names)}
    first = await rollouts.rollout(version(1))  # from nothing: not a blue-green transition
    assert first.state == "COMPLETED", first.state
    k = 1
    calls = 0
    for _ in range(pairs):
        got = await rollouts.rollout(version(k + 1))
        if got.state != "COMPLETED":
            raise RuntimeError(f"rollout ended {got.state}")
        engine_s.append(got.seconds)
        calls = len(got.calls)
        # The same calls, one version further: k -> k+1 becomes k+1 -> k+2.
        old_sha = next(c.path.rsplit("/", 1)[1] for c in got.calls if c.method == "HEAD")
        new_sha = rollouts.push(version(k + 2))
        mapping = {version(k + 1): version(k + 2), version(k): version(k + 1), old_sha: new_sha}
        replay = substitute(got.calls, mapping, rollouts.modules)
        direct_s.append(await direct(replay, addresses))
        # Tell the store what the direct calls did, so the next engine rollout starts clean.
        read = await rollouts.reconciler.read(rollouts.source)
        if read.changes.changes:
            raise RuntimeError(f"direct calls left changes: {read.changes.summary}")
        ctx.log(
            f"P5 engine {engine_s[-1] * 1000:.0f} ms, direct {direct_s[-1] * 1000:.0f} ms "
            f"({calls} calls)"
        )
        k += 2
    return engine_s, direct_s, calls


def run(ctx: Context) -> list[Row]:
    count = ctx.size("count", 10 if ctx.quick else 100)
    pairs = ctx.reps(7, 2)
    rollouts = Rollouts(ctx.work, count)
    try:
        rollouts.start()
        engine_s, direct_s, calls = asyncio.run(measure(ctx, rollouts, pairs))
    finally:
        rollouts.agents.stop()
    m, b = median(engine_s), median(direct_s)
    extra: dict[str, Any] = {"http_calls_per_rollout": calls}
    return [
        Row(
            id="P5",
            measure=f"blue-green rollout to {count} endpoints",
            unit="ms",
            median=m * 1000,
            baseline=b * 1000,
            baseline_measure="the same HTTP calls issued directly, same concurrency (64)",
            target="<= 1.1x baseline",
            was="<= 1.2x baseline",
            ok=m <= 1.1 * b,
            samples=[s * 1000 for s in engine_s],
            baseline_samples=[s * 1000 for s in direct_s],
            extra=extra,
            note=f"{calls} HTTP calls per rollout; {count} endpoints in one agent process",
        )
    ]
