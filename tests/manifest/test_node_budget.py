"""The YAML nodes of one commit are counted across all its files: many files of flow lists,
each within the byte limits, no longer hold the loader for minutes (red-team of issue 14,
finding 11)."""

from __future__ import annotations

import pytest

from gitopsd.manifest import yamltree
from tests.manifest.support import docs, function, load, node, problems, snapshot


def flow_list(items: int) -> str:
    return "[" + ", ".join("1" for _ in range(items)) + "]\n"


def test_the_node_budget_is_shared_by_every_file_of_a_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yamltree, "MAX_NODES", 5_000)
    files = {f"bulk/{n}.yaml": flow_list(3_000) for n in range(4)}  # 3,000 each: 12,000
    found = problems(snapshot(files))
    over = [p for p in found if "YAML nodes in all" in p]
    assert over and all(p.split(":")[0] in files for p in over)
    assert "more than 5,000 YAML nodes in all" in over[0]


def test_a_real_fleet_is_far_below_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamltree, "MAX_NODES", 5_000)
    nodes = docs(*(node(f"edge-{n}", port=9101 + n) for n in range(20)))
    functions = docs(*(function(f"fn-{n}") for n in range(40)))
    desired = load(snapshot({"nodes.yaml": nodes, "functions.yaml": functions}))
    assert len(desired.functions) == 40


def test_the_reference_states_the_budget_in_force() -> None:
    from gitopsd.source.bounded import limits_markdown

    assert f"{yamltree.MAX_NODES:,} YAML nodes in all" in " ".join(limits_markdown())
