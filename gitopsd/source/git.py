"""Git sources with pygit2: open or mirror a repository and resolve a ref (the snapshot of a
commit is read within limits by gitopsd/source/bounded.py, without a checkout).

A local repository (bare or not) is read in place. A URL (`file://`, `https://`, `ssh://`) is
mirrored as a bare repository under the state dir and fetched on every pass; a local
`file://` URL is cloned by its plain path, which is orders of magnitude faster than
libgit2's `file://` transport (it packs everything). Mirrors live in `0700` directories and
their `config` names the URL without its password (gitopsd/source/credentials.py).

Which commit a ref names (`resolve_commit`), the same for every kind of source:

- a full ref name (`refs/heads/main`, `refs/tags/v1`) names exactly that ref;
- a full commit id (40 hex digits, or 64 for SHA-256 repositories) names that commit;
- anything else is a branch: `main` is `refs/heads/main` and nothing else, so a tag (or any
  other ref) called `main` cannot stand in for the branch.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import pygit2

from gitopsd.errors import SourceError
from gitopsd.source.credentials import CredentialCallbacks, Credentials, source_credentials
from gitopsd.source.redact import redact, split_userinfo

if TYPE_CHECKING:
    from gitopsd.source.verify import VerifyPolicy

HEAD_REFSPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
MIRROR_MODE = 0o700  # the mirror's config and objects are nobody else's business


@dataclass(frozen=True)
class SourceSpec:
    """Where manifests come from: a repository, a branch (or a full ref name or commit id:
    see `resolve_commit`) and a path inside it, and what to trust: the signature policy,
    for SSH the known host keys, for http(s) the password file, and whether a head that
    does not descend from the last applied commit may be applied."""

    url: str
    ref: str = "main"
    path: str = "/"
    verify: VerifyPolicy | None = None
    known_hosts: Path | None = None
    ssh_key: Path | None = None
    password_file: Path | None = None
    allow_non_fast_forward: bool = False

    @property
    def root(self) -> str:
        """The synced path as a tree path: no leading or trailing slash, "" for the top."""
        return self.path.strip("/")


def local_path(url: str) -> Path | None:
    """The filesystem path of a local source (plain path or `file://`), None for remote URLs."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    if "://" in url or (":" in url and "@" in url.split(":", 1)[0]):
        return None
    return Path(url).expanduser()


def mirror_dir(state_dir: Path, url: str) -> Path:
    """Where the bare mirror of `url` lives under the state dir (named by a digest of the URL
    without its password: a short hash of a password is a guessing aid, and a new password
    must not make a new mirror)."""
    return _mirror_at(state_dir, split_userinfo(url).url)


def _mirror_at(state_dir: Path, url: str) -> Path:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return state_dir / "repos" / digest


def open_repository(
    url: str, state_dir: Path, fetch: bool = True, password_file: Path | None = None
) -> pygit2.Repository:
    """Open the repository behind `url`, mirroring (and fetching) remote ones under `state_dir`.

    The password of an http(s) URL (or of `password_file`) is handed to libgit2 by callback:
    the mirror's `config` only ever holds the URL without it.
    """
    path = local_path(url)
    if path is not None and not url.startswith("file://"):
        return _open_local(path)
    credentials = source_credentials(url, password_file)
    stored_url = split_userinfo(url).url
    mirror = mirror_dir(state_dir, url)
    _adopt_legacy_mirror(state_dir, url, mirror)
    clone_from = str(path) if path is not None else stored_url
    if path is not None and not path.exists():
        raise SourceError(f"source {redact(url)}: no such repository")
    if not (mirror / "HEAD").exists():
        return _clone(clone_from, mirror, url, credentials)
    repo = pygit2.Repository(str(mirror))
    _keep_private(repo, mirror, clone_from)
    if fetch:
        fetch_mirror(repo, url, credentials)
    return repo


def _adopt_legacy_mirror(state_dir: Path, url: str, mirror: Path) -> None:
    """Mirrors made before passwords left the URL were named by a digest of the whole URL
    and hold the password in their config: move such a mirror to its new name (its notes
    and objects are kept) or, when both exist, scrub the old one's remote URL."""
    if url == split_userinfo(url).url:
        return
    legacy = _mirror_at(state_dir, url)
    if not (legacy / "HEAD").exists():
        return
    if not (mirror / "HEAD").exists():
        legacy.rename(mirror)
        return
    pygit2.Repository(str(legacy)).remotes.set_url("origin", split_userinfo(url).url)
    legacy.chmod(MIRROR_MODE)


def _keep_private(repo: pygit2.Repository, mirror: Path, clone_from: str) -> None:
    """The mirror directory is 0700 and its remote URL carries no password (older mirrors
    are fixed on open)."""
    for directory in (mirror.parent, mirror):
        if stat.S_IMODE(directory.stat().st_mode) != MIRROR_MODE:
            directory.chmod(MIRROR_MODE)
    if repo.remotes["origin"].url != clone_from:
        repo.remotes.set_url("origin", clone_from)


def _open_local(path: Path) -> pygit2.Repository:  # a local path: no credentials in it
    if not path.exists():
        raise SourceError(f"source {path}: no such directory")
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError as exc:
        raise SourceError(f"source {path}: not a Git repository ({exc})") from exc


def private_dir(path: Path) -> None:
    """Create `path` (and its parents) with the mirror's mode; tighten it if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=MIRROR_MODE, exist_ok=True)
    path.chmod(MIRROR_MODE)


def _clone(
    clone_from: str, mirror: Path, url: str, credentials: Credentials | None
) -> pygit2.Repository:
    private_dir(mirror.parent)
    private_dir(mirror)
    try:
        repo = pygit2.init_repository(str(mirror), bare=True)
        repo.remotes.create("origin", clone_from)
        fetch_mirror(repo, url, credentials)
        return repo
    except SourceError:
        raise
    except pygit2.GitError as exc:
        raise SourceError(f"source {redact(url)}: clone failed: {redact(str(exc))}") from exc


def fetch_mirror(repo: pygit2.Repository, url: str, credentials: Credentials | None = None) -> None:
    """Fetch every branch and tag, forced: a force-push upstream replaces the mirror's ref
    (whether the new head may be applied is decided later: gitopsd/source/ancestry.py)."""
    callbacks = CredentialCallbacks(credentials, redact(url)) if credentials else None
    try:
        repo.remotes["origin"].fetch(
            HEAD_REFSPECS, callbacks=callbacks, prune=pygit2.enums.FetchPrune.PRUNE
        )
        # libgit2 also fills refs/remotes/origin/* from the remote's configured refspec and
        # never prunes them: a branch deleted upstream would live on there and be resolved.
        for name in [r for r in repo.references if r.startswith("refs/remotes/")]:
            repo.references.delete(name)
    except SourceError:
        raise
    except (pygit2.GitError, KeyError) as exc:
        raise SourceError(f"source {redact(url)}: fetch failed: {redact(str(exc))}") from exc


def ref_name(ref: str) -> str:
    """The full name `ref` stands for: itself for `refs/...` and full commit ids, else the
    branch `refs/heads/<ref>` (never a tag of the same name: see the module docstring)."""
    if ref.startswith("refs/") or _FULL_SHA.fullmatch(ref):
        return ref
    return f"refs/heads/{ref}"


def resolve_commit(repo: pygit2.Repository, ref: str) -> pygit2.Commit:
    """The commit `ref` names, by the rule of the module docstring (tags peeled)."""
    name = ref_name(ref)
    try:
        if _FULL_SHA.fullmatch(name):
            commit = repo[name.lower()].peel(pygit2.Commit)
        else:
            commit = repo.references[name].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError) as exc:
        raise SourceError(_not_found(ref, name, repo)) from exc
    if not isinstance(commit, pygit2.Commit):
        raise SourceError(_not_found(ref, name, repo))
    return commit


def _not_found(ref: str, name: str, repo: pygit2.Repository) -> str:
    if _FULL_SHA.fullmatch(name):
        return f"commit {ref} not found in {repo.path}"
    if name.startswith("refs/heads/") and not ref.startswith("refs/"):
        return (
            f"ref {ref!r} not found in {repo.path}: no branch {name}; {_branches_hint(repo)} "
            "(a tag or another ref is named in full, e.g. refs/tags/v1; a commit by its full id)"
        )
    return f"ref {ref!r} not found in {repo.path} (or it names no commit)"


def _branches_hint(repo: pygit2.Repository, shown: int = 10) -> str:
    """The branches the repository has, and how to pick one: the usual cause of a missing
    `main` is a repository whose branch is `master`."""
    try:
        branches = sorted(repo.branches.local)
    except pygit2.GitError:
        branches = []
    if not branches:
        return "the repository has no branches (nothing committed yet?)"
    listed = ", ".join(branches[:shown]) + (", ..." if len(branches) > shown else "")
    first = "master" if "master" in branches else branches[0]
    return (
        f"branches here: {listed}; choose one with --ref {first} or "
        f'[source] branch = "{first}" in the config'
    )


def git(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the git CLI (used where libgit2 falls short: pushing notes, ssh host key checks)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=check, timeout=120
    )
