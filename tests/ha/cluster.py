"""Real `gitopsd run` processes sharing one real PostgreSQL database: their configs, and
reads of the shared state behind their backs (rollouts, journal, who leads)."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.rows import JournalRow, RolloutRow
from tests.daemon.daemonsupport import DaemonProcess, free_port
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push
from tests.store.pgserver import PgServer


class Cluster:
    """The shared database and the daemons on it."""

    def __init__(
        self, root: Path, pg: PgServer, remote: GitRemote, fleet: Fleet, function: str = "hello"
    ) -> None:
        self.root = root
        self.pg = pg
        self.db = pg.create_database()
        self.url = pg.url(self.db)
        self.admin_url = pg.url(self.db, with_password=True)
        self.password = pg.password
        self.remote = remote
        self.fleet = fleet
        self.function = function
        self.daemons: list[DaemonProcess] = []

    def daemon(
        self,
        name: str,
        watch: bool = True,
        lease: str = "PT1S",
        interval: str = "PT1H",
        extra: str = "",
    ) -> DaemonProcess:
        """A daemon's files (not started); `extra` is appended to its config."""
        d = DaemonProcess(self.root / name, self.remote, self.fleet)
        (d.root / "pg-password").write_text(self.password + "\n")
        d.config.write_text(
            f'[source]\nurl = "{self.remote.bare}"\nbranch = "main"\ninterval = "{interval}"\n'
            f"watch = {str(watch).lower()}\n"
            f'[fleet]\ntoken_file = "{self.fleet.token_file}"\n'
            f'[state]\ndir = "{d.state}"\nurl = "{self.url}"\npassword_file = "pg-password"\n'
            f'[ha]\nlease = "{lease}"\n'
            f'[webhook]\nlisten = "127.0.0.1:{d.webhook_port}"\nsecret_file = "secret"\n'
            f'[metrics]\nlisten = "127.0.0.1:{d.metrics_port}"\n' + extra
        )
        self.daemons.append(d)
        return d

    def daemon_with_page(self, name: str, token_file: Path) -> tuple[DaemonProcess, str]:
        """A daemon with `[ui] listen` and `token_file`; the page's base URL."""
        port = free_port()
        ui = f'[ui]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{token_file}"\n'
        return self.daemon(name, extra=ui), f"http://127.0.0.1:{port}"

    def store(self) -> PostgresStore:
        return PostgresStore(pg_target(self.admin_url))

    def rollout(self, version: str, function: str | None = None) -> RolloutRow | None:
        store = self.store()
        try:
            rows = [r for r in store.rollouts(function or self.function) if r.version == version]
            return rows[0] if rows else None
        finally:
            store.close()

    def journal(self, version: str) -> list[JournalRow]:
        row = self.rollout(version)
        if row is None:
            return []
        store = self.store()
        try:
            return store.journal(row.id)
        finally:
            store.close()

    def waiting(self, version: str) -> JournalRow | None:
        """The canary's wait step while it is under way."""
        for entry in self.journal(version):
            if entry.step.get("kind") == "wait" and entry.outcome is None:
                return entry
        return None

    def close(self) -> None:
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
            d.close()


def leads(d: DaemonProcess) -> bool:
    """`gitopsd_leader 1` on the daemon's /metrics."""
    try:
        return re.search(r"^gitopsd_leader 1(?:\.0)?$", d.metrics(), re.M) is not None
    except OSError:
        return False


def serves(fleet: Fleet, version: str, function: str = "hello") -> bool:
    return set(fleet.serving(function).values()) == {version}


@pytest.fixture
def cluster(
    tmp_path: Path, pg_server: PgServer, remote: GitRemote, fleet: Fleet
) -> Iterator[Cluster]:
    """`hello` 1.0.0 in Git (blue-green) over the three agents of `fleet`; no daemon yet."""
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "hello", "1.0.0", "{type: blue-green}")
    c = Cluster(tmp_path, pg_server, remote, fleet)
    yield c
    c.close()
