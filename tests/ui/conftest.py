"""Debian's Chromium driven by Playwright, launched once per test session, and a real
daemon (`gitopsd run` with `[ui] listen`) over a real fleet and Git remote for the page."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.daemon.daemonsupport import DaemonProcess, free_port, wait_for
from tests.fleetfixture import Fleet, running_fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

CHROMIUM = "/usr/bin/chromium"  # Debian's package (`make system-deps`); never skipped
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TOKEN = "ui-token-for-the-tests-0123456789"
# Every test acts on a function of its own, so that none depends on another's outcome
# (pytest-xdist may run them on different workers, each with its own daemon).
FUNCTIONS = ("hello", "world", "gate", "back")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (each test gets its own context, and
    Playwright gives the browser a new empty user-data-dir). Not per session: Playwright's
    sync API keeps an event loop running in this thread while it is started, and the
    asyncio tests that follow in the same process could not run theirs."""
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Console:
    """Console errors and uncaught exceptions of the pages of one context."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                self.errors.append(f"{msg.text} at {msg.location}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        return page


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def context(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    """A fresh context (no cookies); its pages fail the test on any console error."""
    ctx = browser.new_context()
    ctx.on("page", console.watch)
    yield ctx
    ctx.close()
    assert console.errors == [], console.errors


@dataclass
class UiDaemon:
    """A running daemon with its status page, its fleet and its Git remote."""

    daemon: DaemonProcess
    fleet: Fleet
    remote: GitRemote
    url: str


def start_ui_daemon(root: Path, fleet: Fleet, token: str | None) -> UiDaemon:
    remote = GitRemote(root / "git")
    remote.write("nodes.yaml", fleet.manifests())
    for name in FUNCTIONS:
        strategy = "{type: rolling, batchDelay: PT0S}" if name == "world" else "{type: blue-green}"
        push(remote, name, "1.0.0", strategy)
    daemon = DaemonProcess(root / "daemon", remote, fleet)
    port = free_port()
    ui = f'[ui]\nlisten = "127.0.0.1:{port}"\n'
    if token is not None:
        (root / "ui-token").write_text(token + "\n")
        ui += f'token_file = "{root / "ui-token"}"\n'
    daemon.config.write_text(daemon.config.read_text() + ui)
    daemon.start()
    wait_for(
        lambda: all(set(fleet.serving(name).values()) == {"1.0.0"} for name in FUNCTIONS),
        30,
        "first sync",
    )
    return UiDaemon(daemon, fleet, remote, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="session")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiDaemon]:
    """Three agents (two regions), FUNCTIONS at 1.0.0, a daemon whose page takes actions."""
    root = tmp_path_factory.mktemp("ui")
    with running_fleet(root / "fleet") as fleet:
        fleet.add("edge-a", "us-east", tier="prod")
        fleet.add("edge-b", "us-east", tier="prod")
        fleet.add("edge-c", "eu-central", tier="prod")
        env = start_ui_daemon(root, fleet, UI_TOKEN)
        yield env
        env.daemon.close()
