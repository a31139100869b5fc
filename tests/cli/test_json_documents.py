"""Issue 22 item 8: every `--output json` document uses camelCase keys and validates against
the JSON Schema `gitopsd schema --output-docs` publishes for it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from gitopsd.manifest.schema import manifest_json_schema
from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

SNAKE = re.compile(r"[a-z0-9]_[a-z0-9]")
STRATEGIES = {
    "roll": "{type: rolling, batchSize: 1}",
    "bg": "{type: blue-green}",
    "can": "{type: canary, stages: [50, 100], evaluationPeriod: PT1S}",
    "reg": "{type: regional, interRegionDelay: PT1S}",
    "ab": "{type: ab-test, variantBPercentage: 50, experimentDuration: PT1S}",
    "ff": "{type: feature-flag, flagName: f, initialRollout: 10}",
}


def keys(doc: Any) -> set[str]:
    if isinstance(doc, dict):
        return set(doc) | {k for v in doc.values() for k in keys(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in keys(v)}
    return set()


def test_every_output_json_document_is_camel_case_and_matches_its_schema(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file)
    published = gitopsd("schema", "--output-docs")
    assert published.code == 0
    schemas = published.json()
    assert set(schemas) == {"diff", "status", "history"}
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)

    remote.write("nodes.yaml", fleet.manifests())
    for name, strategy in STRATEGIES.items():
        push(remote, name, "1.0.0", strategy)
    source = str(remote.bare)
    assert gitopsd("sync", source, "--once").code == 0
    for name, strategy in STRATEGIES.items():
        push(remote, name, "2.0.0", strategy)
    diff = gitopsd("diff", source, "--plan", "--output", "json")
    assert diff.code == 1
    docs = {
        "diff": diff.json(),
        "status": gitopsd("status", "--output", "json").json(),
        "history": gitopsd("history", "--output", "json").json(),
    }
    assert set(docs["diff"]["plans"]) == set(STRATEGIES)  # every strategy's steps are in it
    for command, doc in docs.items():
        jsonschema.validate(doc, schemas[command])
        snake = {k for k in keys(doc) if SNAKE.search(k) and not k.startswith("edge-")}
        snake -= set(STRATEGIES) | set(fleet.nodes)  # names are data, not keys
        assert not snake, (command, snake)
    steps = [s for plan in docs["diff"]["plans"].values() for s in plan]
    assert any("successThreshold" in s for s in steps)
    assert any("newPercent" in s for s in steps)
    assert any("minimumSampleSize" in s for s in steps)


def test_schema_without_the_option_is_still_the_manifests_schema(tmp_path: Path) -> None:
    result = Gitopsd(tmp_path / "state")("schema")
    assert result.code == 0
    assert result.out == json.dumps(manifest_json_schema(), indent=2) + "\n"
    assert result.json()["title"].startswith("gitopsd manifest")


def test_the_dial_out_member_matches_its_schema(tmp_path: Path) -> None:
    from gitopsd.fleet.presence import Presence

    schemas = Gitopsd(tmp_path / "state")("schema", "--output-docs").json()
    presence = Presence(
        nodes=("edge-a", "edge-b"),
        connected={"edge-a": (1_800_000_000.0, "10.0.0.7:51000")},
        unknown=(("stranger", 1_800_000_001.0, "10.0.0.9:52000"),),
    )
    diff_doc = {
        "commit": "c" * 40,
        "summary": {"deploy": 0, "update": 0, "prune": 0, "unknown": 0, "unchanged": 0},
        "changes": [],
        "unchanged": [],
        "unreachable": {},
        "dialOut": presence.to_json(),
    }
    jsonschema.validate(diff_doc, schemas["diff"])
    status_doc = {"functions": [], "note": "", "dialOut": Presence(error="no listener").to_json()}
    jsonschema.validate(status_doc, schemas["status"])
