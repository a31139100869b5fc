"""`gitopsd agent --controller URL`: the URL it dials, its backoff, what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitopsd.agent.dialout import Backoff, connect_url
from gitopsd.agent.settings import AgentSettings
from gitopsd.errors import ConfigError


@pytest.mark.parametrize(
    ("controller", "url"),
    [
        ("https://ctl.example.net:9600", "wss://ctl.example.net:9600/agents/connect"),
        ("http://127.0.0.1:9600/", "ws://127.0.0.1:9600/agents/connect"),
        ("wss://ctl.example.net/gitopsd", "wss://ctl.example.net/gitopsd/agents/connect"),
    ],
)
def test_the_controller_url_becomes_its_websocket(controller: str, url: str) -> None:
    assert connect_url(controller) == url


@pytest.mark.parametrize(
    "controller",
    ["ftp://ctl:21", "ctl.example.net:9600", "https://user:pw@ctl:9600", "https://ctl/?a=1", ""],
)
def test_a_controller_url_it_cannot_dial_is_a_config_error(controller: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--controller"):
        AgentSettings(
            name="edge-nat",
            region="eu",
            data_dir=tmp_path,
            token_file=tmp_path / "t",
            controller=controller,
        )


def test_controller_needs_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent-token edge-nat --dial-out"):
        AgentSettings(name="edge-nat", region="eu", data_dir=tmp_path, controller="https://c:1")


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    assert [backoff.delay(n, lambda: 1.0) for n in range(8)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0,
    ]  # fmt: skip
    assert backoff.delay(10_000, lambda: 1.0) == 30.0  # no overflow on a long outage
    assert backoff.delay(5, lambda: 0.0) == 0.0  # full jitter: anywhere from zero
    assert backoff.delay(5, lambda: 0.25) == 4.0
