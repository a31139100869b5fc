"""One call from a SourceSpec to a Snapshot, whatever kind of source it is."""

from __future__ import annotations

from pathlib import Path

import pygit2

from gitopsd.errors import SourceError
from gitopsd.source.bounded import read_commit, read_plain_directory
from gitopsd.source.credentials import git_credential_env, source_credentials
from gitopsd.source.git import (
    SourceSpec,
    local_path,
    mirror_dir,
    open_repository,
    resolve_commit,
)
from gitopsd.source.hostkeys import git_ssh_env, is_ssh_url, open_ssh_mirror
from gitopsd.source.snapshot import Snapshot
from gitopsd.source.verify import verify_commit


def is_plain_directory(url: str) -> bool:
    """True for a local directory that is not inside a Git repository."""
    path = local_path(url)
    if path is None or url.startswith("file://") or not path.is_dir():
        return False
    return pygit2.discover_repository(str(path)) is None


def take_snapshot(spec: SourceSpec, state_dir: Path, fetch: bool = True) -> Snapshot:
    """The snapshot of `spec` now: fetch (for URLs), resolve the ref, read the tree.

    The tree is read within the limits of source/bounded.py: InvalidManifests (carrying the
    commit) for a synced path too deep, with too many entries or too many bytes."""
    if is_plain_directory(spec.url):
        local = local_path(spec.url)
        assert local is not None
        return read_plain_directory(local / spec.root if spec.root else local)
    repo = open_source(spec, state_dir, fetch=fetch)
    commit = resolve_commit(repo, spec.ref)
    if spec.verify is not None:
        verify_commit(repo, str(commit.id), spec.verify)
    return read_commit(repo, commit, spec.root)


def open_source(spec: SourceSpec, state_dir: Path, fetch: bool = True) -> pygit2.Repository:
    """The repository of `spec`; SSH sources are fetched by the git CLI with a checked host
    key (pygit2 accepts any host key over SSH)."""
    if spec.password_file is not None:
        source_credentials(spec.url, spec.password_file)  # ConfigError unless http(s)
    if is_ssh_url(spec.url):
        known = spec.known_hosts or Path.home() / ".ssh" / "known_hosts"
        return open_ssh_mirror(
            spec.url, mirror_dir(state_dir, spec.url), known, spec.ssh_key, fetch
        )
    return open_repository(spec.url, state_dir, fetch=fetch, password_file=spec.password_file)


def git_env(spec: SourceSpec) -> dict[str, str] | None:
    """Environment for a git CLI run against `spec`'s remote (pushing notes): the checked
    host key for SSH, the credential helper for an http(s) source with a password."""
    if is_ssh_url(spec.url):
        known = spec.known_hosts or Path.home() / ".ssh" / "known_hosts"
        return git_ssh_env(known, spec.ssh_key)
    if local_path(spec.url) is not None:
        return None
    return git_credential_env(source_credentials(spec.url, spec.password_file)) or None


def current_commit(spec: SourceSpec, state_dir: Path, fetch: bool = True) -> str:
    """Only the commit sha `spec` points at: the cheap question a no-op reconcile asks."""
    if is_plain_directory(spec.url):
        raise SourceError(f"source {spec.url}: a plain directory has no commits")
    repo = open_source(spec, state_dir, fetch=fetch)
    return str(resolve_commit(repo, spec.ref).id)
