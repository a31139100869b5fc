"""Only forward: a new head is applied only if it descends from the last applied commit.

A force-push (or anyone who can move the branch, or a stale mirror served by a hostile
server) can point the synced branch at an older commit, including one that was signed
long ago and would pass `[source.verify] mode = "head"`: a silent downgrade. So `sync` and
the daemon refuse a head whose history does not contain the last commit they applied
(the newest head accepted, `source:accepted_head` in the store, which descends from every
earlier one; before any, `last_applied_commit`), unless the operator allows it with
`[source] allow_non_fast_forward = true`. A refusal is a negative result about the commit
(exit 1, a failure note on it), not a failure to run; the daemon stays on its last good
state. The first commit a fresh state dir sees is taken as it is (nothing to compare to).

This is the one place the rule lives: the CLI, the Python API and the daemon call
`check_fast_forward` (through `Reconciler.check_fast_forward`) before applying a commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pygit2

from gitopsd.errors import SourceError
from gitopsd.log import get_logger
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import open_source

LAST_APPLIED_KEY = "last_applied_commit"  # store key: the last commit applied in full
# Store key: the newest head accepted for applying, whether or not every function of it then
# succeeded. New heads must descend from it: comparing with the last commit applied *in full*
# let a force-push back to that commit, after a partly failed newer one, downgrade the fleet.
ACCEPTED_HEAD_KEY = "source:accepted_head"
REFUSED_HEAD_KEY = "source:refused_head"  # store key: why the newest head was refused ("": none)
ALLOW_HINT = (
    "if the branch was rewritten on purpose, set [source] allow_non_fast_forward = true "
    "(or GITOPSD_SOURCE__ALLOW_NON_FAST_FORWARD=true for one `gitopsd sync --once`)"
)


class NonFastForward(SourceError):
    """The synced ref's commit does not descend from the last applied commit: nothing of it
    is applied. A negative result (exit 1), like a refused signature."""

    exit_code: ClassVar[int] = 1

    def __init__(self, commit: str, last_applied: str, reason: str) -> None:
        super().__init__(f"commit {commit[:12]} refused: {reason}; nothing applied ({ALLOW_HINT})")
        self.commit = commit
        self.last_applied = last_applied
        self.reason = reason


def descends(repo: pygit2.Repository, commit: str, last_applied: str) -> str:
    """ "" when `commit` is `last_applied` or descends from it, else why not (one phrase)."""
    if commit == last_applied:
        return ""
    try:
        known = repo.get(last_applied) is not None
    except (ValueError, pygit2.GitError):
        known = False
    if not known:
        return (
            f"the last applied commit {last_applied[:12]} is not in the repository any more "
            "(history rewritten, or a different repository)"
        )
    try:
        if repo.descendant_of(commit, last_applied):
            return ""
    except (ValueError, pygit2.GitError) as exc:
        return f"its ancestry could not be read ({exc})"
    return (
        f"it does not descend from the last applied commit {last_applied[:12]} "
        "(a force-push or a rewritten branch)"
    )


def check_fast_forward(
    spec: SourceSpec, state_dir: Path, commit: str, last_applied: str | None
) -> None:
    """Raise NonFastForward unless `commit` may follow `last_applied` on `spec`'s ref.

    Nothing to check for a plain directory (no commit) or a fresh state (nothing applied
    yet). With `spec.allow_non_fast_forward` a non-descending head is let through, with a
    warning in the log.
    """
    if not commit or not last_applied:
        return
    repo = open_source(spec, state_dir, fetch=False)
    why = descends(repo, commit, last_applied)
    if not why:
        return
    if spec.allow_non_fast_forward:
        get_logger(commit=commit[:12]).warning(
            "applying a head that is not a fast-forward (allow_non_fast_forward)",
            last_applied=last_applied[:12],
            reason=why,
        )
        return
    raise NonFastForward(commit, last_applied, why)
