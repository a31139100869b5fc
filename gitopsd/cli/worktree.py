"""What the working tree of a local, non-bare source holds that its commits do not.

gitopsd reads commits, never the working tree. An operator who edits a manifest and runs
`gitopsd validate` before committing must be told that the edit was not what got validated,
and a module that is only in the working tree must be named as such, not only as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pygit2

from gitopsd.errors import ManifestProblem
from gitopsd.manifest.loader import MANIFEST_SUFFIXES
from gitopsd.manifest.modules import MODULE_SUFFIXES
from gitopsd.source.git import SourceSpec, local_path

NOT_IN_SNAPSHOT = " not found in the snapshot"
NOT_COMMITTED_HINT = "; it exists in the working tree but is not committed"


@dataclass(frozen=True)
class WorkingTree:
    """The working tree of a local source and the synced path inside it."""

    root: Path  # the repository's working directory
    synced: str  # the synced path, relative to `root`, "" for the top

    def uncommitted(self) -> list[str]:
        """Manifests and modules under the synced path that differ from HEAD (edited, new,
        deleted; ignored files excluded), as paths relative to the repository."""
        repo = pygit2.Repository(str(self.root))
        prefix = f"{self.synced}/" if self.synced else ""
        changed = [
            path
            for path, flags in repo.status().items()
            if flags != pygit2.enums.FileStatus.CURRENT
            and not flags & pygit2.enums.FileStatus.IGNORED
            and path.startswith(prefix)
            and path.lower().endswith(MANIFEST_SUFFIXES + MODULE_SUFFIXES)
        ]
        return sorted(changed)

    def holds(self, snapshot_path: str) -> bool:
        """True when `snapshot_path` (relative to the synced path) is a file on disk."""
        base = self.root / self.synced if self.synced else self.root
        target = (base / snapshot_path).resolve()
        return target.is_relative_to(self.root.resolve()) and target.is_file()


def working_tree(spec: SourceSpec) -> WorkingTree | None:
    """The working tree of `spec` when it is a plain path to a non-bare repository (not a
    `file://` URL: that one is mirrored like any remote), else None."""
    path = local_path(spec.url)
    if path is None or spec.url.startswith("file://") or not path.exists():
        return None
    found = pygit2.discover_repository(str(path))
    if found is None:
        return None
    repo = pygit2.Repository(found)
    if repo.is_bare or repo.workdir is None:
        return None
    return WorkingTree(Path(repo.workdir), spec.root)


def hint_uncommitted_modules(
    problems: tuple[ManifestProblem, ...], tree: WorkingTree
) -> tuple[ManifestProblem, ...]:
    """`problems`, a module "not found in the snapshot" that the working tree holds saying so."""
    out = []
    for problem in problems:
        message = problem.message
        if message.startswith("module file '") and message.endswith(NOT_IN_SNAPSHOT):
            module = message[len("module file '") : -len(NOT_IN_SNAPSHOT) - 1]
            if tree.holds(module):
                problem = replace(problem, message=message + NOT_COMMITTED_HINT)
        out.append(problem)
    return tuple(out)
