"""The walking skeleton end to end: git push → validate / diff / sync → agents serve it.

Real Git (bare repo, pushes through the git CLI), real agents on loopback, real wasmtime
modules compiled from WAT, a real SQLite state dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.wasm_modules import handler_wat


def function_yaml(
    name: str, version: str, strategy: str = "{type: blue-green}", extra: str = ""
) -> str:
    return (
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f'  version: "{version}"\n'
        f"  module: modules/{name}.wat\n"
        f"  strategy: {strategy}\n"
        f"{extra}"
    )


def push_function(
    remote: GitRemote,
    name: str,
    version: str,
    health: str = "OK",
    strategy: str = "{type: blue-green}",
    extra: str = "",
) -> str:
    remote.write(f"functions/{name}.yaml", function_yaml(name, version, strategy, extra))
    remote.write(f"functions/modules/{name}.wat", handler_wat(f"{name} {version}", health))
    return remote.commit_push(f"{name} {version}")


@pytest.fixture
def gitopsd(tmp_path: Path, fleet: Fleet) -> Gitopsd:
    return Gitopsd(tmp_path / "state", fleet.token_file)


@pytest.fixture
def repo(remote: GitRemote, fleet: Fleet) -> GitRemote:
    remote.write("nodes.yaml", fleet.manifests())
    return remote


def test_push_validate_diff_sync_serves_everywhere(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    sha = push_function(repo, "hello", "1.0.0")
    src = str(repo.bare)

    assert gitopsd("validate", src).code == 0
    diff = gitopsd("diff", src, "--output", "json")
    assert diff.code == 1
    doc = diff.json()
    assert doc["commit"] == sha
    assert doc["summary"]["deploy"] == 1
    assert [c["function"] for c in doc["changes"]] == ["hello"]

    sync = gitopsd("sync", src, "--once")
    assert sync.code == 0, sync.out + sync.err
    assert fleet.serving("hello") == {"edge-a": "1.0.0", "edge-b": "1.0.0", "edge-c": "1.0.0"}
    status, version, body = fleet.invoke("edge-a", "hello")
    assert (status, version, body) == (200, "1.0.0", "hello 1.0.0")
    assert gitopsd("diff", src).code == 0

    note = json.loads(repo.note(sha))
    assert note["status"] == "success"
    assert note["functions"]["hello"]["version"] == "1.0.0"
    assert sorted(note["functions"]["hello"]["nodesOk"]) == ["edge-a", "edge-b", "edge-c"]

    history = gitopsd("history", "--output", "json").json()["rollouts"]
    assert history[0]["function"] == "hello" and history[0]["state"] == "COMPLETED"


def test_failing_health_check_leaves_every_node_on_old_version(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    push_function(repo, "hello", "1.0.0")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    bad = push_function(repo, "hello", "2.0.0", health="BROKEN")

    sync = gitopsd("sync", str(repo.bare), "--once")
    assert sync.code == 1
    assert "ROLLED_BACK" in sync.out
    assert fleet.serving("hello") == {"edge-a": "1.0.0", "edge-b": "1.0.0", "edge-c": "1.0.0"}
    for node in fleet.nodes:
        assert list(fleet.inventory(node)["functions"]["hello"]["versions"]) == ["1.0.0"]
    note = json.loads(repo.note(bad))
    assert note["status"] == "failure"
    assert note["functions"]["hello"]["state"] == "ROLLED_BACK"
    assert "health" in note["functions"]["hello"]["failedStep"]


def test_function_removed_from_git_is_undeployed(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    push_function(repo, "hello", "1.0.0")
    push_function(repo, "other", "1.0.0")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    repo.remove("functions/hello.yaml")
    repo.commit_push("drop hello")
    diff = gitopsd("diff", str(repo.bare), "--output", "json").json()
    assert diff["summary"]["prune"] == 1
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    assert fleet.serving("hello") == {"edge-a": None, "edge-b": None, "edge-c": None}
    assert set(fleet.serving("other").values()) == {"1.0.0"}


def test_agent_restart_keeps_functions(repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd) -> None:
    push_function(repo, "hello", "1.0.0")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    fleet.stop("edge-b")
    fleet.start("edge-b")
    assert fleet.invoke("edge-b", "hello")[:2] == (200, "1.0.0")
    assert gitopsd("diff", str(repo.bare)).code == 0


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ('  version: "1.0.0"\n  colour: blue\n', 7, "colour"),
        ('  version: "1.0.0"\n  healthCheck: {timeout: soon}\n', 7, "duration"),
        ('  version: "1.0.0"\n  sha256: "' + "0" * 64 + '"\n', 7, "sha256"),
    ],
)
def test_invalid_manifest_is_refused_with_file_line_and_nothing_deployed(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd, content: str, line: int, message: str
) -> None:
    repo.write("functions/modules/bad.wat", handler_wat("bad"))
    repo.write(
        "functions/bad.yaml",
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\nmetadata: {name: bad}\nspec:\n"
        "  module: modules/bad.wat\n" + content,
    )
    sha = repo.commit_push("bad manifest")
    validate = gitopsd("validate", str(repo.bare))
    assert validate.code == 1
    assert f"functions/bad.yaml:{line}:" in validate.err
    assert message in validate.err
    sync = gitopsd("sync", str(repo.bare), "--once")
    assert sync.code == 1
    assert fleet.serving("bad") == {"edge-a": None, "edge-b": None, "edge-c": None}
    assert json.loads(repo.note(sha))["status"] == "failure"


def test_duplicate_name_and_escaping_module_path_are_refused(
    repo: GitRemote, gitopsd: Gitopsd
) -> None:
    repo.write("functions/modules/x.wat", handler_wat("x"))
    repo.write(
        "functions/a.yaml", function_yaml("dup", "1.0.0").replace("modules/dup", "modules/x")
    )
    repo.write(
        "functions/b.yaml", function_yaml("dup", "1.0.0").replace("modules/dup", "modules/x")
    )
    repo.write(
        "functions/c.yaml",
        function_yaml("esc", "1.0.0").replace("modules/esc.wat", "../../etc/x.wat"),
    )
    repo.commit_push("bad")
    result = gitopsd("validate", str(repo.bare))
    assert result.code == 1
    assert "functions/b.yaml:3:" in result.err  # the second `dup`, at its metadata line
    assert "functions/c.yaml:6:" in result.err  # the module key


def test_unreachable_agent_fails_sync_naming_node_and_leaves_others_unswitched(
    repo: GitRemote, fleet: Fleet, gitopsd: Gitopsd
) -> None:
    push_function(repo, "hello", "1.0.0")
    assert gitopsd("sync", str(repo.bare), "--once").code == 0
    fleet.stop("edge-c")
    push_function(repo, "hello", "2.0.0")
    sync = gitopsd("sync", str(repo.bare), "--once")
    assert sync.code == 1
    assert "edge-c" in sync.out
    assert fleet.serving("hello") == {"edge-a": "1.0.0", "edge-b": "1.0.0", "edge-c": None}


def test_diff_plan_previews_the_strategy_steps(repo: GitRemote, gitopsd: Gitopsd) -> None:
    push_function(repo, "hello", "1.0.0", strategy="{type: canary, stages: [50, 100]}")
    text = gitopsd("diff", str(repo.bare), "--plan")
    assert text.code == 1
    assert "wait 5m" in text.out and "Plan: 1 to deploy, 0 to update, 0 to prune." in text.out
    doc = gitopsd("diff", str(repo.bare), "--plan", "--output", "json").json()
    kinds = [step["kind"] for step in doc["plans"]["hello"]]
    assert kinds[0] == "deploy" and kinds[-1] == "finish" and "wait" in kinds
    assert doc["plans"]["hello"][-1]["state"] == "COMPLETED"


def test_unreachable_source_and_bad_config_exit_2(gitopsd: Gitopsd, tmp_path: Path) -> None:
    gone = gitopsd("diff", str(tmp_path / "nowhere.git"))
    assert gone.code == 2 and "error:" in gone.err
    bad = tmp_path / "bad.toml"
    bad.write_text("[source]\nurl = 3\n")
    assert gitopsd("diff", "--config", str(bad)).code == 2
    assert gitopsd("frobnicate").code == 2
