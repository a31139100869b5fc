"""The test PostgreSQL server itself: real, unprivileged, password over TCP."""

from __future__ import annotations

import psycopg
import pytest

from tests.store.pgserver import SUPERUSER, PgServer


def test_the_server_runs_unprivileged_and_tcp_needs_the_password(pg_server: PgServer) -> None:
    db = pg_server.create_database()
    # The postmaster's data directory is owned by an unprivileged account, never root.
    assert pg_server.sql(db, "SELECT current_user") == [(SUPERUSER,)]
    assert (pg_server.root / "data").stat().st_uid != 0
    with psycopg.connect(pg_server.url(db), password=pg_server.password) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg_server.url(db), connect_timeout=5)
