"""The shipped example (used by `make demo`) validates and syncs against real local agents."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.clirunner import Gitopsd
from tests.fleetfixture import running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import HookClock, Syncer

EXAMPLE = Path(__file__).resolve().parents[1] / "manifests-example"


def test_example_validates_and_every_function_completes(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "git")
    shutil.copytree(EXAMPLE, remote.work, dirs_exist_ok=True)
    nodes_file = remote.work / "nodes" / "fleet.yaml"
    with running_fleet(tmp_path / "fleet") as fleet:
        for doc in yaml.safe_load_all(nodes_file.read_text()):
            fleet.add(doc["metadata"]["name"], doc["spec"]["region"], **doc["metadata"]["labels"])
        nodes_file.write_text(fleet.manifests())
        remote.commit_push("example")
        assert len(fleet.nodes) >= 6 and len({n.region for n in fleet.nodes.values()}) == 3

        assert Gitopsd(tmp_path / "s1")("validate", str(remote.bare)).code == 0
        report = Syncer(tmp_path / "state", remote, HookClock())()
        states = {r.function: r.state for r in report.results}
        strategies = {r.strategy for r in report.results}
        assert strategies == {
            "rolling",
            "blue-green",
            "canary",
            "regional",
            "ab-test",
            "feature-flag",
        }
        assert set(states.values()) == {"COMPLETED"}, report.results
        # image-processor's override: 128 MiB on the ap-south nodes, spec.limits elsewhere.
        memory = {
            n: fleet.inventory(n)["functions"]["image-processor"]["versions"]["1.2.0"]["limits"][
                "memoryMiB"
            ]
            for n in fleet.nodes
        }
        assert memory == {n: 128 if "ap-south" in n else 64 for n in fleet.nodes}
        for function in states:
            assert None not in {
                v
                for n, v in fleet.serving(function).items()
                if n in _targets(function, fleet.nodes)
            }


def _targets(function: str, nodes: dict[str, object]) -> set[str]:
    text = (EXAMPLE / "functions" / f"{function}.yaml").read_text()
    spec = yaml.safe_load(text)["spec"]
    targets = spec.get("targets") or {}
    regions = targets.get("regions")
    selector = targets.get("selector") or {}
    out = set()
    for name, node in nodes.items():
        region = getattr(node, "region", "")
        labels = getattr(node, "labels", {})
        if regions and region not in regions:
            continue
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        out.add(name)
    return out


def test_the_examples_holiday_freeze_holds_geo_lookup_back(tmp_path: Path) -> None:
    """geo-lookup's deny window (24-26 December, Berlin): synced on Christmas Day, it waits
    and says when it starts; every other function rolls out."""
    from datetime import UTC, datetime

    remote = GitRemote(tmp_path / "git")
    shutil.copytree(EXAMPLE, remote.work, dirs_exist_ok=True)
    nodes_file = remote.work / "nodes" / "fleet.yaml"
    with running_fleet(tmp_path / "fleet") as fleet:
        for doc in yaml.safe_load_all(nodes_file.read_text()):
            fleet.add(doc["metadata"]["name"], doc["spec"]["region"], **doc["metadata"]["labels"])
        nodes_file.write_text(fleet.manifests())
        remote.commit_push("example")
        clock = HookClock()
        christmas = datetime(2026, 12, 25, 12, 0, tzinfo=UTC).timestamp()
        clock.advance(christmas - clock.now())
        report = Syncer(tmp_path / "state", remote, clock)()
        states = {r.function: (r.state, r.message) for r in report.results}
        state, message = states.pop("geo-lookup")
        assert state == "WAITING_FOR_WINDOW"
        # (The other rollouts' waits moved the fake clock on before geo-lookup's turn.)
        assert message.startswith("waiting for deploy window, opens Sun 27 Dec 00:00 CET (in 1d")
        assert {state for state, _ in states.values()} == {"COMPLETED"}
        assert set(fleet.serving("geo-lookup").values()) == {None}
