"""Reading the synced path within limits: how deep, how many entries, how many bytes.

A commit is hostile input. A tree 1,200 directories deep used to exceed Python's recursion
limit while it was read, and a commit of a million files or of gigabyte blobs would be read
whole into memory before anything looked at it. Both readers here walk iteratively, check
each object's size before reading it, and refuse the snapshot with a `path:line: message`
problem (InvalidManifests, exit 1: the commit is invalid, a new commit is needed) as soon as
a limit is passed. The daemon then writes a failure note on that commit once and waits for
the next one, as for any invalid manifest.

The limits are constants (documented in docs/manifest-reference.md, generated from here):
they bound what an attacker with push access can make the controller read, far above what a
fleet's manifests and modules need.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitopsd.errors import InvalidManifests, ManifestProblem, SourceError
from gitopsd.source.snapshot import GIT_MODE_SYMLINK, Snapshot, SnapshotFile

MAX_DEPTH = 32  # directory levels below the synced path
MAX_ENTRIES = 10_000  # files, symlinks and directories below the synced path
MAX_BYTES = 64 << 20  # bytes read in all: file contents and directory listings


@dataclass(frozen=True)
class TreeLimits:
    """What one snapshot may hold; the defaults are the documented limits."""

    max_depth: int = MAX_DEPTH
    max_entries: int = MAX_ENTRIES
    max_bytes: int = MAX_BYTES


DEFAULT_LIMITS = TreeLimits()


def limits_markdown() -> list[str]:
    """The "Limits of the synced path" section of docs/manifest-reference.md."""
    return [
        "## Limits of the synced path",
        "",
        "Every file below the synced path is read, manifests or not, so a commit is refused as "
        "a whole (exit 1, a failure note on the commit; the daemon waits for a new commit) "
        "when the synced path passes one of these limits. The problem names the directory or "
        "file where the limit was passed, as `path:1: message`.",
        "",
        "| Limit | Value |",
        "|---|---|",
        f"| directory levels below the synced path | {MAX_DEPTH} |",
        f"| entries (files, symlinks and directories) | {MAX_ENTRIES:,} |",
        f"| bytes read in all (file contents and directory listings) | {MAX_BYTES >> 20} MiB |",
        "",
        "A single manifest file may hold at most 1 MiB and a module 8 MiB; YAML may nest 64 "
        "levels and expand at most 10,000 nodes through aliases, and the manifests of one "
        "commit may hold at most 1,000,000 YAML nodes in all (a 10,000-function fleet on "
        "5,000 nodes is about 400,000). To keep other files out of "
        "these counts, point `[source] path` (or `--path`) at the manifests' directory.",
        "",
    ]


class _Budget:
    """Counts what was read; the first problem that passes a limit ends the read."""

    def __init__(self, limits: TreeLimits, commit: str) -> None:
        self.limits = limits
        self.commit = commit
        self.entries = 0
        self.bytes = 0
        self.problems: list[ManifestProblem] = []

    def refuse(self, path: str, message: str) -> InvalidManifests:
        return InvalidManifests([*self.problems, ManifestProblem(path, 1, message)], self.commit)

    def entry(self, path: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise self.refuse(
                path,
                f"more than {self.limits.max_entries:,} files and directories below the synced "
                "path: refused here (see the limits in docs/manifest-reference.md)",
            )

    def read(self, path: str, size: int, what: str) -> None:
        """Count `size` bytes about to be read for `path`, before reading them."""
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise self.refuse(
                path,
                f"{what} of {size:,} bytes takes the synced path over "
                f"{self.limits.max_bytes:,} bytes read in all: refused",
            )

    def too_deep(self, path: str, depth: int) -> bool:
        """True (and a problem noted) when a directory at `depth` must not be entered."""
        if depth <= self.limits.max_depth:
            return False
        self.problems.append(
            ManifestProblem(
                path,
                1,
                f"directory nested {depth} levels below the synced path, over the limit of "
                f"{self.limits.max_depth}",
            )
        )
        return True

    def finish(self) -> None:
        if self.problems:
            raise InvalidManifests(self.problems, self.commit)


def read_commit(
    repo: pygit2.Repository,
    commit: pygit2.Commit,
    root: str,
    limits: TreeLimits = DEFAULT_LIMITS,
) -> Snapshot:
    """Every file below `root` in `commit`'s tree, keyed by path relative to `root`, or
    InvalidManifests when the tree passes `limits`."""
    try:
        tree = commit.tree
        if root:
            try:
                entry = tree[root]
            except KeyError as exc:
                raise SourceError(f"path /{root} not found at commit {commit.id}") from exc
            if entry.type_str != "tree":
                raise SourceError(f"path /{root} is not a directory at commit {commit.id}")
            tree = repo[entry.id].peel(pygit2.Tree)
        files = dict(_walk_tree(repo, tree.id, _Budget(limits, str(commit.id))))
    except (pygit2.GitError, KeyError) as exc:
        # A damaged pack or a missing object: the commit cannot be read whole.
        raise SourceError(
            f"repository {repo.path}: cannot read commit {commit.id}: {exc} "
            "(damaged object store? `git fsck` tells)"
        ) from exc
    return Snapshot(commit=str(commit.id), root=root, files=files)


def _walk_tree(
    repo: pygit2.Repository, top: pygit2.Oid, budget: _Budget
) -> Iterator[tuple[str, SnapshotFile]]:
    """Depth-first, with a stack of its own (no recursion), sizes checked before reading."""
    stack: list[tuple[pygit2.Oid, str, int]] = [(top, "", 0)]
    while stack:
        oid, prefix, depth = stack.pop()
        budget.read(prefix or "./", repo.odb.read_header(oid)[1], "directory listing")
        subtrees: list[tuple[pygit2.Oid, str, int]] = []
        for entry in repo[oid].peel(pygit2.Tree):
            path = f"{prefix}{entry.name}"
            budget.entry(path)
            if entry.type_str == "tree":
                if not budget.too_deep(path, depth + 1):
                    subtrees.append((entry.id, f"{path}/", depth + 1))
            elif entry.type_str == "blob":
                size = repo.odb.read_header(entry.id)[1]
                budget.read(path, size, "file")
                blob = repo[entry.id].peel(pygit2.Blob)
                yield path, SnapshotFile(path=path, data=blob.data, mode=entry.filemode)
            # submodules (type "commit") are not part of the desired state
        stack.extend(reversed(subtrees))  # in tree order, as a recursive walk would go
    budget.finish()


def read_plain_directory(path: Path, limits: TreeLimits = DEFAULT_LIMITS) -> Snapshot:
    """A snapshot of a plain directory (no Git), for `gitopsd validate ./manifests`; `.git`
    directories are skipped, symlinks kept as links (never followed)."""
    if not path.is_dir():
        raise SourceError(f"source {path}: no such directory")
    budget = _Budget(limits, "")
    files: dict[str, SnapshotFile] = {}
    stack: list[tuple[Path, str, int]] = [(path, "", 0)]
    try:
        while stack:
            directory, prefix, depth = stack.pop()
            subdirs: list[tuple[Path, str, int]] = []
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    if entry.name == ".git":
                        continue
                    budget.entry(rel)
                    if not budget.too_deep(rel, depth + 1):
                        subdirs.append((Path(entry.path), f"{rel}/", depth + 1))
                elif stat.S_ISLNK(info.st_mode):
                    budget.entry(rel)
                    target = os.readlink(entry.path).encode("utf-8", "surrogateescape")
                    budget.read(rel, len(target), "symlink")
                    files[rel] = SnapshotFile(path=rel, data=target, mode=GIT_MODE_SYMLINK)
                elif stat.S_ISREG(info.st_mode):
                    budget.entry(rel)
                    budget.read(rel, info.st_size, "file")
                    data = _read_file(entry.path, rel, info.st_size, budget)
                    files[rel] = SnapshotFile(path=rel, data=data)
                else:  # a fifo would block the read forever; Git has no such files either
                    budget.entry(rel)
                    budget.problems.append(
                        ManifestProblem(rel, 1, "not a regular file, directory or symlink")
                    )
            stack.extend(reversed(subdirs))
    except OSError as exc:
        raise SourceError(f"source {path}: cannot read {exc.filename or path}: {exc}") from exc
    budget.finish()
    return Snapshot(commit="", root="", files=files)


def _read_file(file: str, rel: str, measured: int, budget: _Budget) -> bytes:
    """The file's bytes (`measured` of them already counted); should it have grown since it
    was measured, the growth is counted too, and at most one byte past the budget is read."""
    room = budget.limits.max_bytes - budget.bytes
    with open(file, "rb") as handle:
        data = handle.read(measured + max(0, room) + 1)
    if len(data) > measured:
        budget.read(rel, len(data) - measured, "file (grown while read)")
    return data
