"""Signed commits and forge statuses end to end: `gitopsd sync` applies a commit signed by an
allowed key, refuses unsigned and unknown-key commits (failure note, nothing deployed), and
posts each outcome to a forge's commit-status API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.clirunner import Gitopsd
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.signing import Keys, _git, _ssh
from tests.wasm_modules import handler_wat

FORGE_TOKEN = "ghp_forge-token-never-logged"


class Forge:
    """A GitHub-shaped commit-status endpoint that records what it receives."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                forge.seen.append(
                    {"path": self.path, "auth": self.headers["Authorization"], "body": body}
                )
                self.send_response(201)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def forge() -> Iterator[Forge]:
    f = Forge()
    yield f
    f.server.shutdown()


@pytest.fixture
def gitopsd(tmp_path: Path, fleet: Fleet, remote: GitRemote, keys: Keys, forge: Forge) -> Gitopsd:
    (tmp_path / "forge-token").write_text(FORGE_TOKEN)
    config = tmp_path / "gitopsd.toml"
    config.write_text(
        f'[source]\nurl = "{remote.bare}"\n'
        f'[source.verify]\nmode = "head"\nallowed_signers = "{keys.allowed_signers}"\n'
        '[status]\nforges = [{kind = "github", api_url = '
        f'"{forge.url}", repo = "acme/edge", token_file = "forge-token"}}]\n'
    )
    return Gitopsd(tmp_path / "state", fleet.token_file, config)


def commit(remote: GitRemote, keys: Keys, version: str, key: Path | None) -> str:
    remote.write(
        "functions/fn.yaml",
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\nmetadata: {name: fn}\nspec:\n"
        f'  version: "{version}"\n  module: fn.wat\n  strategy: {{type: blue-green}}\n',
    )
    remote.write("functions/fn.wat", handler_wat(f"fn {version}"))
    _git(remote, keys, "add", "-A")
    sign = (*_ssh(key), "commit", "-S") if key else ("commit",)
    _git(remote, keys, *sign, "-q", "-m", f"fn {version}")
    remote.push()
    return _git(remote, keys, "rev-parse", "HEAD")


def test_only_commits_signed_by_an_allowed_key_are_applied(
    remote: GitRemote,
    fleet: Fleet,
    keys: Keys,
    gitopsd: Gitopsd,
    forge: Forge,
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    good = commit(remote, keys, "1.0.0", keys.ssh_key)
    assert gitopsd("sync", "--once").code == 0
    assert set(fleet.serving("fn").values()) == {"1.0.0"}
    posted = [s for s in forge.seen if s["path"] == f"/repos/acme/edge/statuses/{good}"]
    assert [(s["body"]["context"], s["body"]["state"]) for s in posted] == [
        ("gitopsd/fn", "pending"),  # when the rollout starts
        ("gitopsd/fn", "success"),
    ]
    assert all(s["auth"] == f"Bearer {FORGE_TOKEN}" for s in posted)

    for version, key in (("2.0.0", None), ("3.0.0", keys.ssh_stranger)):
        sha = commit(remote, keys, version, key)
        result = gitopsd("sync", "--once")
        assert result.code == 1
        assert "signature" in result.err or "signed" in result.err
        assert set(fleet.serving("fn").values()) == {"1.0.0"}
        note = json.loads(remote.note(sha))
        assert note["status"] == "failure" and "signature refused" in note["message"]
        refused = [s for s in forge.seen if s["path"].endswith(sha)]
        assert [s["body"]["state"] for s in refused] == ["failure"]
    assert FORGE_TOKEN not in json.dumps([remote.note(good)])
