"""Logins, sessions and CSRF tokens of the status page.

One shared token (`[ui] token_file`) lets an operator log in; the session lives in this
process only (a restart logs everyone out) and is named by a random cookie that is
`HttpOnly` and `SameSite=Strict` (and `Secure` when the page is served over TLS). Every
form carries the session's CSRF token, and the login form a token of its own that its
pre-login cookie must match (double submit), so no other site can post any form here.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

SESSION_COOKIE = "gitopsd_session"
LOGIN_COOKIE = "gitopsd_login"
SESSION_SECONDS = 12 * 3600.0
MAX_SESSIONS = 1_000
FAILURE_WINDOW_S = 60.0
MAX_FAILURES = 10  # wrong tokens per window (all clients together) before logins pause
MAX_NAME = 64


@dataclass(frozen=True)
class Session:
    """A logged-in operator: `who` is recorded with every action taken in this session."""

    id: str
    csrf: str
    who: str
    expires: float


class Sessions:
    """The sessions of one page server; `token` None means the page is read-only."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._sessions: dict[str, Session] = {}
        self._failures: deque[float] = deque()

    @property
    def read_only(self) -> bool:
        return self.token is None

    def get(self, session_id: str | None, now: float | None = None) -> Session | None:
        if not session_id or self.token is None:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= (now if now is not None else time.time()):
            del self._sessions[session_id]
            return None
        return session

    def locked_out(self, now: float) -> bool:
        while self._failures and self._failures[0] < now - FAILURE_WINDOW_S:
            self._failures.popleft()
        return len(self._failures) >= MAX_FAILURES

    def login(self, token: str, who: str, now: float) -> Session | None:
        """A new session when `token` is right, else None (and the failure counts)."""
        if self.token is None or self.locked_out(now):
            return None
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            self._failures.append(now)
            return None
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.expires)
            del self._sessions[oldest.id]
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            who=clean_name(who),
            expires=now + SESSION_SECONDS,
        )
        self._sessions[session.id] = session
        return session

    def logout(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


def clean_name(who: str) -> str:
    """The name an operator typed at login, kept printable and short ("operator" if none)."""
    text = "".join(c for c in who if c.isprintable()).strip()[:MAX_NAME]
    return text or "operator"


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted CSRF token."""
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())
