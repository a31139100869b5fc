"""SSH sources with a checked host key.

libgit2 (pygit2) accepts any SSH host key, so `ssh://` and scp-like (`git@host:org/repo`)
sources are fetched with the `git` CLI and OpenSSH instead, with
`StrictHostKeyChecking=yes` against the operator's `known_hosts` file: an unknown or changed
host key stops the sync with a HostKeyError. (`ssh-keyscan` would be no check at all: it
trusts whatever answers.) The mirror stays a bare repository that pygit2 then reads.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import pygit2

from gitopsd.errors import SourceError
from gitopsd.source.redact import redact, split_userinfo

HEAD_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_SSH_SCHEMES = ("ssh://", "git+ssh://", "ssh+git://")
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>\[[^\]]+\]|[^/:]+):(?!//)")
_CHANGED = "REMOTE HOST IDENTIFICATION HAS CHANGED"
_FAILED = "Host key verification failed"


class HostKeyError(SourceError):
    """The SSH server's host key is unknown or changed: nothing is fetched from it."""


def is_ssh_url(url: str) -> bool:
    """True for `ssh://...` and scp-like `user@host:path` (what git itself treats as SSH)."""
    if url.startswith(_SSH_SCHEMES):
        return True
    if "://" in url or url.startswith(("/", ".", "~")):
        return False
    return _SCP_LIKE.match(url) is not None


def ssh_host(url: str) -> str:
    """The host (and port, when not 22) of an SSH URL, for messages."""
    if "://" in url:
        parsed = urlparse(url)
        host = parsed.hostname or "?"
        return f"{host}:{parsed.port}" if parsed.port and parsed.port != 22 else host
    match = _SCP_LIKE.match(url)
    return match.group("host").strip("[]") if match else "?"


def git_ssh_env(known_hosts: Path, identity_file: Path | None = None) -> dict[str, str]:
    """Environment for the git CLI: OpenSSH checks the host key against `known_hosts` only.

    BatchMode: never prompt (no TTY under systemd); UpdateHostKeys=no: never write to the
    operator's known_hosts; the global known_hosts file is ignored too.
    """
    parts = [
        "ssh",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=30",
    ]
    if identity_file is not None:
        parts += ["-o", "IdentitiesOnly=yes", "-i", str(identity_file)]
    return {"GIT_SSH_COMMAND": shlex.join(parts), "GIT_SSH_VARIANT": "ssh"}


def git_cli(
    *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the git CLI without a prompt, in the C locale, with `env` on top of ours."""
    full = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(env or {})}
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=full,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"git {args[0]} timed out after {timeout:.0f}s") from exc


def classify_ssh_failure(url: str, stderr: str, known_hosts: Path | None) -> SourceError:
    """The error for a failed git-over-ssh run: HostKeyError for host key trouble."""
    where = f"known_hosts {known_hosts}" if known_hosts else "known_hosts"
    host = ssh_host(url)
    if _CHANGED in stderr:
        return HostKeyError(
            f"source {redact(url)}: the host key of {host} has CHANGED and does not match "
            f"{where}: sync stopped (if the server's key was rotated on purpose, update "
            f"{where} with the new key)"
        )
    if _FAILED in stderr:
        return HostKeyError(
            f"source {redact(url)}: the host key of {host} is not in {where}: sync stopped "
            f"(add the server's key, checked out of band, to {where})"
        )
    return SourceError(f"source {redact(url)}: {redact(git_error(stderr))}")


_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists")


def git_error(stderr: str) -> str:
    """The useful part of a failed git run's stderr (git's advice lines dropped), one line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    return "; ".join(useful[:3])[:300] or "git failed"


def fetch_with_git_cli(
    mirror_path: Path, url: str, env: Mapping[str, str], known_hosts: Path | None = None
) -> None:
    """Create (if needed) and fetch the bare mirror at `mirror_path` from `url`, forced and
    pruned like the pygit2 mirror, through the git CLI and OpenSSH (`env` from git_ssh_env;
    `known_hosts` only names the file in error messages)."""
    if not (mirror_path / "HEAD").exists():
        mirror_path.parent.mkdir(parents=True, exist_ok=True)
        mirror_path.mkdir(mode=0o700, exist_ok=True)  # like every mirror: nobody else's
        pygit2.init_repository(str(mirror_path), bare=True)
    remotes = git_cli("remote", cwd=mirror_path).stdout.split()
    verb = "set-url" if "origin" in remotes else "add"
    # never a password on a command line (ps shows it) or in the mirror's config
    git_cli("remote", verb, "origin", split_userinfo(url).url, cwd=mirror_path)
    done = git_cli("fetch", "--prune", "origin", *HEAD_REFSPECS, cwd=mirror_path, env=env)
    if done.returncode != 0:
        raise classify_ssh_failure(url, done.stderr, known_hosts)


def check_ssh_host(url: str, known_hosts: Path, identity_file: Path | None = None) -> None:
    """Raise HostKeyError unless the server of `url` shows a key listed in `known_hosts`
    (`git ls-remote` through OpenSSH; other failures, such as a refused login, are
    SourceError)."""
    done = git_cli(
        "ls-remote", "--heads", split_userinfo(url).url, env=git_ssh_env(known_hosts, identity_file)
    )
    if done.returncode != 0:
        raise classify_ssh_failure(url, done.stderr, known_hosts)


def open_ssh_mirror(
    url: str,
    mirror_path: Path,
    known_hosts: Path,
    identity_file: Path | None = None,
    fetch: bool = True,
) -> pygit2.Repository:
    """The bare mirror of an SSH source, fetched with a checked host key: what
    `open_repository` should return for SSH URLs instead of fetching with pygit2."""
    if fetch or not (mirror_path / "HEAD").exists():
        env = git_ssh_env(known_hosts, identity_file)
        fetch_with_git_cli(mirror_path, url, env, known_hosts)
    return pygit2.Repository(str(mirror_path))
