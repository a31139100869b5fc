"""The one way an outcome leaves gitopsd: the git note on the commit (pushed to the remote of
a URL source) and the forge commit statuses, done off the caller's event loop.

`OutcomePublisher.submit` only records the outcome in an outbox kept in the store (so a
restart loses nothing) and wakes one worker task. The worker writes notes in a thread, in
the order they were submitted (each write merges into the note, keeping its history), then
pushes the notes ref once for everything written so far: ten outcomes of one pass cost one
`git push`. A push the remote refuses, or that times out, is retried with capped,
jittered backoff; a remote whose `pre-receive` hook takes 20 s delays only the note, never
the daemon's `/metrics`, webhooks, watches or watchdog pings.

The daemon keeps one publisher for its life, its outbox in the store. `gitopsd sync`, the
Python API and the demo publish through `publish_now`: the same worker, no outbox (they wait
for it before they return, and must not take over the outbox of a daemon sharing the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gitopsd.errors import SourceError, StoreError
from gitopsd.log import get_logger
from gitopsd.report.forges import ForgeReporter, outcome_statuses
from gitopsd.report.notes import (
    CommitOutcome,
    FunctionOutcome,
    parse_note_status,
    push_notes,
    write_note,
)
from gitopsd.source.git import SourceSpec, local_path
from gitopsd.source.hostkeys import is_ssh_url
from gitopsd.source.reader import git_env, open_source
from gitopsd.store.protocol import Store

OUTBOX_KEY = "publisher:outbox"
PUSH_PENDING_KEY = "publisher:push-pending"
MAX_OUTBOX = 512
"""Outcomes kept waiting at most; past it the oldest waiting ones of commits that have a
newer outcome are dropped first (their note keeps the newest), then the oldest at all."""
MAX_PUSH_BACKOFF = 300.0


def outcome_from_dict(data: dict[str, Any]) -> CommitOutcome:
    """The inverse of `dataclasses.asdict(outcome)`, for outcomes read back from the outbox."""
    functions = {
        name: FunctionOutcome(
            **{
                **fn,
                "status": parse_note_status(fn["status"]),
                "nodes_ok": tuple(fn["nodes_ok"]),
                "nodes_failed": tuple(fn["nodes_failed"]),
            }
        )
        for name, fn in dict(data.get("functions") or {}).items()
    }
    return CommitOutcome(
        commit=str(data["commit"]),
        status=parse_note_status(data["status"]),
        message=str(data["message"]),
        functions=functions,
        problems=tuple(data.get("problems") or ()),
    )


def pushes_notes(source: SourceSpec) -> bool:
    """Notes are pushed only from a mirror (a URL source); a local repository is the
    operator's own, where the note is written in place."""
    return (
        is_ssh_url(source.url) or source.url.startswith("file://") or local_path(source.url) is None
    )


class OutcomePublisher:
    """Writes notes and forge statuses for submitted outcomes, in order, off the loop."""

    def __init__(
        self,
        source: SourceSpec,
        state_dir: Path,
        store: Store | None,
        forges: ForgeReporter | None = None,
        *,
        git_notes: bool = True,
        push: bool = True,
        push_backoff: float = 1.0,
        max_outbox: int = MAX_OUTBOX,
    ) -> None:
        self.source = source
        self.state_dir = state_dir
        self.store = store
        self.forges = forges or ForgeReporter()
        self.git_notes = git_notes
        self.push = push and pushes_notes(source)
        self.max_outbox = max_outbox
        self.dropped = 0
        self.push_backoff = push_backoff
        self._outbox: list[dict[str, Any]] = self._load_outbox()
        self._push_pending = store is not None and store.get(PUSH_PENDING_KEY) == "1"
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._push_failures = 0
        self.log = get_logger(component="publisher")

    # the caller's side ------------------------------------------------------------------------

    def configure(
        self, source: SourceSpec, forges: ForgeReporter, *, git_notes: bool, push: bool
    ) -> None:
        """Take a reloaded config (SIGHUP): what is queued is published under the new one."""
        self.source = source
        self.forges = forges
        self.git_notes = git_notes
        self.push = push and pushes_notes(source)

    def submit(self, outcome: CommitOutcome) -> None:
        """Queue `outcome` and return at once (the worker starts on first use)."""
        if not outcome.commit:
            return
        self.start()
        self._outbox.append(asdict(outcome))
        self._bound()
        self._save_outbox()
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        """Start the worker; outcomes a previous process left in the outbox go first."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            if self._outbox or self._push_pending:
                self._idle.clear()
                self._wake.set()
            else:
                self._idle.set()

    async def drain(self, within: float | None = None) -> bool:
        """Wait until every submitted outcome is written and posted and the notes push was
        tried once; False when `within` seconds passed first. What is left (outcomes, a push the
        remote refused) stays in the store for the next run."""
        if self._task is None:
            self.start()
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

    async def aclose(self, grace: float = 5.0) -> None:
        """Give the worker `grace` seconds to finish, then stop it; the outbox keeps the rest.
        The forge reporter is the caller's to close."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def waiting(self) -> int:
        """Outcomes not yet written (for metrics and tests)."""
        return len(self._outbox)

    # the worker -------------------------------------------------------------------------------

    async def _run(self) -> None:
        retry_in: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), retry_in)
            self._wake.clear()
            while self._outbox:
                await self._publish(outcome_from_dict(self._outbox[0]))
                self._outbox.pop(0)
                self._save_outbox()
            retry_in = None
            if self._push_pending and not await self._push():
                # Retried in the background; `drain` does not wait for it (a CLI run leaves
                # the push to the next run through the persisted flag).
                backoff = self.push_backoff * 2.0 ** min(self._push_failures - 1, 12)
                retry_in = min(MAX_PUSH_BACKOFF, backoff) * random.uniform(0.5, 1.0)
            if not self._outbox:
                self._idle.set()

    async def _publish(self, outcome: CommitOutcome) -> None:
        if self.git_notes and await asyncio.to_thread(self._write_note, outcome):
            self._set_push_pending(self.push)
        statuses = outcome_statuses(outcome)
        await asyncio.gather(
            *(self.forges.post_all(outcome.commit, fn, st, text) for fn, st, text in statuses)
        )

    def _write_note(self, outcome: CommitOutcome) -> bool:
        log = self.log.bind(commit=outcome.commit[:12])
        try:
            repo = open_source(self.source, self.state_dir, fetch=False)
            write_note(repo, outcome)
        except (SourceError, OSError, ValueError, KeyError) as exc:
            log.warning("could not write git note", error=str(exc))
            return False
        log.info("git note written", status=outcome.status)
        return True

    async def _push(self) -> bool:
        ok = await asyncio.to_thread(self._push_now)
        self._push_failures = 0 if ok else self._push_failures + 1
        if ok:
            self._set_push_pending(False)
        return ok

    def _push_now(self) -> bool:
        try:
            repo = open_source(self.source, self.state_dir, fetch=False)
            return push_notes(Path(repo.path), env=git_env(self.source))
        except (SourceError, OSError) as exc:
            self.log.warning("notes push failed", error=str(exc))
            return False

    # the outbox -------------------------------------------------------------------------------

    def _bound(self) -> None:
        while len(self._outbox) > self.max_outbox:
            commits = [o["commit"] for o in self._outbox]
            superseded = next(
                (i for i, c in enumerate(commits) if c in commits[i + 1 :]), 0
            )  # an outcome with a newer one for its commit, else the oldest
            dropped = self._outbox.pop(superseded)
            self.dropped += 1
            self.log.warning("outcome dropped: outbox full", commit=str(dropped["commit"])[:12])

    def _load_outbox(self) -> list[dict[str, Any]]:
        raw = self.store.get(OUTBOX_KEY) if self.store is not None else None
        if not raw:
            return []
        try:
            data = json.loads(raw)
        except ValueError:
            return []
        return (
            [o for o in data if isinstance(o, dict) and o.get("commit")]
            if isinstance(data, list)
            else []
        )

    def _save_outbox(self) -> None:
        self._put(OUTBOX_KEY, json.dumps(self._outbox) if self._outbox else "")

    def _set_push_pending(self, pending: bool) -> None:
        if pending != self._push_pending:
            self._push_pending = pending
            self._put(PUSH_PENDING_KEY, "1" if pending else "")

    def _put(self, key: str, value: str) -> None:
        """Persist, or log why not: a store that refuses the write (a standby's fenced
        PostgreSQL store, a full disk) must not stop the worker; the outbox in memory goes on
        and the next write that succeeds carries it."""
        if self.store is None:
            return
        try:
            self.store.put(key, value)
        except StoreError as exc:
            self.log.warning("publisher could not persist its outbox", error=str(exc))


async def publish_now(
    source: SourceSpec,
    state_dir: Path,
    outcome: CommitOutcome,
    forges: ForgeReporter | None = None,
    *,
    git_notes: bool = True,
    push: bool = True,
) -> None:
    """Publish one outcome and return once its note is written (and pushed, where the
    remote takes it) and its forge statuses are posted."""
    publisher = OutcomePublisher(source, state_dir, None, forges, git_notes=git_notes, push=push)
    publisher.submit(outcome)
    try:
        await publisher.drain()
    finally:
        await publisher.aclose(grace=0)
