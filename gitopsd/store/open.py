"""Open the configured store: PostgreSQL when `[state] url` is set, else the SQLite file in
the state dir. Every command and the daemon open it here, so the choice is made once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gitopsd.store.protocol import Store

if TYPE_CHECKING:
    from gitopsd.config import Config


def open_store(config: Config, state_dir: Path) -> Store:
    """The store `config` names; StoreError (exit 2, naming it) when it cannot be reached."""
    if config.state.url:
        from gitopsd.store.pg_url import pg_target
        from gitopsd.store.postgres import PostgresStore

        return PostgresStore(pg_target(config.state.url, config.state.password_file))
    from gitopsd.store.sqlite import SqliteStore

    return SqliteStore(state_dir)
