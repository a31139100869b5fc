"""SSH sources against a real sshd on loopback: a known host key lets the fetch through, an
unknown or changed one stops it with HostKeyError. Needs OpenSSH's server (Debian package
`openssh-server`, installed by `make test`); it fails, never skips, without `sshd`."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

from gitopsd.errors import SourceError
from gitopsd.source.git import resolve_commit
from gitopsd.source.hostkeys import (
    HostKeyError,
    check_ssh_host,
    fetch_with_git_cli,
    git_ssh_env,
    is_ssh_url,
    open_ssh_mirror,
    redact,
    ssh_host,
)
from tests.gitrepo import GitRemote

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def _keygen(path: Path) -> str:
    """A fresh ed25519 key; returns its public half as `type base64`."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    port: int
    host_key: str  # public, `ssh-ed25519 AAAA...`
    client_key: Path  # private key the server accepts
    root: Path

    def url(self, repo: Path) -> str:
        user = pwd.getpwuid(os.geteuid()).pw_name
        return f"ssh://{user}@127.0.0.1:{self.port}{repo}"

    def known_hosts(self, key: str, name: str = "known_hosts") -> Path:
        path = self.root / name
        path.write_text(f"[127.0.0.1]:{self.port} {key}\n")
        return path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Server]:
    if SSHD is None:
        pytest.fail("sshd not installed: `make test` installs openssh-server (make system-deps)")
    root = tmp_path / "sshd"
    root.mkdir()
    host_key = _keygen(root / "host")
    client_pub = _keygen(root / "client")
    (root / "authorized_keys").write_text(client_pub + "\n")
    if os.geteuid() == 0:  # privilege separation directory, normally made by the package
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = _free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPidFile none\nLogLevel ERROR\n"
    )
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"sshd did not start: {err.strip()[-300:]}")
                time.sleep(0.05)
        yield Server(port, host_key, root / "client", root)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_known_host_key_lets_the_fetch_through(
    sshd: Server, remote: GitRemote, tmp_path: Path
) -> None:
    remote.write("deploy/a.yaml", "a: 1\n")
    first = remote.commit_push("first")
    known = sshd.known_hosts(sshd.host_key)
    before = known.read_text()
    mirror = tmp_path / "mirror"
    url = sshd.url(remote.bare)
    check_ssh_host(url, known, sshd.client_key)
    repo = open_ssh_mirror(url, mirror, known, sshd.client_key)
    assert str(resolve_commit(repo, "main").id) == first
    second = remote.commit_push("second")
    repo = open_ssh_mirror(url, mirror, known, sshd.client_key)
    assert str(resolve_commit(repo, "main").id) == second
    assert known.read_text() == before  # never rewritten by ssh


def test_changed_host_key_stops_the_sync(sshd: Server, remote: GitRemote, tmp_path: Path) -> None:
    remote.commit_push("first")
    url = sshd.url(remote.bare)
    good = sshd.known_hosts(sshd.host_key)
    mirror = tmp_path / "mirror"
    fetch_with_git_cli(mirror, url, git_ssh_env(good, sshd.client_key), good)
    fetched = str(resolve_commit(pygit2.Repository(str(mirror)), "main").id)
    remote.commit_push("pushed while the server was impersonated")
    # The server now shows a key other than the one known_hosts pins: as if it were replaced.
    stale = sshd.known_hosts(_keygen(tmp_path / "old-host"), "stale_known_hosts")
    with pytest.raises(HostKeyError, match="has CHANGED") as err:
        fetch_with_git_cli(mirror, url, git_ssh_env(stale, sshd.client_key), stale)
    assert str(stale) in str(err.value)
    with pytest.raises(HostKeyError, match="has CHANGED"):
        check_ssh_host(url, stale, sshd.client_key)
    # Nothing was fetched from the impostor.
    assert str(resolve_commit(pygit2.Repository(str(mirror)), "main").id) == fetched


def test_unknown_host_is_refused(sshd: Server, remote: GitRemote, tmp_path: Path) -> None:
    remote.commit_push("first")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="is not in known_hosts"):
        open_ssh_mirror(sshd.url(remote.bare), tmp_path / "mirror", empty, sshd.client_key)
    assert empty.read_text() == ""  # not learned on first use either


def test_refused_login_is_a_source_error_not_a_host_key_error(
    sshd: Server, remote: GitRemote, tmp_path: Path
) -> None:
    remote.commit_push("first")
    known = sshd.known_hosts(sshd.host_key)
    with pytest.raises(SourceError) as err:
        check_ssh_host(sshd.url(remote.bare), known, sshd.client_key.with_name("nobody"))
    assert not isinstance(err.value, HostKeyError)
    assert "Permission denied" in str(err.value) or "Could not read" in str(err.value)


def test_ssh_url_forms() -> None:
    assert is_ssh_url("ssh://git@example.com/org/repo.git")
    assert is_ssh_url("git+ssh://example.com:2222/org/repo.git")
    assert is_ssh_url("git@github.com:org/repo.git")
    assert is_ssh_url("example.com:org/repo.git")
    for local in ("/srv/repo.git", "./repo", "https://example.com/r.git", "file:///srv/r"):
        assert not is_ssh_url(local)
    assert ssh_host("ssh://git@example.com:2222/r.git") == "example.com:2222"
    assert ssh_host("ssh://git@example.com/r.git") == "example.com"
    assert ssh_host("git@github.com:org/repo.git") == "github.com"


def test_git_ssh_env_pins_known_hosts_and_quotes_paths(tmp_path: Path) -> None:
    env = git_ssh_env(tmp_path / "my hosts", tmp_path / "id key")
    command = env["GIT_SSH_COMMAND"]
    assert "StrictHostKeyChecking=yes" in command and "BatchMode=yes" in command
    assert f"'UserKnownHostsFile={tmp_path}/my hosts'" in command
    assert f"'{tmp_path}/id key'" in command


def test_redact_hides_passwords_and_https_tokens() -> None:
    assert redact("fatal: https://bot:s3cret@host/r.git") == "fatal: https://bot:***@host/r.git"
    assert redact("https://tok3n@host/r.git") == "https://***@host/r.git"
    assert redact("ssh://git@host/r.git") == "ssh://git@host/r.git"
