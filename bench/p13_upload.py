"""P13: one new 5 MiB module on one agent: upload → serving.

One agent process (`gitopsd agent`, one endpoint) that already serves 10 other functions.
Each run takes a module the agent has never seen (bench/big_modules.py: 5 MiB, ~64 KiB of
code), and times, from this client: `PUT /modules/{sha256}` (digest check, compile, store),
`PUT /functions/{fn}/versions/1` (load: file verified, link check, one instantiation,
compiled code written to the agent's cache) and the first `POST /fn/{fn}` answered by it.
Each run is a new function, so its first version takes all traffic at once.

Baseline, in turns with it: `Runtime.compile` of another new module of the same shape in
this process (a fresh Runtime, no cache): the compile that no upload of new code avoids.

Sizes: `--param P13.reps=N`.
"""

from __future__ import annotations

import http.client
import time

from bench import big_modules
from bench.harness import Context, Row, median
from bench.p12_cold_start import Agent, call, deploy

WARM_FUNCTIONS = 10
FIRST_NEW = 1000  # module ids of the timed uploads (P12's are 0..99)


def compile_alone(index: int) -> float:
    from gitopsd.agent.runtime import Runtime

    wasm = big_modules.module(index)
    runtime = Runtime(workers=1, pool_slots=4)
    try:
        start = time.perf_counter()
        runtime.compile(wasm)
        return time.perf_counter() - start
    finally:
        runtime.close()


def run(ctx: Context) -> list[Row]:
    reps = ctx.reps(5, 2)
    agent = Agent(ctx.work / "agent")
    samples: list[float] = []
    base: list[float] = []
    try:
        agent.start()
        for i in range(WARM_FUNCTIONS):
            deploy(agent.url, f"warm-{i}", big_modules.module(500 + i))
        for k in range(reps):
            index = FIRST_NEW + 2 * k
            wasm = big_modules.module(index)
            conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=60)
            try:
                start = time.perf_counter()
                deploy(agent.url, f"new-{k}", wasm)
                got = call(conn, f"new-{k}")
                samples.append(time.perf_counter() - start)
            finally:
                conn.close()
            if got != big_modules.reply(index):
                raise RuntimeError(f"new-{k} answered {got[:60]!r}")
            base.append(compile_alone(index + 1))
            ctx.log(
                f"P13 upload -> serving {samples[-1] * 1000:.0f} ms "
                f"(compile alone {base[-1] * 1000:.0f} ms)"
            )
    finally:
        agent.stop()
    m = median(samples)
    return [
        Row(
            id="P13",
            measure="upload -> serving, one new 5 MiB module on one agent",
            unit="ms",
            median=m * 1000,
            baseline=median(base) * 1000,
            baseline_measure="Runtime.compile of a new module of the same shape, in-process",
            target="<= 150 ms",
            ok=m <= 0.150,
            samples=[s * 1000 for s in samples],
            baseline_samples=[s * 1000 for s in base],
            note="PUT /modules + PUT .../versions/1 + first POST /fn answered, one client "
            "(urllib, new connections); 5 MiB modules of ~64 KiB code and a data segment "
            f"(bench/big_modules.py); the agent serves {WARM_FUNCTIONS} other functions",
        )
    ]
