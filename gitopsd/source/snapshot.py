"""A snapshot: the files of the synced path at one commit, read from Git without a checkout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GIT_MODE_SYMLINK = 0o120000


@dataclass(frozen=True)
class SnapshotFile:
    """One file of the synced path. `path` is relative to the synced path, with `/`."""

    path: str
    data: bytes
    mode: int = 0o100644

    @property
    def is_symlink(self) -> bool:
        return self.mode == GIT_MODE_SYMLINK


@dataclass(frozen=True)
class Snapshot:
    """The synced path of `commit`: every file below `root` (symlinks kept as links, unfollowed)."""

    commit: str  # full hex sha; "" for a plain directory that is not a Git checkout
    root: str  # the synced path inside the repository, "" for the top
    files: Mapping[str, SnapshotFile]

    @property
    def short(self) -> str:
        return self.commit[:12] if self.commit else "worktree"
