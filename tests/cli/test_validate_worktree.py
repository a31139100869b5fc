"""Issue 22 item 6: `validate` reads a commit, and says so when the working tree differs;
a module that exists only in the working tree gets a hint; every problem comes out in one
run."""

from __future__ import annotations

from pathlib import Path

from tests.clirunner import Gitopsd
from tests.gitrepo import GitRemote
from tests.wasm_modules import handler_wat

NODE = (
    "apiVersion: gitopsd/v1\nkind: EdgeNode\nmetadata: {name: edge-1}\n"
    'spec: {address: "http://127.0.0.1:9999", region: us-east}\n'
)


def function(name: str, extra: str = "") -> str:
    return (
        f"apiVersion: gitopsd/v1\nkind: EdgeFunction\nmetadata: {{name: {name}}}\nspec:\n"
        f'  version: "1.0.0"\n  module: modules/{name}.wat\n  strategy: {{type: rolling}}\n'
        f"{extra}"
    )


def test_uncommitted_changes_are_warned_about(remote: GitRemote, tmp_path: Path) -> None:
    remote.write("nodes.yaml", NODE)
    remote.write("fns/a.yaml", function("a"))
    remote.write("fns/modules/a.wat", handler_wat("a"))
    remote.write("README.txt", "not a manifest")
    remote.commit()
    gitopsd = Gitopsd(tmp_path / "state")
    clean = gitopsd("validate", str(remote.work))
    assert clean.code == 0 and "uncommitted" not in clean.err, clean.err

    remote.write("fns/a.yaml", function("a").replace("1.0.0", "1.0.1"))
    remote.write("fns/modules/b.wat", handler_wat("b"))
    remote.write("README.txt", "edited, but not a manifest or module")
    result = gitopsd("validate", str(remote.work))
    assert result.code == 0
    assert result.out.endswith(": ok\n")
    assert "warning: uncommitted changes" in result.err, result.err
    assert "fns/a.yaml" in result.err and "fns/modules/b.wat" in result.err
    assert "README.txt" not in result.err
    assert "validated the commit" in result.err
    # A bare repository has no working tree: nothing to warn about.
    remote.commit()
    remote.push()
    assert "uncommitted" not in gitopsd("validate", str(remote.bare)).err


def test_a_module_only_in_the_working_tree_is_hinted_and_every_problem_is_reported(
    remote: GitRemote, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", NODE)
    remote.write("fns/ok.yaml", function("ok"))
    remote.write("fns/modules/ok.wat", handler_wat("ok"))
    # An unknown field, a bad strategy and a module never committed, in one function.
    remote.write("fns/bad.yaml", function("bad", "  colour: red\n").replace("rolling", "sideways"))
    remote.commit()
    remote.write("fns/modules/bad.wat", handler_wat("bad"))  # written, not committed
    result = Gitopsd(tmp_path / "state")("validate", str(remote.work))
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if line.startswith("fns/bad.yaml:")]
    assert any("colour" in line for line in lines), result.err
    assert any("sideways" in line for line in lines), result.err
    missing = [line for line in lines if "not found in the snapshot" in line]
    assert len(missing) == 1, result.err
    assert "exists in the working tree but is not committed" in missing[0]
