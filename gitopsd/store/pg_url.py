"""`[state] url` for PostgreSQL: what to connect with, and what may be shown of it.

The password comes from `[state] password_file`, else from libpq's own sources (the URL,
PGPASSWORD, ~/.pgpass or PGPASSFILE); it never appears in `display`, which every message,
log line and `Store.location` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg.conninfo

from gitopsd.errors import ConfigError

SCHEMES = ("postgresql://", "postgres://")
# Seconds to wait for a database that does not answer (libpq waits forever without it).
DEFAULT_CONNECT_TIMEOUT = 5
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def is_postgres_url(url: str) -> bool:
    return url.lower().startswith(SCHEMES)


@dataclass(frozen=True)
class PgTarget:
    """How to reach the state database: `conninfo` and `password` for the driver only,
    `display` for people."""

    conninfo: str = field(repr=False)
    display: str
    password: str | None = field(default=None, repr=False)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect beside `conninfo`."""
        kwargs: dict[str, Any] = {}
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs


def pg_target(url: str, password_file: Path | None = None) -> PgTarget:
    """Parse `url`; ConfigError (naming the URL without its password) when it is not one."""
    if not is_postgres_url(url):
        raise ConfigError(
            "[state] url: only postgresql://user@host:port/dbname URLs are supported"
            " (leave it out for the SQLite file in the state dir)"
        )
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"[state] url is not a valid PostgreSQL URL: {_scrub(str(exc))}") from exc
    if "connect_timeout" not in params:
        params["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    password = None
    if password_file is not None:
        from gitopsd.config import read_secret

        password = read_secret(password_file, "[state] password")
    return PgTarget(
        conninfo=psycopg.conninfo.make_conninfo(
            "", **{k: v for k, v in params.items() if v is not None}
        ),
        display=display_url(params),
        password=password,
    )


def display_url(params: dict[str, Any]) -> str:
    """postgresql://user@host:port/dbname?other=params, never a password."""
    user = params.get("user")
    host = params.get("host") or "localhost"
    port = params.get("port")
    dbname = params.get("dbname") or ""
    where = f"{host}:{port}" if port else str(host)
    if "/" in where:  # a unix socket directory
        where = f"[{where}]"
    shown = f"postgresql://{user + '@' if user else ''}{where}/{dbname}"
    rest = {
        k: v
        for k, v in params.items()
        if k not in _SECRET_PARAMS | {"user", "host", "port", "dbname", "connect_timeout"}
        and v is not None
    }
    if rest:
        shown += "?" + "&".join(f"{k}={v}" for k, v in sorted(rest.items()))
    return shown


def _scrub(text: str) -> str:
    from gitopsd.source.redact import redact

    return redact(text)
