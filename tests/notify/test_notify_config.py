"""`[[notify]]` in the config: unknown keys and event names refused, URL files read and
checked without ever quoting the URL, paths relative to the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitopsd.config import load_config
from gitopsd.errors import ConfigError
from gitopsd.notify.dispatcher import receivers_from_config


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gitopsd.toml"
    path.write_text(body)
    return path


def test_entries_are_read_with_their_filters(tmp_path: Path) -> None:
    (tmp_path / "u").write_text("https://hooks.slack.com/services/T0/B0/xyz\n")
    cfg = load_config(
        write(
            tmp_path,
            '[[notify]]\nkind = "slack"\nurl_file = "u"\nevents = ["failed"]\n'
            'functions = ["hello"]\n[[notify]]\nkind = "webhook"\nurl_file = "u"\n',
        )
    )
    assert cfg.notify[0].url_file == tmp_path / "u"
    slack, hook = receivers_from_config(cfg.notify)
    assert slack.events == {"failed"} and slack.functions == {"hello"}
    assert len(hook.events) == 7 and hook.functions is None  # defaults: all events, all functions
    assert "xyz" not in repr(slack) and "xyz" not in slack.name


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('kind = "webhook"\nurl_file = "u"\nretries = 3\n', "notify.0.retries"),
        ('kind = "webhook"\nurl_file = "u"\nevents = ["deployed"]\n', "notify.0.events.0"),
        ('kind = "webhook"\nurl_file = "u"\nevents = []\n', "notify.0.events"),
        ('kind = "email"\nurl_file = "u"\n', "notify.0.kind"),
        ('kind = "webhook"\n', "notify.0.url_file"),
    ],
)
def test_bad_entries_are_refused(tmp_path: Path, entry: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, f"[[notify]]\n{entry}"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("ftp://example.com/secret-part\n", "not an http:// or https:// URL"),
        ("https:///secret-part\n", "not an http:// or https:// URL"),
        ("https://example.com/secret part\n", "whitespace or control characters"),
        ("\n", "is empty"),
    ],
)
def test_bad_urls_are_refused_without_quoting_them(
    tmp_path: Path, content: str, expected: str
) -> None:
    (tmp_path / "u").write_text(content)
    cfg = load_config(write(tmp_path, '[[notify]]\nkind = "webhook"\nurl_file = "u"\n'))
    with pytest.raises(ConfigError, match=expected) as info:
        receivers_from_config(cfg.notify)
    assert "secret" not in str(info.value)


def test_a_missing_url_file_and_a_duplicate_receiver_are_refused(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[[notify]]\nkind = "webhook"\nurl_file = "nope"\n'))
    with pytest.raises(ConfigError, match="nope"):
        receivers_from_config(cfg.notify)
    (tmp_path / "u").write_text("https://example.com/x\n")
    twice = '[[notify]]\nkind = "webhook"\nurl_file = "u"\n' * 2
    with pytest.raises(ConfigError, match="same receiver"):
        receivers_from_config(load_config(write(tmp_path, twice)).notify)
