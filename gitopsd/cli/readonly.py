"""The state store as the read-only commands (`status`, `history`, `diff`) see it: they
create nothing. A state database that does not exist yet is "nothing recorded", said with
the directory looked in and how it was chosen, never a new empty `gitopsd.db`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from gitopsd.cli.context import Ctx
from gitopsd.store.protocol import Store


def existing_store(ctx: Ctx) -> Store | None:
    """The configured store when there is one to read; None when opening it would create
    it (no `gitopsd.db` in the state dir yet). A PostgreSQL store always exists."""
    from gitopsd.store.open import open_store
    from gitopsd.store.sqlite import DB_NAME

    if ctx.config.state.url or (ctx.state_dir / DB_NAME).is_file():
        return open_store(ctx.config, ctx.state_dir)
    return None


def nothing_recorded(ctx: Ctx, what: str) -> str:
    """`no <what> recorded in the state dir DIR (how it was chosen)`."""
    return f"no {what} recorded in {ctx.state_dir_described()}"


class _OpenedOnUse:
    """A store opened on first use: a command that turns out not to need it (`diff` reads
    Git and the agents only) creates no state database."""

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open = open_store
        self._store: Store | None = None

    def __getattr__(self, name: str) -> Any:
        if self._store is None:
            self._store = self._open()
        return getattr(self._store, name)


def store_opened_on_use(ctx: Ctx) -> Store:
    """The configured store, opened (and so created) only when something calls it."""
    from gitopsd.store.open import open_store

    return cast(Store, _OpenedOnUse(lambda: open_store(ctx.config, ctx.state_dir)))
