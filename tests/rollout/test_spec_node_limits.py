"""RolloutSpec with per-node limits (spec.overrides): journaled and read back, loaded per node,
and weighed per node by the blue-green capacity check."""

from __future__ import annotations

import json

from gitopsd.manifest.strategy_options import BlueGreenOptions
from gitopsd.rollout.spec import RolloutSpec, TargetNode
from gitopsd.rollout.steps import Finish
from gitopsd.rollout.strategies import strategy_for


def spec() -> RolloutSpec:
    return RolloutSpec(
        function="api",
        version="1.0.0",
        commit="c" * 40,
        sha256="a" * 64,
        strategy={"type": "blue-green"},
        nodes=(
            TargetNode("ap-1", "ap-south", "http://a", memory_free_mib=100.0, limits=(128.0, 300)),
            TargetNode("us-1", "us-east", "http://u", memory_free_mib=100.0),
        ),
    )


def test_node_limits_survive_the_journal_and_reach_the_load_body() -> None:
    back = RolloutSpec.from_json(json.loads(json.dumps(spec().to_json())))
    assert back == spec()
    assert back.load_body("ap-1")["limits"] == {"memoryMiB": 128.0, "timeoutMs": 300}
    assert back.load_body("us-1")["limits"] == {"memoryMiB": 64.0, "timeoutMs": 100}


def test_a_rollout_journaled_before_node_limits_reads_back() -> None:
    data = spec().to_json()
    for n in data["nodes"]:
        del n["limits"]
    assert RolloutSpec.from_json(data).node("ap-1").limits is None


def test_blue_green_checks_each_node_against_its_own_memory() -> None:
    # 100 MiB free: enough for us-1's 64 MiB, not for ap-1's 128 MiB.
    plan = strategy_for(BlueGreenOptions()).plan(spec().plan_context())
    first = next(plan)
    assert isinstance(first, Finish)
    assert first.message == (
        "not enough memory for blue and green side by side on ap-1: 128 MiB needed per node"
    )
