"""EdgeNode `spec.connect: dial-out`: either an address or dial-out, with file:line problems."""

from __future__ import annotations

from gitopsd.manifest.models import dial_out_address, is_dial_out
from tests.manifest.support import docs, function, load, node, problems, snapshot, yaml


def dial_out(name: str, extra: str = "") -> str:
    return yaml(
        f"""
        apiVersion: gitopsd/v1
        kind: EdgeNode
        metadata: {{name: {name}}}
        spec: {{connect: dial-out, region: eu-central{extra}}}
        """
    )


def test_a_dial_out_node_loads_beside_an_addressed_one() -> None:
    files = {"fleet.yaml": docs(node("edge-a"), dial_out("edge-nat")), "f.yaml": function("api")}
    desired = load(snapshot(files))
    assert desired.nodes["edge-a"].address == "http://127.0.0.1:9101"
    assert desired.nodes["edge-nat"].address == dial_out_address("edge-nat")
    assert is_dial_out(desired.nodes["edge-nat"].address)
    assert desired.nodes["edge-nat"].region == "eu-central"


def test_two_dial_out_nodes_do_not_clash_as_a_shared_address() -> None:
    desired = load(snapshot({"fleet.yaml": docs(dial_out("edge-x"), dial_out("edge-y"))}))
    assert desired.nodes["edge-x"].address != desired.nodes["edge-y"].address


def test_address_and_dial_out_together_is_a_problem_at_the_spec_line() -> None:
    found = problems(
        snapshot({"fleet.yaml": dial_out("edge-nat", ', address: "http://127.0.0.1:9"')})
    )
    assert len(found) == 1
    assert found[0].startswith("fleet.yaml:4: ")
    assert "not both" in found[0]


def test_neither_address_nor_dial_out_is_a_problem_naming_both_ways() -> None:
    text = yaml(
        """
        apiVersion: gitopsd/v1
        kind: EdgeNode
        metadata: {name: edge-lost}
        spec:
          region: us-east
        """
    )
    found = problems(snapshot({"fleet.yaml": text}))
    assert len(found) == 1
    assert found[0].startswith("fleet.yaml:4: ")
    assert "connect: dial-out" in found[0]


def test_connect_takes_only_dial_out() -> None:
    found = problems(snapshot({"fleet.yaml": dial_out("edge-nat").replace("dial-out", "dial-in")}))
    assert len(found) == 1
    assert found[0].startswith("fleet.yaml:4: ")
    assert "dial-out" in found[0]
