"""The store contract (tests/store/contract.py) on the SQLite store: one file, a new
connection per handle, as the daemon and CLI commands open it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.store.protocol import Store
from gitopsd.store.sqlite import SqliteStore
from tests.store.contract import OpenStore, StoreContract


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[OpenStore]:
    opened: list[SqliteStore] = []

    def open_one() -> Store:
        store = SqliteStore(tmp_path / "state")
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


class TestSqliteStore(StoreContract):
    pass
