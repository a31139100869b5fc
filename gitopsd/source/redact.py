"""Secrets out of URLs: what may be shown of a source URL in a log, an error, a note or a status.

A source URL may carry a password (`https://user:password@host/repo.git`) or a bare token
(`https://token@host/...`). Everything gitopsd prints, logs, stores or writes into a mirror
goes through `redact` (for free text) or `split_userinfo` (for one URL), so the secret never
leaves the process: libgit2 gets it through a credentials callback, the git CLI through a
credential helper that reads it from the environment (gitopsd/source/credentials.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

HIDDEN = "***"
# The authority of a URL ends at the first `/`, `?`, `#` or blank; its userinfo ends at the
# LAST `@` inside it (a raw `@` in a password is legal enough for people to try it), so
# the greedy `[^/?#\s]*` before `@` takes everything up to that last one.
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<info>[^/?#\s]*)@", re.I)


# Query parameters that carry a credential in the URLs forges hand out (`?access_token=`,
# GitLab's `private_token`, signed URLs' `sig`...): their values are hidden too.
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;](?:[a-z0-9_-]*token|password|passwd|pass|secret|key|api[_-]?key|auth"
    r"|sig|signature|credentials?)=)[^&#;\s]*",
    re.I,
)


def redact(text: str) -> str:
    """`text` with the secrets of every URL in it hidden: the password of
    `scheme://user:password@` becomes `***`, and so does the whole user part of
    `http(s)://token@` (a bare token) and the value of a credential query parameter
    (`?access_token=...`); an SSH user name (`ssh://git@`) is kept."""

    def hide(match: re.Match[str]) -> str:
        scheme, info = match.group("scheme"), match.group("info")
        if ":" in info:
            return f"{scheme}{info.split(':', 1)[0]}:{HIDDEN}@"
        return match.group(0) if "ssh" in scheme.lower() else f"{scheme}{HIDDEN}@"

    return _QUERY_SECRET.sub(rf"\g<name>{HIDDEN}", _USERINFO.sub(hide, text))


@dataclass(frozen=True)
class UrlParts:
    """A URL split into what may be written down (`url`: the user name kept, the password
    removed) and the secret (`password`, percent-decoded; None when the URL has none)."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def split_userinfo(url: str) -> UrlParts:
    """Take the password out of a `scheme://user:password@host/...` URL (only http(s) can
    use it; for ssh:// it is dropped, OpenSSH never reads it).

    URLs without a password come back unchanged. A bare token (`https://token@host`) is a
    user name to git: it stays in `url`, and `redact` hides it wherever the URL is shown.
    """
    match = _USERINFO.match(url)
    if match is None:
        return UrlParts(url)
    info = match.group("info")
    user, sep, password = info.partition(":")
    if not sep:
        return UrlParts(url, unquote(user) or None)
    rest = url[match.end() :]
    clean = f"{match.group('scheme')}{user}@{rest}" if user else f"{match.group('scheme')}{rest}"
    return UrlParts(clean, unquote(user) or None, unquote(password))
