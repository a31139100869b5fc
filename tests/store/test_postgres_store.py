"""The store contract (tests/store/contract.py) on the PostgreSQL store, against a real
server (tests/store/pgserver.py): a fresh database per test, a new connection per handle."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gitopsd.store.pg_url import pg_target
from gitopsd.store.postgres import PostgresStore
from gitopsd.store.protocol import Store
from tests.store.contract import OpenStore, StoreContract
from tests.store.pgserver import PgServer


@pytest.fixture
def open_store(pg_server: PgServer) -> Iterator[OpenStore]:
    url = pg_server.url(pg_server.create_database(), with_password=True)
    opened: list[PostgresStore] = []

    def open_one() -> Store:
        store = PostgresStore(pg_target(url))
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


class TestPostgresStore(StoreContract):
    pass
