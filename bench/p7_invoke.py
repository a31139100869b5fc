"""P7: invocations of a trivial handler on one agent pinned to one core.

The agent (`gitopsd agent`, one endpoint) runs under `taskset -c 1`; the load generator runs
on core 0: wrk when it is installed (`apt-get install wrk`), else the bench's own minimal
keep-alive HTTP client (asyncio protocol) in a process of its own (the row says which).
The agent process's CPU use during the runs is recorded too: ~100% of its core means the
agent, not the load generator, is what limits the rate.

Baseline: `Runtime.call` of the same module in a bare loop on core 1 (fresh Store and
instance per call, stdout captured): what the agent would do with no HTTP at all.

Against workerd (issue 21): workerd serves the same `.wasm` on the same core with the same
client (bench/workerd.py), in two variants: one shared instance with an export call per
request, and a new instance per request. Rounds alternate (agent, workerd shared, workerd
per request) so that all three see the same stretch of machine time. When workerd is not
installed or cannot start, its rows say why and the bench goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench import workerd
from bench.harness import Context, Row, median, percentile
from bench.support import (
    TOKEN,
    AgentFleet,
    cpu_affinity,
    cpu_seconds,
    free_port,
    handler_wasm,
    sha256,
    wait_for,
)

CONNECTIONS = 8
AGENT_CPU = 1
LOAD_CPU = 0


def deploy(base: str, function: str, wasm: bytes) -> None:
    """Upload and load `function` on one agent (its first version gets all traffic)."""
    digest = sha256(wasm)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    calls: list[tuple[str, str, bytes, str]] = [
        ("PUT", f"/modules/{digest}", wasm, "application/wasm"),
        (
            "PUT",
            f"/functions/{function}/versions/1.0.0",
            json.dumps({"sha256": digest}).encode(),
            "application/json",
        ),
    ]
    for method, path, body, ctype in calls:
        req = urllib.request.Request(
            base + path, data=body, method=method, headers={**auth, "Content-Type": ctype}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status in (200, 201), r.status
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read().decode()}") from exc


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not found:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(found[1]) * _UNITS[found[2]]


def run_wrk(url: str, seconds: float, script: Path) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run on core LOAD_CPU."""
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(LOAD_CPU),
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    if re.search(r"Non-2xx or 3xx responses", out):
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return rps, p50, p99


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight at a time."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        length = 0
        for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        status = int(self.buf[9:12])
        del self.buf[: end + 4 + length]
        self.waiter.set_result(status)
        self.waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("connection closed"))


async def _raw_load(url: str, seconds: float) -> tuple[float, float, float]:
    """A minimal keep-alive HTTP client (asyncio protocol, no parsing beyond the status
    and Content-Length): cheap enough that one core of it outruns one core of agent."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Length: 4\r\nContent-Type: text/plain\r\n\r\nping"
    ).encode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        _transport, conn = await loop.create_connection(_Conn, host, port)
        assert conn.transport is not None
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            conn.waiter = loop.create_future()
            conn.transport.write(request)
            status = await conn.waiter
            if status != 200:
                raise RuntimeError(f"POST {url} -> {status}")
            latencies.append((time.perf_counter() - start) * 1000)
        conn.transport.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    took = time.perf_counter() - start
    return len(latencies) / took, percentile(latencies, 50), percentile(latencies, 99)


def run_client(url: str, seconds: float) -> tuple[float, float, float]:
    """The built-in load generator (`_raw_load`), in its own process on core LOAD_CPU."""
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(LOAD_CPU),
            sys.executable,
            "-m",
            "bench.p7_invoke",
            "--load",
            url,
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:  # say why: the client's own error, not only its exit status
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"load client against {url} failed: {' | '.join(tail)}")
    rps, p50, p99 = json.loads(out.stdout.strip().splitlines()[-1])
    return float(rps), float(p50), float(p99)


# A trivial aiohttp app: one route answering a fixed body, on the agent's loop (uvloop),
# core and client. Reported beside P7 because this VM's speed for HTTP work drifts by a
# third within an hour: it says how fast the machine was during the run. (The agent
# answers plain calls on its own HTTP path, not aiohttp's: agent/data_plane.py.)
_CEILING_APP = """
import asyncio, sys
import uvloop
from aiohttp import web

async def fn(request):
    await request.read()
    return web.Response(body=b"hello from the edge\\n", headers={"X-Gitopsd-Version": "1"})

async def main():
    app = web.Application()
    app.router.add_post("/fn/{fn}", fn)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Event().wait()

with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
    r.run(main())
"""


def http_ceiling(seconds: float) -> float:
    """Requests/s of a trivial aiohttp app on core AGENT_CPU, same client as the agent's."""
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", str(AGENT_CPU), sys.executable, "-c", _CEILING_APP, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _accepts(port), 30, "trivial aiohttp app", step=0.05)
        url = f"http://127.0.0.1:{port}/fn/hello"
        run_client(url, 1)  # warm-up
        return run_client(url, seconds)[0]
    finally:
        server.terminate()
        server.wait(10)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def bare_loop(wasm: bytes, seconds: float) -> float:
    """Calls per second of Runtime.call in a loop, on core AGENT_CPU."""
    from gitopsd.agent.runtime import MIB, Runtime

    runtime = Runtime()
    try:
        prepared = runtime.compile(wasm)
        env = [("REQUEST_METHOD", "POST"), ("PATH_INFO", "/fn/hello")]
        with cpu_affinity({AGENT_CPU}):
            for _ in range(200):  # warm up
                runtime.call(prepared, "_start", env=env, memory_bytes=64 * MIB, timeout_ms=100)
            calls = 0
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                result = runtime.call(
                    prepared, "_start", env=env, memory_bytes=64 * MIB, timeout_ms=100
                )
                assert result.ok, result.error
                calls += 1
            return calls / (time.perf_counter() - start)
    finally:
        runtime.close()


def run(ctx: Context) -> list[Row]:
    seconds = 3.0 if ctx.quick else 10.0
    reps = ctx.reps(3, 1)
    wasm = handler_wasm("hello from the edge\n")
    use_wrk = shutil.which("wrk") is not None
    tool = (
        f"wrk -t1 -c{CONNECTIONS}"
        if use_wrk
        else f"bench asyncio client, {CONNECTIONS} connections"
    )
    script = ctx.work / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.body = "ping"\n')
    results: list[tuple[float, float, float]] = []
    busy: list[float] = []
    peers, peer_problem, peer_version = start_workerd(ctx, wasm)
    peer_results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in peers}

    def load(url: str) -> tuple[float, float, float]:
        return run_wrk(url, seconds, script) if use_wrk else run_client(url, seconds)

    try:
        with AgentFleet(ctx.work, 1, name="p7", cpus=str(AGENT_CPU)) as agents:
            agents.start()
            deploy(agents.url(0), "hello", wasm)
            url = f"{agents.url(0)}/fn/hello"
            warm = run_wrk(url, 1, script) if use_wrk else run_client(url, 1)
            ctx.log(f"P7 warm-up: {warm[0]:.0f} req/s")
            for peer in peers.values():
                (run_wrk(peer.url, 1, script) if use_wrk else run_client(peer.url, 1))
            assert agents.proc is not None
            for _ in range(reps):
                cpu0, wall0 = cpu_seconds(agents.proc.pid), time.perf_counter()
                got = load(url)
                busy.append((cpu_seconds(agents.proc.pid) - cpu0) / (time.perf_counter() - wall0))
                ctx.log(
                    f"P7 {tool}: {got[0]:.0f} req/s, p50 {got[1]:.2f} ms, p99 {got[2]:.2f} ms; "
                    f"agent busy {busy[-1]:.0%} of its core"
                )
                results.append(got)
                for mode, peer in peers.items():
                    peer_results[mode].append(load(peer.url))
                    r = peer_results[mode][-1]
                    ctx.log(f"P7 workerd {mode}: {r[0]:.0f} req/s, p99 {r[2]:.2f} ms")
    finally:
        for peer in peers.values():
            peer.stop()
    bare = [bare_loop(wasm, min(seconds, 3.0)) for _ in range(reps)]
    ceiling = http_ceiling(min(seconds, 5.0))
    rps = median([r[0] for r in results])
    p50 = median([r[1] for r in results])
    p99 = median([r[2] for r in results])
    note = (
        f"agent on core {AGENT_CPU} (taskset), load on core {LOAD_CPU}: {tool}, {seconds:g}s runs; "
        f"agent process busy {median(busy):.0%} of its core; for reference, a trivial aiohttp "
        f"app on the same core and client: {ceiling:,.0f} req/s"
    )
    return [
        Row(
            id="P7",
            measure=f"invocations/s, 1 core ({'wrk' if use_wrk else 'asyncio client'})",
            unit="/s",
            median=rps,
            baseline=median(bare),
            baseline_measure="Runtime.call in a bare loop on one core (calls/s)",
            target="-",
            was=">= 3000/s",
            ok=rps >= 3000,
            samples=[r[0] for r in results],
            baseline_samples=bare,
            extra={
                "load_generator": tool,
                "agent_cpu_share": median(busy),
                "trivial_aiohttp_app_rps": ceiling,
            },
            note=note,
        ),
        Row(
            id="P7",
            measure="invocation latency p50",
            unit="ms",
            median=p50,
            target="-",
            ok=None,
            samples=[r[1] for r in results],
            note=note,
        ),
        Row(
            id="P7",
            measure="invocation latency p99",
            unit="ms",
            median=p99,
            target="-",
            was="<= 5 ms",
            ok=p99 <= 5,
            samples=[r[2] for r in results],
            note=note,
        ),
        *workerd_rows(results, peer_results, peer_problem, peer_version, tool),
    ]


def start_workerd(ctx: Context, wasm: bytes) -> tuple[dict[str, workerd.Workerd], str, str]:
    """The running workerd variants (none when it cannot run), why not, its version."""
    path, problem = workerd.binary()
    if path is None:
        ctx.log(f"P7 workerd: {problem}")
        return {}, problem, ""
    peers: dict[str, workerd.Workerd] = {}
    version = workerd.version(path)
    try:
        for mode in workerd.MODES:
            peer = workerd.Workerd(ctx.work, path, wasm, mode, AGENT_CPU)
            peers[mode] = peer
            peer.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        for peer in peers.values():
            peer.stop()
        problem = f"workerd {version} could not start: {str(exc)[:300]}"
        ctx.log(f"P7 {problem}")
        return {}, problem, version
    return peers, "", version


def workerd_rows(
    agent: list[tuple[float, float, float]],
    peers: dict[str, list[tuple[float, float, float]]],
    problem: str,
    version: str,
    tool: str,
) -> list[Row]:
    rps = median([r[0] for r in agent])
    if problem or not peers:
        return [
            Row(
                id="P7",
                measure="invocations/s against workerd (shared instance)",
                unit="/s",
                median=rps,
                target=">= 1.0x workerd",
                ok=None,
                samples=[r[0] for r in agent],
                note=f"NOT COMPARED: {problem or 'workerd did not run'}",
            )
        ]
    rows = []
    for mode, label in (("shared", "shared instance"), ("per-request", "instance per request")):
        got = peers[mode]
        base = median([r[0] for r in got])
        p99 = median([r[2] for r in got])
        shared = mode == "shared"
        rows.append(
            Row(
                id="P7",
                measure=f"invocations/s against workerd ({label})"
                if shared
                else f"  against workerd ({label})",
                unit="/s",
                median=rps,
                baseline=base,
                baseline_measure=f"workerd {version}, {label}, same .wasm, core and client",
                target=">= 1.0x workerd" if shared else "-",
                ok=rps >= base if shared else None,
                samples=[r[0] for r in agent],
                baseline_samples=[r[0] for r in got],
                extra={"workerd_version": version, "workerd_p99_ms": p99},
                note=f"workerd {version} ({label}: "
                + (
                    "one instance made at load, an export call per request"
                    if shared
                    else "a new instance per request, as the agent"
                )
                + f") on core {AGENT_CPU}, {tool} on core {LOAD_CPU}, rounds alternating "
                f"with the agent's; workerd p99 {p99:.2f} ms",
            )
        )
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_raw_load(args.load, args.seconds))))


if __name__ == "__main__":
    _main()
