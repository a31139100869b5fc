"""A simulated fleet for the controller-side rows (P3, P8 at 10,000 functions x 5,000 nodes).

NOT an agent. For figures about the controller's CPU and memory the agents are only the
source of live state, and 5,000 real agents holding a million loaded instances do not fit
on this machine. This is a lightweight inventory-only endpoint: one process listens on N
ports, and each port answers as one agent that already runs what Git says, speaking the
agent's real HTTP API for what a no-op pass uses (docs/agent-api.md):

- `GET /healthz` → `{"status": "ok", "node": NAME}`;
- `GET /inventory` (bearer token checked) → the agent's inventory document with an ETag;
  `If-None-Match` with that ETag → 304; with `?wait=SECONDS` too, the request is held
  until the wait ends (the inventory never changes), then 304: the daemon's watch;
- anything else → 404 `{"error": ...}` (a pass that tried to deploy would fail loudly).

It runs no WASM. Shape (as bench/bigfleet.py, more regions): node i is in region i mod R,
function f is targeted at region f mod R, so each function runs on N/R nodes and each node
runs F/R functions (10,000 x 5,000 with R = 50: 200 functions per node, 100 nodes per
function, a million function-node pairs). Git holds the functions 100 to a manifest file and
one module per 10 functions (the synced path's limit of 10,000 entries). Every node of a
region answers the same functions; the JSON of a region's functions is built once.

`build(root, functions, nodes, regions)` writes the Git repository (one manifest and one
.wasm per function, one file of EdgeNodes) and the digests the endpoints report;
`SimFleet.start()` runs `python -m bench.inventory_fleet` in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.support import (
    TOKEN,
    GitRemote,
    free_port_range,
    function_manifest,
    handler_wasm,
    http_ok,
    nodes_manifest,
    quiet_env,
    sha256,
    tail,
    wait_for,
)

VERSION = "1.0.0"
REGIONS = 50
# A synced path holds at most 10,000 files and directories (docs/manifest-reference.md,
# "Limits of the synced path"): 10,000 functions are written 100 to a manifest file, and
# every module serves 10 functions (1,000 distinct modules).
FUNCTIONS_PER_FILE = 100
FUNCTIONS_PER_MODULE = 10
LOADED_AT = 1_700_000_000.0


def regions(count: int) -> list[str]:
    return [f"region-{r}" for r in range(count)]


@dataclass
class SimFleet:
    """The Git side and the simulated endpoints of one fleet shape."""

    root: Path
    remote: GitRemote
    functions: int
    nodes: int
    regions: int
    base_port: int
    token_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "inventory-fleet.log"

    def start(self, timeout: float = 300.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "bench.inventory_fleet",
            "--serve",
            str(self.root / "digests.json"),
            "--base-port",
            str(self.base_port),
            "--nodes",
            str(self.nodes),
            "--regions",
            str(self.regions),
            "--token-file",
            str(self.token_file),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"), env=quiet_env()
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"inventory fleet exited: {tail(self.log)}")
            return http_ok(f"http://127.0.0.1:{self.base_port + self.nodes - 1}/healthz")

        wait_for(up, timeout, f"{self.nodes} simulated endpoints", step=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> SimFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build(root: Path, functions: int, nodes: int, region_count: int = REGIONS) -> SimFleet:
    """Write the Git repository and the digests every endpoint reports; start nothing."""
    root.mkdir(parents=True, exist_ok=True)
    names = regions(region_count)
    base_port = free_port_range(nodes)
    node_names = [f"edge-{i}" for i in range(nodes)]
    remote = GitRemote(root / "git")
    remote.write("nodes.yaml", nodes_manifest(node_names, base_port, names))
    modules = max(1, functions // FUNCTIONS_PER_MODULE)
    module_digests: list[str] = []
    for m in range(modules):
        wasm = handler_wasm(f"module {m} {VERSION}\n")
        module_digests.append(sha256(wasm))
        remote.write(f"functions/modules/m{m:05d}.wasm", wasm)
    digests = [module_digests[f % modules] for f in range(functions)]
    for start in range(0, functions, FUNCTIONS_PER_FILE):
        docs = [
            function_manifest(
                f"fn-{f:05d}",
                VERSION,
                f"modules/m{f % modules:05d}.wasm",
                regions=[names[f % region_count]],
            )
            for f in range(start, min(functions, start + FUNCTIONS_PER_FILE))
        ]
        remote.write(f"functions/group-{start // FUNCTIONS_PER_FILE:04d}.yaml", "---\n".join(docs))
    remote.commit(f"{functions} functions on {nodes} nodes")
    remote.push()
    (root / "digests.json").write_text(json.dumps(digests))
    token_file = root / "agent-token"
    token_file.write_text(TOKEN + "\n")
    return SimFleet(root, remote, functions, nodes, region_count, base_port, token_file)


def shared(ctx_work: Path, functions: int, nodes: int) -> SimFleet:
    """The simulated fleet of this size for this run: built by the first figure needing it."""
    root = ctx_work.parent / f"simfleet-{functions}x{nodes}"
    found = _built.get(root)
    if found is None:
        found = _built[root] = build(root, functions, nodes, min(REGIONS, nodes))
    return found


_built: dict[Path, SimFleet] = {}


# the server ---------------------------------------------------------------------------------


def region_functions(digests: list[str], region: int, region_count: int) -> str:
    """The JSON text of the `functions` object of every node in `region`."""
    entries = {}
    for f in range(region, len(digests), region_count):
        entries[f"fn-{f:05d}"] = {
            "versions": {
                VERSION: {
                    "sha256": digests[f],
                    "limits": {"memoryMiB": 64, "timeoutMs": 100},
                    "healthCheck": {"function": "health_check", "expect": "OK"},
                    "loadedAt": LOADED_AT,
                }
            },
            "traffic": [{"version": VERSION, "percent": 100}],
            "rules": [],
            "stickyHeader": "X-User-Id",
        }
    return json.dumps(dict(sorted(entries.items())), separators=(",", ":"))


async def serve(digests: list[str], base_port: int, nodes: int, region_count: int, token: str):  # type: ignore[no-untyped-def]
    from aiohttp import web

    boot = secrets.token_hex(6)
    fragments = [region_functions(digests, r, region_count) for r in range(region_count)]
    etag = f'"{boot}-1"'
    expected = f"Bearer {token}"
    used = sum(1 for _ in digests) * 64 // region_count  # 64 MiB per loaded version

    def node_of(request: web.Request) -> int:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        return int(sock[1]) - base_port if sock else -1

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node": f"edge-{node_of(request)}"})

    async def inventory(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        if etag in request.headers.getall("If-None-Match", ()):
            wait = request.query.get("wait")
            if wait is not None:
                await asyncio.sleep(min(float(wait), 300.0))
            return web.Response(status=304, headers={"ETag": etag})
        i = node_of(request)
        head = json.dumps(
            {
                "node": f"edge-{i}",
                "region": f"region-{i % region_count}",
                "labels": {},
                "generation": 1,
                "memoryBudgetMiB": max(1024, used * 2),
                "memoryUsedMiB": used,
            },
            separators=(",", ":"),
        )
        body = f'{head[:-1]},"functions":{fragments[i % region_count]}}}'
        return web.Response(text=body, content_type="application/json", headers={"ETag": etag})

    async def other(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "inventory-only bench endpoint: no deploys here"}, status=404
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/inventory", inventory)
    app.router.add_route("*", "/{tail:.*}", other)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    for i in range(nodes):
        await web.TCPSite(runner, "127.0.0.1", base_port + i, backlog=64).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inventory_fleet")
    parser.add_argument("--serve", type=Path, required=True, help="digests.json of build()")
    parser.add_argument("--base-port", type=int, required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--regions", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    digests = json.loads(args.serve.read_text())
    token = args.token_file.read_text().splitlines()[0].strip()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(digests, args.base_port, args.nodes, args.regions, token))
    os._exit(0)


if __name__ == "__main__":
    _main()
