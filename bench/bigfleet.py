"""The large fleet of P3 and P8: F functions on N agent endpoints, already in sync with Git.

Shape: N nodes in 10 regions; function i is targeted at region i mod 10 (so each function
runs on N/10 nodes and each node runs F/10 functions), each with a module of its own. Git
holds one manifest file per function, its compiled `.wasm`, and one file of EdgeNodes.

The agents start already running what Git says: their data dirs are written as a
deploying daemon would have left them (state.json and modules/), and every endpoint
restores from it (compiling each module once and instantiating every loaded version, as
on any restart). Deploying 100k function-node pairs through rollouts first would only
make the benchmark slow; the figures are about the steady state after it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.support import (
    AgentFleet,
    GitRemote,
    function_manifest,
    handler_wasm,
    nodes_manifest,
    sha256,
)

REGIONS = 10
VERSION = "1.0.0"


@dataclass
class BigFleet:
    remote: GitRemote
    agents: AgentFleet
    functions: int
    nodes: int


def regions() -> list[str]:
    return [f"region-{r}" for r in range(REGIONS)]


def build(root: Path, functions: int, nodes: int) -> BigFleet:
    """Write the Git repository and the agents' data dirs; start nothing."""
    names = regions()
    # Every node of a region holds all of the region's functions (64 MiB each): the budget
    # must admit them at restore (the agent restores what fits) and one more side by side.
    held = -(-functions // REGIONS)
    budget = max(1024, (held + 1) * 64)
    agents = AgentFleet(root / "agents", nodes, name="edge", memory_mib=budget)
    agents.base_port = _base_port(nodes)
    remote = GitRemote(root / "git")
    remote.write("nodes.yaml", nodes_manifest(agents.names, agents.base_port, names))
    pool = root / "modules"
    pool.mkdir(parents=True, exist_ok=True)
    per_node: dict[int, dict[str, object]] = {i: {} for i in range(nodes)}
    now = time.time()
    for f in range(functions):
        name = f"fn-{f:05d}"
        region = f % REGIONS
        wasm = handler_wasm(f"{name} {VERSION}\n")
        digest = sha256(wasm)
        (pool / f"{digest}.wasm").write_bytes(wasm)
        remote.write(f"functions/modules/{name}.wasm", wasm)
        remote.write(
            f"functions/{name}.yaml",
            function_manifest(name, VERSION, f"modules/{name}.wasm", regions=[names[region]]),
        )
        entry = {
            "versions": {
                VERSION: {
                    "sha256": digest,
                    "limits": {"memoryMiB": 64, "timeoutMs": 100},
                    "healthCheck": {"function": "health_check", "expect": "OK"},
                    "loadedAt": now,
                }
            },
            "traffic": [{"version": VERSION, "percent": 100}],
            "rules": [],
            "stickyHeader": "X-User-Id",
        }
        for i in range(region, nodes, REGIONS):
            per_node[i][name] = entry
    remote.commit(f"{functions} functions on {nodes} nodes")
    remote.push()
    for i, fns in per_node.items():
        data = agents.data_dir(i)
        modules = data / "modules"
        modules.mkdir(parents=True, exist_ok=True)
        for entry in fns.values():
            digest = entry["versions"][VERSION]["sha256"]  # type: ignore[index]
            os.link(pool / f"{digest}.wasm", modules / f"{digest}.wasm")
        state = {"format": 1, "generation": 1, "functions": fns}
        (data / "state.json").write_text(json.dumps(state))
    return BigFleet(remote, agents, functions, nodes)


def shared(ctx_work: Path, functions: int, nodes: int) -> BigFleet:
    """The fleet of this size for this run: built by the first figure that needs it."""
    root = ctx_work.parent / f"bigfleet-{functions}x{nodes}"
    found = _built.get(root)
    if found is None:
        found = _built[root] = build(root, functions, nodes)
    return found


_built: dict[Path, BigFleet] = {}


def _base_port(count: int) -> int:
    from bench.support import free_port_range

    return free_port_range(count)
