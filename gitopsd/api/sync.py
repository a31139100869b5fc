"""GitOpsSynchronizer: the seed's sync/watch/get_diff over the reconciler.

`sync()` is one reconcile pass, exactly what `gitopsd sync --once` does: read the branch and
the fleet, roll out every change through the engine, and write the outcome as a git note on
the commit. `watch()` polls the branch and syncs each new commit.

Every method runs its own event loop (asyncio.run): call them from ordinary code or a worker
thread, never from inside a running event loop (RuntimeError).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gitopsd.api._run import ensure_no_loop, run_blocking
from gitopsd.clock import Clock, SystemClock
from gitopsd.config import default_state_dir, read_secret
from gitopsd.diff import Change
from gitopsd.errors import GitopsdError, InvalidManifests
from gitopsd.log import get_logger
from gitopsd.reconcile import FunctionResult, Reconciler
from gitopsd.report.notes import CommitOutcome, non_fast_forward_outcome, refused_outcome
from gitopsd.report.publisher import publish_now
from gitopsd.rollout.engine import EventSink
from gitopsd.source.ancestry import NonFastForward
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import current_commit
from gitopsd.source.redact import redact
from gitopsd.source.verify import SignatureRefused
from gitopsd.store.sqlite import SqliteStore

STOP_POLL_SECONDS = 0.05  # how often a sleeping watch() looks at its stop event


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: the commit, whether everything went well, the changes it found, the
    rollouts it ran (FunctionResult per function) and every error in words."""

    commit: str
    success: bool
    changes: list[Change] = field(default_factory=list)
    results: list[FunctionResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class GitOpsSynchronizer:
    """Keeps the fleet as the manifests under `path` on `branch` of `repo_url` say.

    `repo_url` is a local repository path (bare or not) or a `file://`, `https://` or
    `ssh://` URL; `state_dir` holds the store and URL mirrors (share the daemon's to share
    its history); `token` is the agents' bearer token. A head that does not descend from
    the last applied commit is refused (a failed SyncResult and a failure note) unless
    `allow_non_fast_forward` is set.
    """

    def __init__(
        self,
        repo_url: str,
        branch: str = "main",
        path: str = "/",
        *,
        state_dir: str | Path | None = None,
        token: str | None = None,
        clock: Clock | None = None,
        notes: bool = True,
        timeout: float = 10.0,
        concurrency: int = 64,
        on_event: EventSink | None = None,
        allow_non_fast_forward: bool = False,
    ) -> None:
        self.source = SourceSpec(
            repo_url, branch, path, allow_non_fast_forward=allow_non_fast_forward
        )
        # The same defaults as the CLI: $GITOPSD_STATE_DIR (or ~/.local/state/gitopsd) and
        # the token file named by $GITOPSD_AGENT_TOKEN_FILE.
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        if token is None and os.environ.get("GITOPSD_AGENT_TOKEN_FILE"):
            token = read_secret(Path(os.environ["GITOPSD_AGENT_TOKEN_FILE"]), "agent token")
        self.clock: Clock = clock or SystemClock()
        self.notes = notes
        self.reconciler = Reconciler(
            SqliteStore(self.state_dir),
            self.state_dir,
            self.clock,
            token,
            timeout=timeout,
            concurrency=concurrency,
            on_event=on_event,
        )
        # redact: a host that configured structlog itself runs without gitopsd's processors
        self._log = get_logger(component="api", source=redact(repo_url), branch=branch)

    def close(self) -> None:
        self.reconciler.store.close()

    def sync(self) -> SyncResult:
        """One pass: roll out what changed and note the outcome on the commit.

        A bad commit or an unreachable source is a failed SyncResult, not an exception.
        """
        return run_blocking("GitOpsSynchronizer.sync", self._sync)

    def get_diff(self) -> list[Change]:
        """What a sync would change now (nothing is applied). InvalidManifests if the branch's
        manifests are invalid."""

        async def read() -> list[Change]:
            return list((await self.reconciler.read(self.source)).changes.changes)

        return run_blocking("GitOpsSynchronizer.get_diff", read)

    def watch(
        self,
        callback: Callable[[SyncResult], object],
        *,
        interval: float = 1.0,
        stop: threading.Event | None = None,
        since: str | None = None,
    ) -> None:
        """Poll the branch every `interval` seconds (on the injected clock) and, whenever its
        commit moves, sync and call `callback(result)`. Blocks until `stop` is set (forever
        without one). `since` is the commit taken as already seen (default: the branch's
        commit when the watch starts; call sync() first to converge on it). An exception
        from `callback` ends the watch."""
        ensure_no_loop("GitOpsSynchronizer.watch")
        stop = stop or threading.Event()
        seen = since or self._commit()
        while not stop.is_set():
            asyncio.run(self._sleep(interval, stop))
            if stop.is_set():
                return
            commit = self._commit()
            if commit is None or commit == seen:
                continue
            self._log.info("branch moved", commit=commit[:12])
            result = self.sync()
            seen = result.commit or commit
            callback(result)  # outside any event loop: it may call this API again

    # internals ----------------------------------------------------------------------------

    async def _sync(self) -> SyncResult:
        rec = self.reconciler
        try:
            read = await rec.read(self.source)
        except InvalidManifests as exc:
            problems = [str(p) for p in exc.problems]
            await self._publish(
                CommitOutcome(
                    exc.commit,
                    "failure",
                    "invalid manifests; nothing applied",
                    problems=tuple(problems),
                )
            )
            return SyncResult(exc.commit, False, errors=problems)
        except SignatureRefused as exc:
            await self._publish(refused_outcome(exc))
            return SyncResult(exc.commit, False, errors=[str(exc)])
        except GitopsdError as exc:
            return SyncResult("", False, errors=[str(exc)])
        try:
            rec.check_fast_forward(self.source, read.snapshot.commit)
        except NonFastForward as exc:
            await self._publish(non_fast_forward_outcome(exc))
            return SyncResult(exc.commit, False, list(read.changes.changes), [], [str(exc)])
        try:
            report = await rec.apply(read)
        except GitopsdError as exc:
            return SyncResult(
                read.snapshot.commit, False, list(read.changes.changes), [], [str(exc)]
            )
        if report.results or not read.changes.changes:
            await self._publish(report.outcome())
        if report.ok:
            rec.store.put("last_applied_commit", report.commit)
        errors = [*report.problems]
        errors += [
            f"{r.function} {r.version}: {r.state}: {r.message}" for r in report.results if not r.ok
        ]
        return SyncResult(
            commit=report.commit,
            success=report.ok,
            changes=list(read.changes.changes),
            results=list(report.results),
            errors=errors,
        )

    async def _publish(self, outcome: CommitOutcome) -> None:
        if self.notes:
            await publish_now(self.source, self.state_dir, outcome)

    def _commit(self) -> str | None:
        try:
            return current_commit(self.source, self.state_dir)
        except GitopsdError as exc:
            self._log.warning("cannot read the branch", error=str(exc))
            return None

    async def _sleep(self, seconds: float, stop: threading.Event) -> None:
        deadline = self.clock.now() + seconds
        while not stop.is_set() and self.clock.now() < deadline:
            await self.clock.sleep_until(min(deadline, self.clock.now() + STOP_POLL_SECONDS))
