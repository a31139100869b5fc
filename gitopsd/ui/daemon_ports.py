"""The status page inside `gitopsd run`: ports onto the daemon's own state, and its start.

The page reads what the daemon already holds: the desired state of the last pass and the
store; the commit and its notes come from the daemon's Git mirror; the agents' inventories
through a fleet client of the page's own (fleet_reader.py). A rollback runs as `gitopsd
rollback` does, with a client of its own and the daemon's engine events.

On a shared PostgreSQL state the page has a store connection of its own (`page_store`):
unfenced, as the CLI's operator commands are, so the page of a standby shows the rows the
leader writes and records its operators' actions, and its reads never wait on the
daemon's store lock. A rollback still runs in the daemon, so only where it leads.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2

from gitopsd.config import read_secret
from gitopsd.errors import ConfigError, GitopsdError
from gitopsd.reconcile.results import FunctionResult
from gitopsd.reconcile.summary import summarize_rollout
from gitopsd.source.git import SourceSpec
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.protocol import Store
from gitopsd.store.sqlite import RolloutRow
from gitopsd.ui.fleet_reader import FleetReader
from gitopsd.ui.ports import CommitInfo, UiPorts
from gitopsd.ui.server import StatusPage, serve

if TYPE_CHECKING:
    from gitopsd.daemon.service import Daemon


def read_commit(spec: SourceSpec, state_dir: Path, sha: str) -> CommitInfo | None:
    """The commit `sha` from the daemon's copy of the source (no fetch)."""
    from gitopsd.source.reader import open_source

    try:
        repo = open_source(spec, state_dir, fetch=False)
        found = repo.get(sha)
    except (GitopsdError, OSError, ValueError, KeyError):
        return None
    if not isinstance(found, pygit2.Commit):
        return None
    commit = found
    signed = commit.gpg_signature[0] is not None
    if spec.verify is not None:
        signature = f"verified ({spec.verify.mode})"
    else:
        signature = "signed, not verified here" if signed else "unsigned"
    return CommitInfo(
        sha=str(commit.id),
        message=commit.message.strip(),
        author=f"{commit.author.name} <{commit.author.email}>",
        time=float(commit.commit_time),
        signature=signature,
    )


def read_notes(spec: SourceSpec, state_dir: Path, shas: list[str]) -> dict[str, dict[str, Any]]:
    """The gitopsd notes on `shas` (those that have one)."""
    from gitopsd.report.notes import read_note
    from gitopsd.source.reader import open_source

    try:
        repo = open_source(spec, state_dir, fetch=False)
    except (GitopsdError, OSError):
        return {}
    out = {}
    for sha in shas:
        try:
            note = read_note(repo, sha)
        except (ValueError, KeyError):
            note = None
        if note is not None:
            out[sha] = note
    return out


def page_store(store: Store) -> Store:
    """The store the page reads and records actions in: a connection of its own to a
    PostgreSQL state (the daemon's is fenced by the terms it leads: on a standby it writes
    nothing), the daemon's own SQLite store otherwise."""
    if isinstance(store, PostgresStore):
        return PostgresStore(store.target)
    return store


REAP_TRIES, REAP_WAIT_S = 50, 0.1  # up to 5 s for the daemon to report a finished rollout


class DaemonPorts:
    """UiPorts over a running Daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._commits: dict[str, CommitInfo | None] = {}
        self.store = page_store(daemon.store)
        self.fleet = FleetReader(
            lambda: daemon.pass_state.desired, lambda: daemon.reconciler.client({})
        )

    async def commit(self, sha: str) -> CommitInfo | None:
        if sha not in self._commits:
            info = await asyncio.to_thread(
                read_commit, self.daemon.source, self.daemon.state_dir, sha
            )
            if info is None:
                return None
            self._commits = {sha: info}  # only the synced commit is asked for
        return self._commits[sha]

    async def notes(self, shas: list[str]) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(read_notes, self.daemon.source, self.daemon.state_dir, shas)

    async def rollback(self, function: str, to: str | None) -> RolloutRow:
        """`gitopsd rollback` from the page, run in the daemon: while it runs it stands in
        the daemon's table of running rollouts, so no pass starts another rollout of the
        function, or takes the rollback for one a dead process left and runs it twice."""
        from gitopsd.rollout.operator_rollback import rollback_function

        daemon = self.daemon
        if not daemon.control.leads(function):
            raise GitopsdError(
                f"{function}: this controller is a standby for its shard (another one leads "
                "it): roll back from that controller's page or with `gitopsd rollback`"
            )
        running = daemon.pass_state.rollouts
        for _ in range(REAP_TRIES):
            current = running.get(function)
            if current is None:
                break
            if not current.done():
                raise ConfigError(f"{function}: a rollout of it is running; abort it first")
            daemon.request("operator")  # a finished rollout the next pass reports and forgets
            await asyncio.sleep(REAP_WAIT_S)
        else:
            raise GitopsdError(f"{function}: its last rollout is not reported yet; try again")
        done: dict[str, RolloutRow] = {}

        async def run() -> FunctionResult:
            try:
                async with daemon.reconciler.client({}) as client:
                    row = await rollback_function(
                        daemon.store, client, daemon.clock, function, to, daemon.events.rollout_sink
                    )
                done["row"] = row
                return summarize_rollout(daemon.store, row)
            finally:
                if running.get(function) is task:
                    del running[function]  # before the task ends: no pass reports it
                daemon.request("operator")

        task = asyncio.create_task(run())
        running[function] = task
        await task
        return done["row"]

    def control(self, action: str, function: str) -> str:
        """`gitopsd ACTION FUNCTION` as the CLI runs it, with the daemon's config and state."""
        from gitopsd.cli.commands import run_control
        from gitopsd.cli.context import Ctx

        daemon = self.daemon
        return run_control(Ctx(daemon.config_path, daemon.state_dir, None), action, function)

    def close(self) -> None:
        """Close the page's own store connection (not the daemon's store)."""
        if self.store is not self.daemon.store:
            self.store.close()

    def ports(self) -> UiPorts:
        daemon = self.daemon
        return UiPorts(
            store=self.store,
            events=daemon.events,
            desired=lambda: daemon.pass_state.desired,
            live=self.fleet.live,
            commit=self.commit,
            notes=self.notes,
            rollback=self.rollback,
            control=self.control,
            daemon_error=lambda: daemon.pass_state.last_error,
        )


LOOPBACK = "127.0.0.1"


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets) of `[ui] listen`; a port alone (`9500`, `:9500`)
    listens on loopback only: the page is for this machine unless a host is named."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or LOOPBACK
    if not port.isdigit() or not 0 <= int(port) <= 65535 or any(c.isspace() for c in host):
        raise ConfigError(f"[ui] listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9500")
    return host, int(port)


async def start_ui(daemon: Daemon, stack: contextlib.AsyncExitStack) -> None:
    """Serve the page on `[ui] listen` until the daemon's exit stack closes."""
    ui = daemon.config.ui
    assert ui.listen is not None
    host, port = parse_listen(ui.listen)
    token = read_secret(ui.token_file, "ui token") if ui.token_file else None
    ports = DaemonPorts(daemon)
    page = StatusPage(ports.ports(), token, daemon.clock)
    runner = await serve(page, host, port)
    stack.callback(ports.close)
    stack.push_async_callback(ports.fleet.aclose)
    stack.push_async_callback(runner.cleanup)
    daemon.log.info(
        "status page listening",
        address=ui.listen,
        mode="read-only" if token is None else "actions with login",
    )
