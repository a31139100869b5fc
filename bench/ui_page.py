"""UI1-UI3: the status page (gitopsd/ui) at scale, and how fast a step reaches the browser.

UI1 is the time to first byte of `GET /` (the overview) with 2,000 functions on 500 nodes in
5 regions: a state database with one finished rollout per function and 10 canaries under
way (journals, 500-node specs), 50 nodes with shared traffic, as the daemon's ports would
hand them over. UI2 is that answer's size as the browser receives it (gzip). UI3 is the
delay from an engine step event (`Engine(on_event=...)` → the daemon's EventBus) to its
arrival in Debian's Chromium on that overview over `GET /events`, measured by the page
itself (`window.gitopsd.lastEventDelayMs`, both clocks are this machine's). Sizes:
`UI.functions`, `UI.nodes`.
"""

from __future__ import annotations

import socket
import statistics
import time
import zlib
from pathlib import Path
from typing import Any

from bench.harness import Context, Row, median
from gitopsd.fleet.live import FunctionTable, LiveNode, LiveState, _shared, settled_function
from gitopsd.manifest.desired import DesiredFunction, DesiredNode, DesiredState
from gitopsd.manifest.models import EdgeFunctionSpec
from gitopsd.manifest.modules import CompiledModule
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.rollout.spec import RolloutSpec, TargetNode
from gitopsd.rollout.steps import Wait
from gitopsd.store.sqlite import RolloutRow, SqliteStore
from gitopsd.ui.events import EventBus
from gitopsd.ui.ports import CommitInfo, UiPorts, no_notes
from gitopsd.ui.standalone import PageThread
from gitopsd.ui.views import PAGE_SIZE

REGIONS = ("ap-south", "eu-central", "eu-west", "us-east", "us-west")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ACTIVE = 10  # canaries under way
SPLIT_NODES = 50  # nodes where those canaries share traffic


def _state(work: Path, functions: int, nodes: int) -> tuple[SqliteStore, DesiredState, LiveState]:
    names = [f"fn-{i:05d}" for i in range(functions)]
    node_names = [f"edge-{REGIONS[i % len(REGIONS)]}-{i:04d}" for i in range(nodes)]
    desired_nodes = {
        n: DesiredNode(n, f"http://10.0.{i // 250}.{i % 250}:9101", REGIONS[i % 5], {}, "n:1")
        for i, n in enumerate(node_names)
    }
    module = CompiledModule("modules/fn.wat", "ab" * 32, b"")
    specs = {
        "canary": EdgeFunctionSpec.model_validate(
            {"version": "2.0.0", "module": "m.wat", "strategy": {"type": "canary"}}
        ),
        "stable": EdgeFunctionSpec.model_validate(
            {"version": "1.0.0", "module": "m.wat", "strategy": {"type": "rolling"}}
        ),
    }
    desired_fns = {
        n: DesiredFunction(n, specs["canary" if i < ACTIVE else "stable"], module, f"f/{n}.yaml:1")
        for i, n in enumerate(names)
    }
    desired = DesiredState("c0ffee" * 6 + "abcd", desired_nodes, desired_fns)
    settled = {n: settled_function("1.0.0", "ab" * 32) for n in names}
    uniform = FunctionTable(settled)
    split = FunctionTable(
        settled
        | {
            n: _shared(
                (("1.0.0", "ab" * 32), ("2.0.0", "cd" * 32)), (("2.0.0", 10.0), ("1.0.0", 90.0))
            )
            for n in names[:ACTIVE]
        }
    )
    live = LiveState(
        nodes={
            n: LiveNode(n, REGIONS[i % 5], 1, 4096.0, 1800.0, split if i < SPLIT_NODES else uniform)
            for i, n in enumerate(node_names)
        }
    )
    store = SqliteStore(work / "state")
    targets = tuple(
        TargetNode(n, desired_nodes[n].region, desired_nodes[n].address, "1.0.0")
        for n in node_names
    )
    now = time.time()
    for i, name in enumerate(names):
        for version, state in (("1.0.0", "COMPLETED"), ("2.0.0", "IN_PROGRESS")):
            if version == "2.0.0" and i >= ACTIVE:
                continue
            spec = RolloutSpec(
                name,
                version,
                desired.commit,
                "ab" * 32,
                {"type": "canary", "stages": [10, 50, 100], "evaluationPeriod": 300},
                targets if state == "IN_PROGRESS" else targets[:1],
            )
            rollout_id = f"{name}-{version}"
            store.create_rollout(
                RolloutRow(
                    rollout_id,
                    name,
                    version,
                    desired.commit,
                    "canary",
                    state,
                    "",
                    "wait 5m0s (evaluation of stage 1 (10%))",
                    spec.to_json(),
                    now - 600 + (300 if state == "IN_PROGRESS" else 0),
                    now - 60,
                    None if state == "IN_PROGRESS" else now - 300,
                    False,
                )
            )
    return store, desired, live


def _first_byte(port: int, path: str) -> tuple[float, int, int, float]:
    """(seconds to the first byte of the answer, gzip body bytes, plain bytes, CPU seconds
    this process spent meanwhile: the server's work, since the client only waits)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\n"
            "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        ).encode()
        start, cpu = time.perf_counter(), time.process_time()
        sock.sendall(request)
        first = sock.recv(1)
        ttfb = time.perf_counter() - start
        cpu = time.process_time() - cpu
        chunks = [first]
        while data := sock.recv(65536):
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    assert b"content-encoding: gzip" in head.lower(), head
    plain = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    return ttfb, len(body), len(plain), cpu


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _until(page: Any, condition: str, timeout: float = 10.0) -> None:
    """Poll `condition` in the page (the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => {condition}"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never met {condition!r}")
        time.sleep(0.002)


def _event_delays(server: PageThread, bus: EventBus, count: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    delays: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.port}/")
        _until(page, "document.getElementById('live').dataset.state === 'on'")
        for i in range(count):
            seen = page.evaluate("window.gitopsd.events")
            event = RolloutEvent("fn-00000-2.0.0", "fn-00000", "2.0.0", i, Wait(300, "bench"), None)
            server.loop.call_soon_threadsafe(bus.rollout_sink, event)
            _until(page, f"window.gitopsd.events > {seen}")
            delays.append(float(page.evaluate("window.gitopsd.lastEventDelayMs")))
            page.wait_for_timeout(300)  # the page re-reads the overview after each event
        browser.close()
    return delays


def run(ctx: Context) -> list[Row]:
    functions = ctx.size("functions", 500 if ctx.quick else 2000)
    nodes = ctx.size("nodes", 100 if ctx.quick else 500)
    reps = ctx.reps(21, 5)
    store, desired, live = _state(ctx.work, functions, nodes)
    bus = EventBus()

    async def live_port() -> LiveState:
        return live

    async def commit_port(sha: str) -> CommitInfo:
        return CommitInfo(
            sha, "bench commit", "Bench <bench@example.test>", time.time(), "unsigned"
        )

    ports = UiPorts(store, bus, lambda: desired, live_port, commit_port, no_notes)
    server = PageThread(ports)
    try:
        _first_byte(server.port, "/")  # templates compiled, caches warm
        samples = [_first_byte(server.port, "/") for _ in range(reps)]
        ttfb = [s[0] * 1000 for s in samples]
        cpu = [s[3] * 1000 for s in samples]
        gz = samples[-1][1] / 1024
        plain = samples[-1][2] / 1024
        ctx.log(f"UI overview: {median(ttfb):.1f} ms to first byte, {gz:.0f} KiB gzip")
        delays = _event_delays(server, bus, ctx.reps(20, 5))
    finally:
        server.close()
        store.close()
    size = f"{functions} functions on {nodes} nodes"
    return [
        Row(
            id="UI1",
            measure=f"status page overview, time to first byte ({size})",
            unit="ms",
            median=median(ttfb),
            target="< 100 ms",
            ok=median(ttfb) < 100,
            samples=ttfb,
            extra={"server_cpu_ms_median": round(median(cpu), 1)},
            note=f"{reps} runs; p90 {statistics.quantiles(ttfb, n=10)[-1]:.1f} ms; the server's "
            f"CPU time {median(cpu):.0f} ms (what the wall time is on an idle core)",
        ),
        Row(
            id="UI2",
            measure=f"status page overview, bytes sent gzip ({size})",
            unit="KiB",
            median=gz,
            target="< 500 KB",
            ok=gz * 1024 < 500_000,
            samples=[gz],  # the same page each run: one size
            extra={"uncompressed_kib": round(plain, 1)},
            note=f"{plain:.0f} KiB uncompressed; functions {PAGE_SIZE} a page, 500 nodes listed",
        ),
        Row(
            id="UI3",
            measure="engine step event to the browser (SSE, Chromium)",
            unit="ms",
            median=median(delays),
            target="< 1000 ms",
            ok=max(delays) < 1000,
            samples=delays,
            note=f"{len(delays)} events; max {max(delays):.1f} ms",
        ),
    ]
