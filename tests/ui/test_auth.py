"""Sessions of the page: the right token only, a lockout after repeated wrong tokens,
sessions that expire, names that cannot carry markup or control characters."""

from __future__ import annotations

from gitopsd.ui.auth import MAX_FAILURES, SESSION_SECONDS, Sessions, clean_name, same_token


def test_only_the_token_logs_in_and_a_session_has_its_own_csrf_token() -> None:
    sessions = Sessions("s3cret-token")
    assert sessions.login("wrong", "mallory", 100.0) is None
    session = sessions.login("s3cret-token", "alice", 100.0)
    assert session is not None and session.who == "alice"
    assert len(session.csrf) >= 32 and session.csrf != session.id
    assert sessions.get(session.id, 101.0) == session
    assert sessions.get("guessed", 101.0) is None
    assert sessions.get(session.id, 100.0 + SESSION_SECONDS) is None  # expired
    assert sessions.get(session.id, 101.0) is None  # and forgotten


def test_a_read_only_page_has_no_login() -> None:
    sessions = Sessions(None)
    assert sessions.read_only
    assert sessions.login("", "alice", 1.0) is None


def test_wrong_tokens_lock_logins_for_a_minute() -> None:
    sessions = Sessions("s3cret-token")
    for _ in range(MAX_FAILURES):
        assert sessions.login("guess", "mallory", 10.0) is None
    assert sessions.login("s3cret-token", "alice", 11.0) is None  # locked, even the right one
    assert sessions.login("s3cret-token", "alice", 71.0) is not None


def test_names_and_csrf_tokens() -> None:
    assert clean_name("  alice\x1b[31m\n ") == "alice[31m"
    assert clean_name("") == "operator"
    assert len(clean_name("x" * 500)) == 64
    assert same_token("abc", "abc") and not same_token("abd", "abc")
    assert not same_token(None, "abc") and not same_token("", "abc")
