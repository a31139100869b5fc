"""The diff again after a small change: only the functions that can have changed are diffed.

`diff` (diff.py) looks at every function-node pair; in a fleet of 10,000 functions on 1,000
nodes that is a million pairs per pass, even when one manifest changed. `DiffBase` keeps the
inputs and the ChangeSet of the last diff; `rediff` takes the next desired and live state
with the paths the new commit changed (from Git's tree diff) and recomputes only:

- functions whose manifest file or module file is among the changed paths, and functions
  added to or removed from Git;
- functions on a node whose inventory changed (the fleet client keeps one functions table
  object per distinct inventory, fleet/live.py, so an unchanged node is the same object and
  a changed one names exactly the functions whose entry differs).

Every other function's entry (a Change, or its name among the unchanged) is taken from the
last ChangeSet. When what the shortcut relies on does not hold (the nodes in Git changed,
another set of nodes answered, errors changed), it runs the full `diff`. The result is
always equal to `diff(desired, live)` (tests/test_diff_incremental.py checks this).

Pure, like diff.py: no I/O, same inputs, same output.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from gitopsd.diff import Action, Change, ChangeSet, NodeChange, _function_change, diff
from gitopsd.fleet.live import LiveFunction, LiveState
from gitopsd.manifest.desired import DesiredFunction, DesiredState


def _files_of(fn: DesiredFunction) -> tuple[str, str]:
    """(manifest file, module file) of a function, as Git paths."""
    return fn.source.rsplit(":", 1)[0], fn.module.path


@dataclass(frozen=True)
class DiffBase:
    """The inputs and result of one diff, to diff the next state against."""

    desired: DesiredState
    live: LiveState
    changes: ChangeSet
    # Git path -> names of the functions whose manifest or module is that file.
    by_path: Mapping[str, frozenset[str]] = field(repr=False)

    @classmethod
    def full(cls, desired: DesiredState, live: LiveState) -> DiffBase:
        """A first diff, of every pair (`diff`)."""
        return cls(desired, live, diff(desired, live), _index(desired.functions.values()))


def _index(functions: Collection[DesiredFunction]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {}
    for fn in functions:
        for path in _files_of(fn):
            found.setdefault(path, set()).add(fn.name)
    return {path: frozenset(names) for path, names in found.items()}


def _same_nodes(base: DiffBase, desired: DesiredState, live: LiveState) -> bool:
    """Whether everything but functions and node inventories is as in `base`."""
    old, new = base.desired.nodes, desired.nodes
    if old is not new and old != new:
        return False
    return live.nodes.keys() == base.live.nodes.keys() and live.errors == base.live.errors


def _moved_on_nodes(base: LiveState, live: LiveState) -> set[str]:
    """Functions whose entry differs on some node whose inventory changed."""
    moved: set[str] = set()
    empty: Mapping[str, LiveFunction] = {}
    for name, node in live.nodes.items():
        before = base.nodes.get(name)
        if before is node or (before is not None and before.functions is node.functions):
            continue
        old = before.functions if before is not None else empty
        new = node.functions
        for fn in old.keys() | new.keys():
            if old.get(fn) is not new.get(fn):
                moved.add(fn)
    return moved


def _prune(function: str, live: LiveState) -> Change | None:
    """The prune of `function`, which Git no longer has (None when no node runs it)."""
    nodes = [
        NodeChange(name, Action.PRUNE, inv.functions[function].serving, "not in Git")
        for name, inv in sorted(live.nodes.items())
        if function in inv.functions
    ]
    if not nodes:
        return None
    versions = tuple(sorted({n.live_version for n in nodes if n.live_version}))
    return Change(function, Action.PRUNE, None, versions, tuple(nodes), "removed from Git")


def rediff(
    base: DiffBase,
    desired: DesiredState,
    live: LiveState,
    changed_paths: Collection[str],
) -> DiffBase:
    """The diff of `desired` against `live`, given that `base` was the diff of the last
    state and `changed_paths` are every Git path the commit changed since `base.desired`'s
    (empty for the same commit). Returns the new base; its `changes` is the ChangeSet."""
    if not _same_nodes(base, desired, live):
        return DiffBase.full(desired, live)
    old_fns, new_fns = base.desired.functions, desired.functions
    affected: set[str] = set()
    unknown_path = False
    for path in changed_paths:
        named = base.by_path.get(path)
        if named is None:
            unknown_path = True  # a new file, or one that holds no function
        else:
            affected |= named
    # Functions added or removed: a removed one's manifest is a changed path, so it is in
    # `affected` and gone from Git; an added one makes the count differ or its file is new
    # (or another function went, as with a rename). Only then are all names compared.
    if unknown_path or len(old_fns) != len(new_fns) or not affected <= new_fns.keys():
        affected |= old_fns.keys() ^ new_fns.keys()
    by_path = _reindex(base.by_path, old_fns, new_fns, affected)
    affected |= _moved_on_nodes(base.live, live)
    if not affected and desired.commit == base.changes.commit:
        return DiffBase(desired, live, base.changes, by_path)
    fresh: dict[str, Change] = {}
    for name in affected:
        fn = new_fns.get(name)
        change = _function_change(fn, desired, live) if fn is not None else _prune(name, live)
        if change is not None:
            fresh[name] = change
    # Functions live on some node but not in Git are prunes; diff() lists them after the
    # functions of Git, each group sorted by name.
    kept = [c for c in base.changes.changes if c.function not in affected]
    kept_updates = [c for c in kept if c.function in new_fns]
    kept_prunes = [c for c in kept if c.function not in new_fns]
    updates = sorted(
        kept_updates + [c for n, c in fresh.items() if n in new_fns], key=lambda c: c.function
    )
    prunes = sorted(
        kept_prunes + [c for n, c in fresh.items() if n not in new_fns], key=lambda c: c.function
    )
    unchanged = _unchanged(base, old_fns, new_fns, affected, fresh)
    changes = ChangeSet(desired.commit, tuple(updates + prunes), unchanged, dict(live.errors))
    return DiffBase(desired, live, changes, by_path)


def _reindex(
    by_path: Mapping[str, frozenset[str]],
    old_fns: Mapping[str, DesiredFunction],
    new_fns: Mapping[str, DesiredFunction],
    affected: set[str],
) -> Mapping[str, frozenset[str]]:
    """`by_path` after the `affected` functions changed (the same mapping when none of them
    names other files than before: the common case of a new version)."""
    moved = [
        n
        for n in affected
        if n not in old_fns or n not in new_fns or _files_of(old_fns[n]) != _files_of(new_fns[n])
    ]
    if not moved:
        return by_path
    index = dict(by_path)
    for gone in (old_fns[n] for n in moved if n in old_fns):
        for path in _files_of(gone):
            left = index.get(path, frozenset()) - {gone.name}
            if left:
                index[path] = left
            else:
                index.pop(path, None)
    for path, names in _index([new_fns[n] for n in moved if n in new_fns]).items():
        index[path] = index.get(path, frozenset()) | names
    return index


def _unchanged(
    base: DiffBase,
    old_fns: Mapping[str, DesiredFunction],
    new_fns: Mapping[str, DesiredFunction],
    affected: set[str],
    fresh: Mapping[str, Change],
) -> tuple[str, ...]:
    """The sorted names of Git's functions that need nothing: the last list, with only the
    `affected` names put in or taken out (the same tuple when none moves)."""
    was_pending = {c.function for c in base.changes.changes}
    leave = [n for n in affected if n in old_fns and n not in was_pending]
    join = [n for n in affected if n in new_fns and n not in fresh]
    if sorted(leave) == sorted(join):
        return base.changes.unchanged
    names = list(base.changes.unchanged)
    for name in leave:
        del names[bisect.bisect_left(names, name)]
    for name in join:
        bisect.insort(names, name)
    return tuple(names)
