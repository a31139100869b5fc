"""What wakes the reconcile loop besides the poll: a watch on a local repository's refs.

The watch is a hint, polling is the truth: a missed event costs at most one interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pygit2

from gitopsd.log import get_logger
from gitopsd.source.git import local_path


def refs_dir(url: str) -> Path | None:
    """The directory whose files change on a push to a local repository, None for URLs."""
    path = local_path(url)
    if path is None or not path.exists():
        return None
    found = pygit2.discover_repository(str(path))
    return Path(found) if found else None


async def watch_refs(git_dir: Path, trigger: Callable[[str], None], stop: asyncio.Event) -> None:
    """Call `trigger` when a ref or packed-refs changes (a push shows as `<ref>.lock` then
    `<ref>`). watchfiles' default filter ignores `.git`, so a filter of our own is passed."""
    from watchfiles import awatch

    log = get_logger(component="watch", path=str(git_dir))

    def interesting(_change: object, path: str) -> bool:
        rel = Path(path).relative_to(git_dir).as_posix() if path.startswith(str(git_dir)) else ""
        return rel.startswith("refs/heads") or rel == "packed-refs" or rel == "HEAD"

    try:
        async for _changes in awatch(
            git_dir,
            watch_filter=interesting,
            debounce=200,
            step=20,
            stop_event=stop,
            recursive=True,
        ):
            trigger("watch")
    except (OSError, RuntimeError) as exc:  # the watch is only a hint: polling goes on
        log.warning("watch stopped", error=str(exc))
