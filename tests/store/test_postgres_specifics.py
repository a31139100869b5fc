"""What only the PostgreSQL store has: the URL and its password, an unreachable server,
versioned migrations, and the shard hash the database's fencing trigger shares with Python."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gitopsd.errors import ConfigError, StoreError
from gitopsd.store.pg_schema import latest_version, migrations
from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.shards import shard_of
from tests.store.pgserver import SUPERUSER, PgServer


def test_the_password_file_is_used_and_never_shown(pg_server: PgServer, tmp_path: Path) -> None:
    db = pg_server.create_database()
    secret = tmp_path / "pg-password"
    secret.write_text(pg_server.password + "\n")
    store = PostgresStore(pg_target(pg_server.url(db), secret))
    try:
        store.put("k", "v")
        assert store.get("k") == "v"
        assert store.location == f"postgresql://{SUPERUSER}@127.0.0.1:{pg_server.port}/{db}"
        assert pg_server.password not in repr(store.target)
    finally:
        store.close()


def test_a_password_in_the_url_never_reaches_a_message(pg_server: PgServer) -> None:
    db = pg_server.create_database()
    store = PostgresStore(pg_target(pg_server.url(db, with_password=True)))
    try:
        assert pg_server.password not in store.location
    finally:
        store.close()
    wrong = f"postgresql://{SUPERUSER}:not-{pg_server.password}@127.0.0.1:{pg_server.port}/{db}"
    with pytest.raises(StoreError) as refused:
        PostgresStore(pg_target(wrong))
    message = str(refused.value)
    assert "password authentication failed" in message
    assert pg_server.password not in message and "not-" not in message
    assert f"127.0.0.1:{pg_server.port}/{db}" in message


def test_an_unreachable_server_is_a_store_error_naming_it(pg_server: PgServer) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreError) as refused:
        PostgresStore(pg_target(f"postgresql://gitopsd@127.0.0.1:{port}/state"))
    assert str(refused.value).startswith(
        f"cannot reach the state database postgresql://gitopsd@127.0.0.1:{port}/state: "
    )
    assert refused.value.exit_code == 2


def test_only_postgresql_urls_are_accepted() -> None:
    with pytest.raises(ConfigError, match="only postgresql://"):
        pg_target("mysql://root:pw@db/state")


def test_migrations_are_numbered_and_applied_once_by_concurrent_starts(
    pg_server: PgServer,
) -> None:
    assert [m.version for m in migrations()] == list(range(1, latest_version() + 1))
    url = pg_server.url(pg_server.create_database(), with_password=True)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        try:
            start.wait()
            opened.append(PostgresStore(pg_target(url)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        db = url.rsplit("/", 1)[1]
        rows = pg_server.sql(db, "SELECT version FROM gitopsd_schema ORDER BY version")
        assert [v for (v,) in rows] == list(range(1, latest_version() + 1))
        assert all(store.check(thorough=True).ok for store in opened)
    finally:
        for store in opened:
            store.close()


def test_a_schema_newer_than_this_gitopsd_is_refused(pg_server: PgServer) -> None:
    db = pg_server.create_database()
    url = pg_server.url(db, with_password=True)
    PostgresStore(pg_target(url)).close()
    future = latest_version() + 1
    pg_server.sql(db, f"INSERT INTO gitopsd_schema (version, name) VALUES ({future}, 'x.sql')")
    with pytest.raises(StoreError, match=f"schema version {future}, newer than this gitopsd"):
        PostgresStore(pg_target(url))


def test_the_shard_of_a_function_is_the_same_in_python_and_in_the_database(
    pg_server: PgServer,
) -> None:
    db = pg_server.create_database()
    PostgresStore(pg_target(pg_server.url(db, with_password=True))).close()
    names = [f"fn-{i}" for i in range(200)] + ["", "ünïcode-fn", "a" * 300]
    for shards in (1, 3, 7):
        values = ", ".join("('" + n.replace("'", "''") + "')" for n in names)
        rows = pg_server.sql(
            db, f"SELECT name, gitopsd_shard(name, {shards}) FROM (VALUES {values}) AS t(name)"
        )
        assert {str(n): s for n, s in rows} == {n: shard_of(n, shards) for n in names}
    # Spread: with 3 shards every shard gets a fair part of 200 names.
    counts = [sum(shard_of(f"fn-{i}", 3) == s for i in range(200)) for s in range(3)]
    assert min(counts) > 40


def test_a_dropped_connection_fails_one_call_and_the_next_reconnects(
    pg_server: PgServer,
) -> None:
    db = pg_server.create_database()
    store = PostgresStore(pg_target(pg_server.url(db, with_password=True)))
    try:
        store.put("k", "1")
        pg_server.sql(
            db,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        with pytest.raises(
            StoreError, match=f"state database postgresql://gitopsd@127.0.0.1:{pg_server.port}/{db}"
        ):
            store.put("k", "2")
        store.put("k", "3")  # a new connection
        assert store.get("k") == "3"
    finally:
        store.close()
