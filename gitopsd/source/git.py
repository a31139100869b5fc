"""Reading manifests from Git with pygit2: open or mirror a repository, resolve a ref, and
read a snapshot straight from the commit's tree (no checkout).

A local repository (bare or not) is read in place. A URL (`file://`, `https://`, `ssh://`) is
mirrored as a bare repository under the state dir and fetched on every pass; a local
`file://` URL is cloned by its plain path, which is orders of magnitude faster than
libgit2's `file://` transport (it packs everything).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import pygit2

from gitopsd.errors import SourceError

if TYPE_CHECKING:
    from gitopsd.source.verify import VerifyPolicy
from gitopsd.source.snapshot import GIT_MODE_SYMLINK, Snapshot, SnapshotFile

HEAD_REFSPECS = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]


@dataclass(frozen=True)
class SourceSpec:
    """Where manifests come from: a repository, a branch (or any ref) and a path inside it,
    and what to trust: the signature policy and, for SSH, the known host keys."""

    url: str
    ref: str = "main"
    path: str = "/"
    verify: VerifyPolicy | None = None
    known_hosts: Path | None = None
    ssh_key: Path | None = None

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
    """Where the bare mirror of `url` lives under the state dir."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return state_dir / "repos" / digest


def open_repository(url: str, state_dir: Path, fetch: bool = True) -> pygit2.Repository:
    """Open the repository behind `url`, mirroring (and fetching) remote ones under `state_dir`."""
    path = local_path(url)
    if path is not None and not url.startswith("file://"):
        return _open_local(path)
    mirror = mirror_dir(state_dir, url)
    clone_from = str(path) if path is not None else url
    if path is not None and not path.exists():
        raise SourceError(f"source {url}: no such repository")
    if not (mirror / "HEAD").exists():
        return _clone(clone_from, mirror, url)
    repo = pygit2.Repository(str(mirror))
    if fetch:
        fetch_mirror(repo, url)
    return repo


def _open_local(path: Path) -> pygit2.Repository:
    if not path.exists():
        raise SourceError(f"source {path}: no such directory")
    try:
        return pygit2.Repository(str(path))
    except pygit2.GitError as exc:
        raise SourceError(f"source {path}: not a Git repository ({exc})") from exc


def _clone(clone_from: str, mirror: Path, url: str) -> pygit2.Repository:
    mirror.parent.mkdir(parents=True, exist_ok=True)
    try:
        repo = pygit2.init_repository(str(mirror), bare=True)
        repo.remotes.create("origin", clone_from)
        fetch_mirror(repo, url)
        return repo
    except SourceError:
        raise
    except pygit2.GitError as exc:
        raise SourceError(f"source {url}: clone failed: {exc}") from exc


def fetch_mirror(repo: pygit2.Repository, url: str) -> None:
    """Fetch every branch and tag, forced: a force-push upstream replaces the mirror's ref."""
    try:
        repo.remotes["origin"].fetch(HEAD_REFSPECS, prune=pygit2.enums.FetchPrune.PRUNE)
        # libgit2 also fills refs/remotes/origin/* from the remote's configured refspec and
        # never prunes them: a branch deleted upstream would live on there and be resolved.
        for name in [r for r in repo.references if r.startswith("refs/remotes/")]:
            repo.references.delete(name)
    except (pygit2.GitError, KeyError) as exc:
        raise SourceError(f"source {url}: fetch failed: {exc}") from exc


def resolve_commit(repo: pygit2.Repository, ref: str) -> pygit2.Commit:
    """The commit `ref` names: a branch, `refs/...`, a tag (peeled) or a sha."""
    candidates = [ref, f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/remotes/origin/{ref}"]
    for name in candidates:
        try:
            obj = repo.revparse_single(name)
        except (KeyError, ValueError, pygit2.GitError):
            continue
        try:
            commit = obj.peel(pygit2.Commit)
        except (pygit2.GitError, ValueError):
            continue
        if isinstance(commit, pygit2.Commit):
            return commit
    raise SourceError(f"ref {ref!r} not found in {repo.path}")


def read_snapshot(repo: pygit2.Repository, commit: pygit2.Commit, root: str) -> Snapshot:
    """Every file below `root` in `commit`'s tree, keyed by path relative to `root`."""
    try:
        return _read_tree(repo, commit, root)
    except (pygit2.GitError, KeyError) as exc:
        # A damaged pack or a missing object: the commit cannot be read whole.
        raise SourceError(
            f"repository {repo.path}: cannot read commit {commit.id}: {exc} "
            "(damaged object store? `git fsck` tells)"
        ) from exc


def _read_tree(repo: pygit2.Repository, commit: pygit2.Commit, root: str) -> Snapshot:
    tree = commit.tree
    if root:
        try:
            entry = tree[root]
        except KeyError as exc:
            raise SourceError(f"path /{root} not found at commit {commit.id}") from exc
        if entry.type_str != "tree":
            raise SourceError(f"path /{root} is not a directory at commit {commit.id}")
        tree = repo[entry.id].peel(pygit2.Tree)
    files: dict[str, SnapshotFile] = {}
    _walk(repo, tree, "", files)
    return Snapshot(commit=str(commit.id), root=root, files=files)


def _walk(
    repo: pygit2.Repository, tree: pygit2.Tree, prefix: str, out: dict[str, SnapshotFile]
) -> None:
    for entry in tree:
        path = f"{prefix}{entry.name}"
        if entry.type_str == "tree":
            _walk(repo, repo[entry.id].peel(pygit2.Tree), f"{path}/", out)
        elif entry.type_str == "blob":
            blob = repo[entry.id].peel(pygit2.Blob)
            out[path] = SnapshotFile(path=path, data=blob.data, mode=entry.filemode)
        # submodules (type "commit") are not part of the desired state


def read_directory(path: Path) -> Snapshot:
    """A snapshot of a plain directory (no Git), for `gitopsd validate ./manifests`."""
    if not path.is_dir():
        raise SourceError(f"source {path}: no such directory")
    files: dict[str, SnapshotFile] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(path).as_posix()
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(full).encode()
                out = SnapshotFile(path=rel, data=target, mode=GIT_MODE_SYMLINK)
            else:
                out = SnapshotFile(path=rel, data=full.read_bytes())
            files[rel] = out
    return Snapshot(commit="", root="", files=files)


def git(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the git CLI (used where libgit2 falls short: pushing notes, ssh host key checks)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=check, timeout=120
    )
