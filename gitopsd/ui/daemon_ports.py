"""The status page inside `gitopsd run`: ports onto the daemon's own state, and its start.

The page reads what the daemon already holds: the desired state of the last pass, the
fleet client's inventories (held requests keep them current, so a page view asks no
agent anything), the store; the commit and its notes from the daemon's Git mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pygit2

from gitopsd.config import read_secret
from gitopsd.errors import ConfigError, GitopsdError
from gitopsd.fleet.live import LiveState
from gitopsd.source.git import SourceSpec
from gitopsd.store.sqlite import RolloutRow
from gitopsd.ui.ports import CommitInfo, UiPorts
from gitopsd.ui.server import StatusPage, serve

if TYPE_CHECKING:
    from gitopsd.daemon.service import Daemon

LIVE_TTL_S = 0.5  # page views within this share one read of the fleet client's cache


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


class DaemonPorts:
    """UiPorts over a running Daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._live: tuple[float, LiveState] | None = None
        self._commits: dict[str, CommitInfo | None] = {}

    async def live(self) -> LiveState:
        client = self.daemon.client
        desired = self.daemon.pass_state.desired
        if client is None or desired is None:
            return LiveState()
        now = time.monotonic()
        if self._live is not None and now - self._live[0] < LIVE_TTL_S:
            return self._live[1]
        state = await client.live_state({n: d.address for n, d in desired.nodes.items()})
        self._live = (now, state)
        return state

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
        from gitopsd.rollout.operator_rollback import rollback_function

        client = self.daemon.client
        if client is None:
            raise GitopsdError("the daemon is not connected to its fleet yet")
        row = await rollback_function(
            self.daemon.store,
            client,
            self.daemon.clock,
            function,
            to,
            self.daemon.events.rollout_sink,
        )
        self.daemon.request("operator")
        return row

    def ports(self) -> UiPorts:
        daemon = self.daemon
        return UiPorts(
            store=daemon.store,
            events=daemon.events,
            desired=lambda: daemon.pass_state.desired,
            live=self.live,
            commit=self.commit,
            notes=self.notes,
            rollback=self.rollback,
            daemon_error=lambda: daemon.pass_state.last_error,
        )


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) of `[ui] listen`."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"[ui] listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9500")
    return host.strip("[]"), int(port)


async def start_ui(daemon: Daemon, stack: contextlib.AsyncExitStack) -> None:
    """Serve the page on `[ui] listen` until the daemon's exit stack closes."""
    ui = daemon.config.ui
    assert ui.listen is not None
    host, port = parse_listen(ui.listen)
    token = read_secret(ui.token_file, "ui token") if ui.token_file else None
    page = StatusPage(DaemonPorts(daemon).ports(), token, daemon.clock)
    runner = await serve(page, host, port)
    stack.push_async_callback(runner.cleanup)
    daemon.log.info(
        "status page listening",
        address=ui.listen,
        mode="read-only" if token is None else "actions with login",
    )
