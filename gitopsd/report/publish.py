"""Put a CommitOutcome where operators look: the note on the commit, pushed to the remote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitopsd.errors import SourceError
from gitopsd.log import get_logger
from gitopsd.report.notes import CommitOutcome, push_notes, write_note
from gitopsd.source.git import SourceSpec, local_path
from gitopsd.source.hostkeys import is_ssh_url
from gitopsd.source.reader import git_env, open_source


def publish(
    source: SourceSpec, state_dir: Path, outcome: CommitOutcome, push: bool = True
) -> dict[str, Any] | None:
    """Write the note (merged with what is there) and push it for URL sources.

    A failure here is logged and swallowed: a report must never break a rollout.
    """
    if not outcome.commit:
        return None
    log = get_logger(commit=outcome.commit[:12])
    try:
        repo = open_source(source, state_dir, fetch=False)
        body = write_note(repo, outcome)
    except (SourceError, OSError, ValueError, KeyError) as exc:
        log.warning("could not write git note", error=str(exc))
        return None
    ssh = is_ssh_url(source.url)
    is_mirror = ssh or source.url.startswith("file://") or local_path(source.url) is None
    if push and is_mirror:
        push_notes(Path(repo.path), env=git_env(source))
    log.info("git note written", status=outcome.status)
    return body
