"""`[ui]` in the config file: its keys, paths relative to the file, the environment, and
an unknown key refused like in every other section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gitopsd.config import load_config
from gitopsd.errors import ConfigError
from gitopsd.ui.daemon_ports import parse_listen
from tests.daemon.daemonsupport import free_port
from tests.gitrepo import GitRemote


def test_ui_section_reads_listen_and_a_token_file_relative_to_the_config(tmp_path: Path) -> None:
    config = tmp_path / "gitopsd.toml"
    config.write_text('[ui]\nlisten = "127.0.0.1:9500"\ntoken_file = "ui-token"\n')
    ui = load_config(config).ui
    assert ui.listen == "127.0.0.1:9500"
    assert ui.token_file == tmp_path / "ui-token"
    assert load_config(None).ui.listen is None  # absent: no page


def test_an_unknown_ui_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "gitopsd.toml"
    config.write_text('[ui]\nlisten = "127.0.0.1:9500"\npassword = "hunter2"\n')
    with pytest.raises(ConfigError, match=r"ui\.password"):
        load_config(config)


def test_ui_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITOPSD_UI__LISTEN", "[::1]:9501")
    assert load_config(None).ui.listen == "[::1]:9501"
    assert parse_listen("[::1]:9501") == ("::1", 9501)


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:http", "h:70000", "a b:9500", ""])
def test_a_bad_listen_address_is_a_config_error(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"\[ui\] listen"):
        parse_listen(listen)


def test_a_port_alone_listens_on_loopback_only() -> None:
    assert parse_listen("9500") == ("127.0.0.1", 9500)
    assert parse_listen(":9500") == ("127.0.0.1", 9500)
    assert parse_listen("0.0.0.0:9500") == ("0.0.0.0", 9500)  # only when asked for


def test_a_missing_token_file_stops_the_daemon_at_start(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path / "git")
    config = tmp_path / "gitopsd.toml"
    config.write_text(
        f'[source]\nurl = "{remote.bare}"\ninterval = "PT1H"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
        f'[ui]\nlisten = "127.0.0.1:{free_port()}"\ntoken_file = "no-such-token"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "gitopsd.cli.main", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"ui token file {tmp_path / 'no-such-token'}" in done.stderr
