"""Notifier against a real AF_UNIX datagram socket, as systemd's manager listens on one."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.daemon.sdnotify import Notifier


def _receive(sock: socket.socket) -> list[str]:
    sock.settimeout(5)
    return sock.recv(4096).decode().split("\n")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield path, sock


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


def test_ready_status_watchdog_stopping_arrive(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    n = Notifier(path)
    assert n.enabled
    assert n.ready("watching main")
    assert _receive(sock) == ["READY=1", "STATUS=watching main"]
    assert n.status("reconciling abc123")
    assert _receive(sock) == ["STATUS=reconciling abc123"]
    assert n.watchdog()
    assert _receive(sock) == ["WATCHDOG=1"]
    assert n.stopping("finishing the current step")
    assert _receive(sock) == ["STOPPING=1", "STATUS=finishing the current step"]


def test_reloading_sends_monotonic_usec(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    assert Notifier(path).reloading("reloading config")
    lines = _receive(sock)
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0
    assert lines[2] == "STATUS=reloading config"


def test_status_newlines_cannot_inject_assignments(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    assert Notifier(path).status("bad\nREADY=1")
    assert _receive(sock) == ["STATUS=bad READY=1"]


def test_path_from_environment(
    manager: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert Notifier().watchdog()
    assert _receive(sock) == ["WATCHDOG=1"]


def test_abstract_socket_name() -> None:
    name = f"gitopsd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier("@" + name).ready("up")
        assert _receive(sock) == ["READY=1", "STATUS=up"]


def test_no_notify_socket_is_a_no_op() -> None:
    n = Notifier()
    assert n.path is None and not n.enabled
    assert n.ready("x") is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert n.reloading() is False
    assert n.watchdog_interval is None


@pytest.mark.parametrize("path", ["", "relative/socket", "vsock:2:1234"])
def test_unusable_socket_addresses_return_false(path: str) -> None:
    assert Notifier(path).ready("x") is False


def test_unreachable_socket_returns_false(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "nobody-listens")).watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert Notifier("/x").watchdog_interval == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier("/x").watchdog_interval == 15.0


@pytest.mark.parametrize("usec", ["", "0", "abc", "-5", "²"])
def test_watchdog_interval_none_for_bad_or_zero_usec(
    monkeypatch: pytest.MonkeyPatch, usec: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert Notifier("/x").watchdog_interval is None


def test_watchdog_for_another_pid_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier("/x").watchdog_interval is None
