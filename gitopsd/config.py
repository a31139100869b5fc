"""The config file (TOML) and `GITOPSD_<SECTION>__<KEY>` environment variables.

Precedence, highest first: command-line flags, environment, config file, defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gitopsd.errors import ConfigError
from gitopsd.manifest.durations import Duration
from gitopsd.notify.events import EVENT_NAMES, EventName

if TYPE_CHECKING:
    from gitopsd.fleet.tokens import FleetAuth
    from gitopsd.source.git import SourceSpec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VerifyConfig(_Section):
    mode: Literal["none", "head"] = "none"
    allowed_signers: Path | None = None
    gpg_keyring: Path | None = None


class SourceConfig(_Section):
    url: str | None = None
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    known_hosts: Path | None = None
    ssh_key: Path | None = None
    branch: str = "main"
    path: str = "/"
    interval: Duration = 60.0
    watch: bool = True
    allow_empty: bool = False
    # A head that does not descend from the last applied commit is refused unless this is
    # set (gitopsd/source/ancestry.py).
    allow_non_fast_forward: bool = False
    # The password of an http(s) source; the user name comes from the url.
    password_file: Path | None = None


class FleetConfig(_Section):
    token_file: Path | None = None  # the fleet secret (per-node) or the shared token
    concurrency: int = Field(64, ge=1)
    timeout: Duration = 10.0
    token_mode: Literal["per-node", "shared"] = "per-node"
    # Networks (CIDR) and host-name globs agents may be at; None: any address.
    allowed_addresses: list[str] | None = None
    # HOST:PORT where dial-out agents connect (fleet/tunnel.py); None: no dial-out nodes.
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            _host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"listen {value!r}: expected HOST:PORT, e.g. 0.0.0.0:9600")
        return value

    @field_validator("allowed_addresses")
    @classmethod
    def _allow_list(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            from gitopsd.fleet.tokens import AddressAllowList

            AddressAllowList.parse(value)  # ValueError names the bad entry
        return value


class StateConfig(_Section):
    dir: Path | None = None
    # postgresql://user@host:port/dbname selects the PostgreSQL store (gitopsd/store/open.py).
    url: str | None = None
    # The database password; without it libpq's own sources (the URL, PGPASSWORD, ~/.pgpass).
    password_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            from gitopsd.store.pg_url import pg_target

            try:
                pg_target(value)
            except ConfigError as exc:  # names what is wrong, never the password
                raise ValueError(str(exc)) from None
        return value


class HaConfig(_Section):
    """Several controllers on one PostgreSQL ([state] url): shard leases (gitopsd/ha/)."""

    # How long a leader's lease lasts without renewal (it renews five times per lease and
    # stops acting a quarter lease before it ends): failover takes about this long.
    lease: Duration = 5.0
    # Functions are split into this many shards (stable hash of the name), each led alone.
    shards: int = Field(1, ge=1, le=1024)

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("lease must be at least PT1S (a renewal round trip must fit)")
        return value


class WebhookConfig(_Section):
    listen: str | None = None
    secret_file: Path | None = None


class MetricsConfig(_Section):
    listen: str | None = None


class UiConfig(_Section):
    """The status page: absent `listen`, no page; absent `token_file`, a read-only page."""

    listen: str | None = None
    token_file: Path | None = None


class ForgeConfig(_Section):
    kind: Literal["github", "gitea", "gitlab"]
    api_url: str
    repo: str
    token_file: Path


class StatusConfig(_Section):
    git_notes: bool = True
    push_notes: bool = True
    forges: list[ForgeConfig] = Field(default_factory=list)


class NotifyConfig(_Section):
    """One `[[notify]]` receiver (gitopsd/notify/): the URL is a secret, read from a file."""

    kind: Literal["webhook", "slack"]
    url_file: Path
    events: list[EventName] = Field(default_factory=lambda: list(EVENT_NAMES), min_length=1)
    functions: list[str] | None = Field(None, min_length=1)  # None: every function


class Config(BaseSettings):
    """Everything `gitopsd` reads from its config file and environment."""

    model_config = SettingsConfigDict(
        env_prefix="GITOPSD_", env_nested_delimiter="__", extra="forbid"
    )

    source: SourceConfig = Field(default_factory=SourceConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    ha: HaConfig = Field(default_factory=HaConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    notify: list[NotifyConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _state_backend(self) -> Config:
        if self.state.url is None and self.ha != HaConfig():
            raise ValueError(
                '[ha] needs [state] url = "postgresql://...": leases live in PostgreSQL '
                "(with the SQLite file one controller runs alone; remove [ha])"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init_settings carries the file's values: the environment overrides the file.
        return (env_settings, init_settings)


def load_config(path: Path | None) -> Config:
    """Read `path` (if given) and the environment; raise ConfigError saying what is wrong."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"config {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path}: {exc}") from exc
    try:
        config = Config(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        where = f"{where}: " if where else ""  # a check across sections has no location
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"config {path or '(environment)'}: {where}{message}") from exc
    if path is not None:
        config = _relative_to(config, path.parent)
    return config


def _relative_to(config: Config, base: Path) -> Config:
    """Paths in a config file are relative to the file, like every tool operators know."""

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    config.fleet.token_file = fix(config.fleet.token_file)
    config.source.known_hosts = fix(config.source.known_hosts)
    config.source.ssh_key = fix(config.source.ssh_key)
    config.source.password_file = fix(config.source.password_file)
    config.source.verify.allowed_signers = fix(config.source.verify.allowed_signers)
    config.source.verify.gpg_keyring = fix(config.source.verify.gpg_keyring)
    for forge in config.status.forges:
        forge.token_file = fix(forge.token_file) or forge.token_file
    config.state.dir = fix(config.state.dir)
    config.state.password_file = fix(config.state.password_file)
    config.webhook.secret_file = fix(config.webhook.secret_file)
    config.ui.token_file = fix(config.ui.token_file)
    for receiver in config.notify:
        receiver.url_file = fix(receiver.url_file) or receiver.url_file
    if (
        config.source.url
        and "://" not in config.source.url
        and not Path(config.source.url).is_absolute()
    ):
        config.source.url = str(base / config.source.url)
    return config


def source_spec(
    config: Config, url: str | None = None, ref: str | None = None, path: str | None = None
) -> SourceSpec:
    """The SourceSpec of the config (flags override), with its trust settings."""
    from gitopsd.source.git import SourceSpec
    from gitopsd.source.verify import VerifyPolicy

    src = config.source
    chosen = url or src.url
    if not chosen:
        raise ConfigError("no SOURCE given and no [source] url in the config file")
    verify = src.verify
    policy = (
        VerifyPolicy(verify.mode, verify.allowed_signers, verify.gpg_keyring)
        if verify.mode != "none"
        else None
    )
    return SourceSpec(
        url=chosen,
        ref=ref or src.branch,
        path=path or src.path,
        verify=policy,
        known_hosts=src.known_hosts,
        ssh_key=src.ssh_key,
        password_file=src.password_file,
        allow_non_fast_forward=src.allow_non_fast_forward,
    )


def default_state_dir() -> Path:
    """$GITOPSD_STATE_DIR, else /var/lib/gitopsd under systemd, else ~/.local/state/gitopsd."""
    env = os.environ.get("GITOPSD_STATE_DIR")
    if env:
        return Path(env)
    if os.environ.get("INVOCATION_ID") and os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path.home() / ".local" / "state" / "gitopsd"


def read_secret(path: Path, what: str) -> str:
    """First line of a secret file; the error names the file, never the content."""
    try:
        value = path.read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"{what} file {path}: {exc.strerror or exc}") from exc
    if not value or not value[0].strip():
        raise ConfigError(f"{what} file {path} is empty")
    return value[0].strip()


def fleet_auth(config: Config, token_file: Path | None = None) -> FleetAuth:
    """How this process authenticates to agents: the fleet secret from `token_file` (the
    --agent-token-file flag), else $GITOPSD_AGENT_TOKEN_FILE, else `[fleet] token_file`;
    `[fleet] token_mode` and `allowed_addresses`. Shared mode is logged as a warning."""
    from gitopsd.fleet.tokens import AddressAllowList, FleetAuth
    from gitopsd.log import get_logger

    fleet = config.fleet
    env = os.environ.get("GITOPSD_AGENT_TOKEN_FILE")
    path = token_file or (Path(env) if env else None) or fleet.token_file
    secret = read_secret(path, "agent token") if path else None
    allowed = (
        AddressAllowList.parse(fleet.allowed_addresses)
        if fleet.allowed_addresses is not None
        else None
    )
    if fleet.token_mode == "shared":
        get_logger(component="fleet").warning(
            "fleet.shared_token",
            effect="every agent holds the same token: one stolen edge node controls the "
            "fleet, and any address a manifest names receives that token",
            fix='install per-node tokens (gitopsd agent-token) and set token_mode = "per-node"',
        )
    relay = None
    if fleet.listen is not None:
        from gitopsd.fleet.tunnel import listen_url

        relay = listen_url(fleet.listen)
    return FleetAuth(secret, fleet.token_mode, allowed, relay)
