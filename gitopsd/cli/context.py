"""What every command shares: config file, state dir, agent token, and error handling."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gitopsd.errors import ConfigError

if TYPE_CHECKING:  # imported where used: pydantic-settings and pygit2 would slow `--help`
    from gitopsd.config import Config
    from gitopsd.fleet.tokens import FleetAuth
    from gitopsd.source.git import SourceSpec

F = TypeVar("F", bound=Callable[..., Any])

NO_FLEET_SECRET = (
    "no agent token: give the fleet secret's file with --agent-token-file FILE, "
    "GITOPSD_AGENT_TOKEN_FILE=FILE or [fleet] token_file in the config"
)


@dataclass
class Ctx:
    """Resolved global options of one invocation."""

    config_path: Path | None
    state_dir_flag: Path | None
    agent_token_file: Path | None
    _config: Config | None = None
    _auth: FleetAuth | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from gitopsd.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def state_dir(self) -> Path:
        from gitopsd.config import default_state_dir

        return self.state_dir_flag or self.config.state.dir or default_state_dir()

    def state_dir_origin(self) -> str:
        """How `state_dir` was chosen, in the words an operator would use to change it."""
        if self.state_dir_flag:
            return "--state-dir"
        if self.config.state.dir:
            return "[state] dir of the config (or GITOPSD_STATE__DIR)"
        if os.environ.get("GITOPSD_STATE_DIR"):
            return "$GITOPSD_STATE_DIR"
        if os.environ.get("INVOCATION_ID") and os.environ.get("STATE_DIRECTORY"):
            return "systemd's $STATE_DIRECTORY"
        return "the default; set --state-dir or $GITOPSD_STATE_DIR"

    def state_dir_described(self) -> str:
        """`<dir> (<how it was chosen>)`, for every "nothing recorded" message; the database
        (without its password) when [state] url selects PostgreSQL."""
        if self.config.state.url:
            from gitopsd.store.pg_url import pg_target

            return f"the state database {pg_target(self.config.state.url).display} ([state] url)"
        return f"the state dir {self.state_dir} ({self.state_dir_origin()})"

    def agent_token(self) -> FleetAuth:
        """How to authenticate to agents: the fleet secret from --agent-token-file, else
        GITOPSD_AGENT_TOKEN_FILE, else fleet.token_file, with [fleet] token_mode and
        allowed_addresses (read once per invocation: shared mode warns once).

        ConfigError (exit 2) when no fleet secret is configured at all: a command that talks
        to agents stops before its first request, instead of every agent refusing it."""
        if self._auth is None:
            from gitopsd.config import fleet_auth

            auth = fleet_auth(self.config, self.agent_token_file)
            if auth.secret is None:
                raise ConfigError(NO_FLEET_SECRET)
            self._auth = auth
        return self._auth

    def fleet_secret(self) -> str:
        """The fleet secret itself (for `gitopsd agent-token`); ConfigError when none."""
        from gitopsd.config import read_secret

        env = os.environ.get("GITOPSD_AGENT_TOKEN_FILE")
        path = self.agent_token_file or (Path(env) if env else None) or self.config.fleet.token_file
        if path is None:
            raise ConfigError(NO_FLEET_SECRET)
        return read_secret(path, "agent token")

    def source(self, source: str | None, ref: str | None, path: str | None) -> SourceSpec:
        from gitopsd.config import source_spec

        return source_spec(self.config, source, ref, path)


def common_options(func: F) -> F:
    """--config, --state-dir and --agent-token-file, accepted by every command."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        envvar="GITOPSD_CONFIG",
        help="TOML config file.",
    )
    @click.option(
        "--state-dir",
        "state_dir",
        type=click.Path(path_type=Path),
        help="State directory (default $GITOPSD_STATE_DIR or ~/.local/state/gitopsd).",
    )
    @click.option(
        "--agent-token-file",
        "agent_token_file",
        type=click.Path(path_type=Path),
        help="File holding the fleet secret (per-node agent tokens are derived from it).",
    )
    @wraps(func)
    def wrapper(
        config_path: Path | None,
        state_dir: Path | None,
        agent_token_file: Path | None,
        **kwargs: Any,
    ) -> Any:
        return func(Ctx(config_path, state_dir, agent_token_file), **kwargs)

    return wrapper  # type: ignore[return-value]


def source_options(func: F) -> F:
    """SOURCE, --ref and --path."""
    func = click.option("--path", "path", help="Synced path inside the repository.")(func)
    func = click.option(
        "--ref",
        "ref",
        help="Branch (default: main); a tag or commit only in full: refs/tags/v1, a 40-hex id.",
    )(func)
    return click.argument("source", required=False)(func)
