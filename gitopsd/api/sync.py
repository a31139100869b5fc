"""GitOpsSynchronizer: the seed's sync/watch/get_diff over the reconciler.

`sync()` is one reconcile pass, exactly what `gitopsd sync --once` does (the same steps,
gitopsd/reconcile/pipeline.py): read the branch and the fleet, roll out every change through
the engine, and write the outcome as a git note on the commit (and forge statuses).
`watch()` polls the branch and syncs each new commit.

Every method runs its own event loop (asyncio.run): call them from ordinary code or a worker
thread, never from inside a running event loop (RuntimeError).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gitopsd.api._run import ensure_no_loop, run_blocking
from gitopsd.api._store import open_api_store
from gitopsd.clock import Clock, SystemClock
from gitopsd.config import default_state_dir, read_secret
from gitopsd.diff import Change
from gitopsd.errors import GitopsdError, InvalidManifests
from gitopsd.log import get_logger
from gitopsd.reconcile import FunctionResult, Reconciler
from gitopsd.reconcile.outcomes import Publish
from gitopsd.reconcile.pipeline import one_shot_ports, run_steps
from gitopsd.report.forges import ForgeReporter, ForgeTarget
from gitopsd.report.notes import CommitOutcome
from gitopsd.report.publisher import publish_now
from gitopsd.rollout.engine import EventSink
from gitopsd.source.ancestry import NonFastForward
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import current_commit
from gitopsd.source.redact import redact
from gitopsd.source.verify import SignatureRefused

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
    `allow_non_fast_forward` is set. Like `gitopsd sync`, a sync notes the commit "pending"
    while its rollouts run, then with their outcome: as a git note (unless `notes` is
    False) and as commit statuses on each of `forges`. `state_url` (`postgresql://...`, with
    `state_password_file`) shares the daemon's PostgreSQL store instead of the SQLite file.
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
        forges: Iterable[ForgeTarget] = (),
        state_url: str | None = None,
        state_password_file: str | Path | None = None,
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
        self.forges = tuple(forges)
        self.reconciler = Reconciler(
            open_api_store(self.state_dir, state_url, state_password_file),
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
        """The pass of `gitopsd sync` (gitopsd/reconcile/pipeline.py); its errors in words."""
        rec = self.reconciler
        async with contextlib.AsyncExitStack() as stack:
            forges = await stack.enter_async_context(ForgeReporter(self.forges))
            p = await stack.enter_async_context(
                rec.open_pass(self.source, one_shot_ports(self._publisher(forges)))
            )
            try:
                await run_steps(p)
            except InvalidManifests as exc:
                return SyncResult(exc.commit, False, errors=[str(e) for e in exc.problems])
            except (SignatureRefused, NonFastForward) as exc:
                return SyncResult(exc.commit, False, errors=[str(exc)])
            except GitopsdError as exc:
                commit = p.desired.commit if p.desired is not None else ""
                changes = list(p.changes.changes) if p.changes is not None else []
                return SyncResult(commit, False, changes, [], [str(exc)])
        report = p.report()
        errors = [*report.problems]
        errors += [
            f"{r.function} {r.version}: {r.state}: {r.message}" for r in report.results if not r.ok
        ]
        return SyncResult(
            commit=report.commit,
            success=report.ok,
            changes=list(p.changes.changes) if p.changes is not None else [],
            results=list(report.results),
            errors=errors,
        )

    def _publisher(self, forges: ForgeReporter) -> Publish:
        """The note on the commit (when `notes`), then its forge statuses."""

        async def publish(outcome: CommitOutcome) -> None:
            await publish_now(self.source, self.state_dir, outcome, forges, git_notes=self.notes)

        return publish

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
