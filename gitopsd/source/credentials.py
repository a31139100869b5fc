"""Credentials of an http(s) source, kept out of every URL that is written down.

The password comes from `[source] password_file` (preferred) or, for compatibility, from the
source URL (`https://user:password@host/repo.git`); the user name always comes from the URL.
Either way the URL stored in the mirror's `config` carries no password: libgit2 gets it from
a credentials callback (`CredentialCallbacks`), the git CLI (pushing notes) from a
credential helper that reads it from the child's environment (`git_credential_env`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pygit2
from pygit2.enums import CredentialType

from gitopsd.errors import ConfigError, SourceError
from gitopsd.source.redact import redact, split_userinfo

_HTTP = ("http://", "https://")
_USER_ENV = "SOURCE_CREDENTIAL_USER"
_PASSWORD_ENV = "SOURCE_CREDENTIAL_PASSWORD"
# A shell-snippet credential helper (gitcredentials(7)): it answers `get` with what the
# environment of this one git process holds, and stores nothing anywhere.
_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    f'printf "username=%s\\npassword=%s\\n" "${_USER_ENV}" "${_PASSWORD_ENV}"; }}; f'
)


@dataclass(frozen=True)
class Credentials:
    """User name and password for an http(s) source (the password never in a repr)."""

    username: str
    password: str = field(repr=False)


def source_credentials(url: str, password_file: Path | None) -> Credentials | None:
    """The credentials of `url`: user from the URL, password from `password_file` or else
    from the URL itself; None when there is no password. ConfigError when they conflict."""
    parts = split_userinfo(url)
    if password_file is None:
        if parts.password is None:
            return None
        return Credentials(parts.username or "", _checked(parts.password, "source url"))
    shown = redact(url)
    if not url.lower().startswith(_HTTP):
        raise ConfigError(f"[source] password_file is for http(s) sources, not {shown}")
    if parts.password is not None:
        raise ConfigError(
            f"[source] url {shown} carries a password and password_file is set: "
            "remove the password from the url"
        )
    if not parts.username:
        raise ConfigError(
            f"[source] password_file needs the user name in the url (https://USER@host/...), "
            f"got {shown}"
        )
    return Credentials(parts.username, _read_password(password_file))


def _read_password(path: Path) -> str:
    """The first line of the password file; errors name the file, never its content."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"[source] password_file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"[source] password_file {path}: not UTF-8 text") from exc
    if not lines or not lines[0].strip():
        raise ConfigError(f"[source] password_file {path} is empty")
    return _checked(lines[0].strip(), f"[source] password_file {path}")


def _checked(password: str, where: str) -> str:
    # git's credential protocol is line based: a line break or NUL would forge a field.
    if any(c in password for c in "\r\n\0"):
        raise ConfigError(f"{where}: the password contains a line break or NUL byte")
    return password


class CredentialCallbacks(pygit2.RemoteCallbacks):
    """libgit2's credentials callback: the source's user and password, offered once (a
    refused login fails the fetch instead of retrying in a loop)."""

    def __init__(self, credentials: Credentials, shown_url: str) -> None:
        super().__init__()
        self._credentials = credentials
        self._shown_url = shown_url
        self._offered = False

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.UserPass:
        if not allowed_types & CredentialType.USERPASS_PLAINTEXT:
            raise SourceError(
                f"source {self._shown_url}: the server asks for a kind of "
                "credentials gitopsd does not have (only user and password)"
            )
        if self._offered:
            raise SourceError(
                f"source {self._shown_url}: the server refused the user name and password"
            )
        self._offered = True
        return pygit2.UserPass(self._credentials.username, self._credentials.password)


def git_credential_env(credentials: Credentials | None) -> dict[str, str]:
    """Environment for one git CLI run: other credential helpers off, ours on (git 2.31+
    reads `GIT_CONFIG_COUNT`), and the secret in that child's environment only."""
    if credentials is None:
        return {}
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": _HELPER,
        _USER_ENV: credentials.username,
        _PASSWORD_ENV: credentials.password,
    }
