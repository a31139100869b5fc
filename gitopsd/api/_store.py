"""The store of the Python API: the same choice as the CLI's and the daemon's
(gitopsd/store/open.py): PostgreSQL for a `state_url`, else the SQLite file in the state dir."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from gitopsd.config import Config, StateConfig
from gitopsd.errors import ConfigError
from gitopsd.store.open import open_store
from gitopsd.store.protocol import Store


def open_api_store(
    state_dir: Path, state_url: str | None, state_password_file: str | Path | None
) -> Store:
    """The store for `state_url` (`postgresql://...`, checked: ConfigError naming what is
    wrong) or, without one, `state_dir`'s SQLite file; StoreError when it cannot be reached.
    A password file without a URL is refused: it would be ignored."""
    if state_url is None and state_password_file is not None:
        raise ConfigError("state_password_file is set but state_url is not")
    password = Path(state_password_file) if state_password_file is not None else None
    try:
        state = StateConfig(url=state_url, password_file=password)
    except ValidationError as exc:
        raise ConfigError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    # Only [state] is read: model_construct takes no other section from the environment.
    return open_store(Config.model_construct(state=state), state_dir)
