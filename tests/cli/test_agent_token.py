"""`gitopsd agent-token`, and what `diff`, `status` and `sync` say and send once agents hold
per-node tokens (issue 14 finding 2): a moved node is told to install its new token, a node
at an attacker's listener gets a token valid nowhere (or nothing, outside the allow-list),
and shared mode still works, with a warning."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from gitopsd.fleet.tokens import node_token
from tests.clirunner import Gitopsd
from tests.fleet.recorder import Answer, RecordingListener
from tests.fleetfixture import TOKEN, Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

BLUE_GREEN = "{type: blue-green}"
PROD_ONLY = "  targets: {selector: {tier: prod}}\n"  # the fixture's nodes, not "evil"
EVIL = (
    "apiVersion: gitopsd/v1\nkind: EdgeNode\nmetadata: {{name: evil}}\n"
    'spec: {{address: "{url}", region: us-east}}\n'
)


def config(tmp_path: Path, repo: GitRemote, fleet_lines: str = "") -> Path:
    path = tmp_path / "gitopsd.toml"
    path.write_text(f'[source]\nurl = "{repo.bare}"\n[fleet]\ntimeout = "PT2S"\n{fleet_lines}')
    return path


# agent-token ----------------------------------------------------------------------------------


def test_agent_token_prints_the_hmac_of_the_fleet_secret_over_name_and_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "fleet-secret"
    secret.write_text("  fleet-secret-value \n")
    expected = hmac.new(
        b"fleet-secret-value", b"edge-a\nhttp://10.1.0.7:9101", hashlib.sha256
    ).hexdigest()
    flag = Gitopsd(tmp_path / "state", secret)
    done = flag("agent-token", "edge-a", "--address", "http://10.1.0.7:9101/")
    assert (done.code, done.out) == (0, expected + "\n")
    monkeypatch.setenv("GITOPSD_AGENT_TOKEN_FILE", str(secret))
    by_env = Gitopsd(tmp_path / "state")(
        "agent-token", "edge-a", "--address", "HTTP://10.1.0.7:9101"
    )
    assert by_env.out == expected + "\n"
    monkeypatch.delenv("GITOPSD_AGENT_TOKEN_FILE")
    toml = tmp_path / "gitopsd.toml"
    toml.write_text('[fleet]\ntoken_file = "fleet-secret"\n')
    by_config = Gitopsd(tmp_path / "state", config=toml)
    assert by_config("agent-token", "edge-a", "--address", "http://10.1.0.7:9101").out == (
        expected + "\n"
    )
    dial_out = by_config("agent-token", "edge-a", "--dial-out")
    assert dial_out.out.strip() == (
        hmac.new(b"fleet-secret-value", b"edge-a", hashlib.sha256).hexdigest()
    )


@pytest.mark.parametrize(
    "args",
    [
        ["edge-a"],
        ["edge-a", "--address", "http://h:1", "--dial-out"],
        ["Edge A", "--address", "http://h:1"],
        ["edge-a", "--address", "ftp://h:1"],
        ["edge-a", "--address", "http://user:pw@h:1"],
    ],
)
def test_agent_token_refuses_what_names_no_node(tmp_path: Path, args: list[str]) -> None:
    secret = tmp_path / "fleet-secret"
    secret.write_text("s3cret\n")
    done = Gitopsd(tmp_path / "state", secret)("agent-token", *args)
    assert done.code == 2 and done.out == "" and "error:" in done.err


def test_agent_token_without_a_secret_says_where_to_put_one(tmp_path: Path) -> None:
    done = Gitopsd(tmp_path / "state")("agent-token", "edge-a", "--address", "http://h:1")
    assert done.code == 2 and "--agent-token-file" in done.err


# diff, status, sync ----------------------------------------------------------------------------


def test_a_node_moved_in_git_is_refused_and_diff_and_status_say_which_token_to_install(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", BLUE_GREEN)
    gitopsd = Gitopsd(tmp_path / "state", fleet.token_file, config(tmp_path, remote))
    assert gitopsd("sync", "--once").code == 0
    old = fleet.nodes["edge-a"].url
    moved = old.replace("127.0.0.1", "localhost")  # same agent, holding its old token
    remote.write("nodes.yaml", fleet.manifests().replace(f'"{old}"', f'"{moved}"'))
    remote.commit_push("edge-a moves")
    hint = f"install `gitopsd agent-token edge-a --address {moved}` on it"
    diff = gitopsd("diff")
    assert "! edge-a agent edge-a: refused our token" in diff.out and hint in diff.out
    assert "edge-a unreachable" not in diff.out
    status = gitopsd("status", "fn")
    line = next(x for x in status.out.splitlines() if "edge-a" in x)
    assert "refused our token" in line and hint in line and "unreachable" not in line
    # Once the operator installs the token `agent-token` prints, the node answers again.
    printed = gitopsd("agent-token", "edge-a", "--address", moved).out.strip()
    assert printed == node_token(TOKEN, "edge-a", moved)


def test_a_node_at_an_attackers_listener_never_gets_the_fleet_secret(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    body = "\x1b[2J\x1b[31mYOU ARE OWNED\x07" + "B" * 50_000
    with RecordingListener(answer=Answer(500, body)) as spy:
        remote.write("nodes.yaml", fleet.manifests() + "---\n" + EVIL.format(url=spy.url))
        push(remote, "fn", "1.0.0", BLUE_GREEN, extra=PROD_ONLY)
        gitopsd = Gitopsd(tmp_path / "state", fleet.token_file, config(tmp_path, remote))
        diff = gitopsd("diff")
        sync = gitopsd("sync", "--once")
        status = gitopsd("status", "fn", "--output", "json")
    assert spy.seen, "the listener was asked"
    derived = f"Bearer {node_token(TOKEN, 'evil', spy.url)}"
    assert {s.authorization for s in spy.seen} == {derived}
    for result in (diff, sync, status):
        text = result.out + result.err
        assert TOKEN not in text
        assert "\x1b" not in text and "\x07" not in text and "B" * 201 not in text
    assert "! evil unreachable:" in diff.out and "\\x1b[2J" in diff.out
    assert set(fleet.serving("fn").values()) == {"1.0.0"}  # the real nodes still got it


def test_an_address_outside_the_allow_list_is_sent_nothing(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    with RecordingListener("127.0.0.2") as spy:
        remote.write("nodes.yaml", fleet.manifests() + "---\n" + EVIL.format(url=spy.url))
        push(remote, "fn", "1.0.0", BLUE_GREEN, extra=PROD_ONLY)
        allow = 'allowed_addresses = ["127.0.0.1/32", "edge-*.example.net"]\n'
        gitopsd = Gitopsd(tmp_path / "state", fleet.token_file, config(tmp_path, remote, allow))
        diff = gitopsd("diff")
        sync = gitopsd("sync", "--once")
    assert spy.seen == []
    assert "! evil agent evil: address" in diff.out
    assert "outside [fleet] allowed_addresses" in diff.out
    assert "evil" in sync.out + sync.err
    assert set(fleet.serving("fn").values()) == {"1.0.0"}


def test_shared_mode_still_works_and_warns(remote: GitRemote, tmp_path: Path) -> None:
    with running_fleet(tmp_path / "shared", token_mode="shared") as fleet:
        fleet.add("edge-s", "us-east")
        remote.write("nodes.yaml", fleet.manifests())
        push(remote, "fn", "1.0.0", BLUE_GREEN)
        shared = config(tmp_path, remote, 'token_mode = "shared"\n')
        gitopsd = Gitopsd(tmp_path / "state", fleet.token_file, shared)
        sync = gitopsd("sync", "--once")
        assert sync.code == 0, sync.out + sync.err
        assert "fleet.shared_token" in sync.err
        assert fleet.serving("fn") == {"edge-s": "1.0.0"}
        status = gitopsd("status", "fn")
        assert "fleet.shared_token" in status.err and "refused" not in status.out
        per_node = Gitopsd(tmp_path / "state", fleet.token_file, config(tmp_path, remote))
        diff = per_node("diff")
        assert "fleet.shared_token" not in diff.err
        assert "refused our token" in diff.out


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ('token_mode = "per_node"\n', "fleet.token_mode"),
        ('allowed_addresses = ["10.0.0.0/33"]\n', "fleet.allowed_addresses"),
        ('allowed_addresses = ["http://evil"]\n', "fleet.allowed_addresses"),
    ],
)
def test_a_bad_fleet_setting_is_a_config_error(
    remote: GitRemote, tmp_path: Path, line: str, where: str
) -> None:
    remote.write("nodes.yaml", "")
    remote.commit_push()
    done = Gitopsd(tmp_path / "state", config=config(tmp_path, remote, line))("diff")
    assert done.code == 2 and where in done.err


def test_the_daemon_warns_at_start_in_shared_mode_only(remote: GitRemote, tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from gitopsd.daemon.service import Daemon

    remote.write("nodes.yaml", "")
    remote.commit_push()
    secret = tmp_path / "fleet-secret"
    secret.write_text("s3cret\n")
    for mode, warned in (("shared", True), ("per-node", False)):
        path = config(tmp_path, remote, f'token_file = "{secret}"\ntoken_mode = "{mode}"\n')
        with capture_logs() as logs:
            daemon = Daemon(path, tmp_path / f"state-{mode}")
        assert daemon.reconciler.client({}).auth.mode == mode
        assert any(e["event"] == "fleet.shared_token" for e in logs) is warned, logs
