"""RolloutSpec.node answers from an index built once per spec, with the scan's answers:
the first node of a name listed twice, KeyError(name) for a name not in the rollout."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gitopsd.rollout.spec import RolloutSpec, TargetNode


class CountingNodes(tuple[TargetNode, ...]):
    """A nodes tuple that counts how often it is walked through."""

    walks = 0

    def __iter__(self) -> Iterator[TargetNode]:
        CountingNodes.walks += 1
        return super().__iter__()


def spec(nodes: tuple[TargetNode, ...]) -> RolloutSpec:
    return RolloutSpec(
        function="api",
        version="2.0.0",
        commit="c" * 40,
        sha256="a" * 64,
        strategy={"type": "blue-green"},
        nodes=nodes,
    )


def scan(nodes: tuple[TargetNode, ...], name: str) -> TargetNode:
    """What RolloutSpec.node answered before the index: the first node of that name."""
    for n in nodes:
        if n.name == name:
            return n
    raise KeyError(name)


NODES = (
    TargetNode("a", "r1", "http://a", old_version="1.0.0"),
    TargetNode("b", "r1", "http://b", limits=(128.0, 300)),
    TargetNode("a", "r2", "http://a2", old_version="0.9.0"),  # a name listed twice
    TargetNode("c", "r2", "http://c", serving_new=True, unseen=True),
)


def test_node_answers_what_the_scan_answered() -> None:
    s = spec(NODES)
    for name in ("a", "b", "c"):
        assert s.node(name) is scan(NODES, name)
    assert s.node("a").region == "r1"  # the first of the two
    assert s.limits_of("b") == (128.0, 300)
    assert s.limits_of("a") == (64.0, 100)


@pytest.mark.parametrize("name", ["d", "", "A", "a "])
def test_an_unknown_node_is_a_key_error_naming_it(name: str) -> None:
    with pytest.raises(KeyError) as caught:
        spec(NODES).node(name)
    assert caught.value.args == (name,)
    with pytest.raises(KeyError):
        spec(()).node(name)


def test_lookups_do_not_walk_the_nodes_again() -> None:
    s = spec(CountingNodes(NODES))
    s.node("c")
    walked = CountingNodes.walks
    for _ in range(50):
        for name in ("a", "b", "c"):
            s.node(name)
        with pytest.raises(KeyError):
            s.node("nope")
    assert CountingNodes.walks == walked


def test_the_index_is_not_journaled_nor_compared() -> None:
    s = spec(NODES)
    s.node("a")  # builds the index
    assert "_by_name" not in s.to_json()
    back = RolloutSpec.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s
    assert back.node("b") == s.node("b")
