"""Shared fixtures: a Git remote to push manifests to, and a fleet of real agents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleetfixture import Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.signing import Keys, make_keys
from tests.store.pgserver import PgServer, running_pg_server


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    """A bare repository plus the operator's working clone."""
    return GitRemote(tmp_path / "git")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Three real agents: two in us-east, one in eu-central."""
    with running_fleet(tmp_path / "fleet") as f:
        f.add("edge-a", "us-east", tier="prod")
        f.add("edge-b", "us-east", tier="prod")
        f.add("edge-c", "eu-central", tier="prod")
        yield f


@pytest.fixture
def big_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Six real agents in three regions."""
    with running_fleet(tmp_path / "big-fleet") as f:
        for region in ("ap-south", "eu-central", "us-east"):
            for i in (1, 2):
                f.add(f"edge-{region}-{i}", region, tier="prod")
        yield f


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    """Real SSH and GPG signing keys, made once per test session."""
    with make_keys(tmp_path_factory.mktemp("keys")) as made:
        yield made


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server (Debian's package), started once per test session (per xdist
    worker) as an unprivileged user on a free port; stopped and removed after."""
    with running_pg_server() as server:
        yield server
