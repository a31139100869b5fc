"""`rediff` diffs only what changed, and always returns exactly what the full `diff` does."""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest

from gitopsd import diff_incremental
from gitopsd.diff import diff
from gitopsd.diff_incremental import DiffBase, rediff
from gitopsd.fleet.live import LiveFunction, LiveNode, LiveState, settled_function
from gitopsd.manifest.desired import DesiredFunction, DesiredNode, DesiredState
from gitopsd.manifest.models import EdgeFunctionSpec
from gitopsd.manifest.modules import CompiledModule

REGIONS = 4
NODES = 12


def function(i: int, version: str = "1.0.0", sha: str | None = None) -> DesiredFunction:
    name = f"fn-{i:03d}"
    spec = EdgeFunctionSpec.model_validate(
        {
            "version": version,
            "module": f"modules/{name}.wasm",
            "targets": {"regions": [f"region-{i % REGIONS}"]},
            "strategy": {"type": "blue-green"},
        }
    )
    module = CompiledModule(f"modules/{name}.wasm", sha or f"{i:064x}", b"")
    return DesiredFunction(name, spec, module, f"functions/{name}.yaml:1")


def nodes() -> dict[str, DesiredNode]:
    return {
        f"edge-{n}": DesiredNode(
            f"edge-{n}",
            f"http://127.0.0.1:{20000 + n}",
            f"region-{n % REGIONS}",
            MappingProxyType({}),
            f"nodes.yaml:{n + 1}",
        )
        for n in range(NODES)
    }


def state(commit: str, fns: dict[str, DesiredFunction]) -> DesiredState:
    return DesiredState(commit, nodes(), dict(fns))


def settled_live(desired: DesiredState) -> dict[str, dict[str, LiveFunction]]:
    per_node: dict[str, dict[str, LiveFunction]] = {n: {} for n in desired.nodes}
    for name, fn in desired.functions.items():
        for node in desired.targets_of(name):
            per_node[node][name] = settled_function(fn.spec.version, fn.module.sha256)
    return per_node


def live_of(per_node: dict[str, dict[str, LiveFunction]]) -> LiveState:
    return LiveState(nodes={n: LiveNode(n, "r", 1, None, None, fns) for n, fns in per_node.items()})


def test_a_changed_manifest_is_the_only_function_diffed(monkeypatch: pytest.MonkeyPatch) -> None:
    fns = {f.name: f for f in (function(i) for i in range(40))}
    desired = state("a" * 40, fns)
    live = live_of(settled_live(desired))
    base = DiffBase.full(desired, live)
    assert base.changes.changes == ()
    seen: list[str] = []
    real = diff_incremental._function_change
    monkeypatch.setattr(
        diff_incremental,
        "_function_change",
        lambda fn, d, lv: seen.append(fn.name) or real(fn, d, lv),
    )
    changed = dict(fns)
    changed["fn-007"] = function(7, "2.0.0", "f" * 64)
    desired2 = state("b" * 40, changed)
    got = rediff(base, desired2, live, ["functions/fn-007.yaml", "modules/fn-007.wasm"])
    assert seen == ["fn-007"]
    assert got.changes == diff(desired2, live)
    assert [c.function for c in got.changes.changes] == ["fn-007"]


@pytest.mark.parametrize("seed", range(25))
def test_rediff_equals_the_full_diff_over_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    fns = {f.name: f for f in (function(i) for i in range(30))}
    desired = state(f"{0:040x}", fns)
    per_node = settled_live(desired)
    live = live_of(per_node)
    base = DiffBase.full(desired, live)
    next_index = 30
    for step in range(1, 12):
        fns = dict(fns)
        per_node = {n: dict(f) for n, f in per_node.items()}
        paths: list[str] = []
        for _ in range(rng.randint(0, 3)):
            kind = rng.choice(["version", "add", "remove", "node", "stray", "retarget"])
            name = rng.choice(sorted(fns))
            index = int(name.split("-")[1])
            if kind == "version":
                fns[name] = function(index, f"{step}.0.0", f"{step:02x}" * 32)
                paths += [f"functions/{name}.yaml", f"modules/{name}.wasm"]
            elif kind == "add":
                added = function(next_index)
                next_index += 1
                fns[added.name] = added
                paths.append(f"functions/{added.name}.yaml")
            elif kind == "remove" and len(fns) > 1:
                del fns[name]
                paths.append(f"functions/{name}.yaml")
            elif kind == "retarget":
                fns[name] = function(index + 1, "1.0.0", fns[name].module.sha256)
                fns[name] = DesiredFunction(
                    name, fns[name].spec, fns[name].module, f"functions/{name}.yaml:1"
                )
                paths.append(f"functions/{name}.yaml")
            elif kind == "node":
                node = rng.choice(sorted(per_node))
                target = rng.choice(sorted(fns))
                fn = fns[target]
                per_node[node][target] = settled_function(fn.spec.version, fn.module.sha256)
            else:  # a function live on a node that Git does not have
                node = rng.choice(sorted(per_node))
                per_node[node][f"stray-{step}"] = settled_function("0.1.0", "e" * 64)
        desired = state(f"{step:040x}", fns)
        # Unchanged nodes keep their LiveNode (as the fleet client's cache does on a 304).
        live = LiveState(
            nodes={
                n: (
                    live.nodes[n]
                    if per_node[n] == dict(live.nodes[n].functions)
                    else LiveNode(n, "r", step + 1, None, None, per_node[n])
                )
                for n in per_node
            }
        )
        base = rediff(base, desired, live, paths)
        assert base.changes == diff(desired, live), (seed, step)


def test_other_nodes_in_git_fall_back_to_the_full_diff() -> None:
    fns = {f.name: f for f in (function(i) for i in range(10))}
    desired = state("a" * 40, fns)
    live = live_of(settled_live(desired))
    base = DiffBase.full(desired, live)
    fewer = DesiredState("b" * 40, dict(list(nodes().items())[:6]), fns)
    assert rediff(base, fewer, live, []).changes == diff(fewer, live)
