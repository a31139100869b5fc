"""Without `[ui] token_file` the page is read-only and says so; with JavaScript off it is
still complete; a lost event stream reconnects by itself."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.daemon.daemonsupport import wait_for
from tests.fleetfixture import running_fleet
from tests.rollout.livesupport import push
from tests.ui.conftest import FUNCTIONS, Console, UiDaemon, start_ui_daemon
from tests.ui.test_live_page import api


@pytest.fixture(scope="module")
def ro(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiDaemon]:
    """A daemon with `[ui] listen` and no token_file, over two agents."""
    root = tmp_path_factory.mktemp("ui-ro")
    with running_fleet(root / "fleet") as fleet:
        fleet.add("edge-a", "us-east", tier="prod")
        fleet.add("edge-b", "eu-central", tier="prod")
        env = start_ui_daemon(root, fleet, token=None)
        yield env
        env.daemon.close()


def test_without_javascript_the_page_lists_every_function_and_says_read_only(
    browser: Browser, console: Console, ro: UiDaemon
) -> None:
    context = browser.new_context(java_script_enabled=False)
    context.on("page", console.watch)
    page = context.new_page()
    page.goto(ro.url)
    names = [f["name"] for f in api(ro, "overview")["functions"]]
    assert names == sorted(FUNCTIONS)
    for name in names:
        row = page.locator(f"#fn-{name}")
        expect(row.locator("a")).to_have_text(name)
        expect(row.locator(".badge")).to_have_text("in sync")
    expect(page.locator("#live")).to_contain_text("live updates off")
    # Keyboard: the first Tab reaches "Skip to content", which moves focus into the page;
    # the next Tabs walk the links in order, the first function's among them.
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    focused = []
    for _ in range(8):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("() => document.activeElement.textContent.trim()"))
    assert names[0] in focused, focused
    expect(page.locator(".notice")).to_contain_text("Read-only page")
    page.click("#fn-hello a")
    expect(page.locator("section[data-live=actions]")).to_contain_text("Read-only")
    expect(page.locator("section[data-live=nodes]")).to_contain_text("edge-b")
    # No login, no action: refused even to a client that forges the form.
    answer = context.request.post(f"{ro.url}/functions/hello/pause", form={"csrf": "x"})
    assert answer.status == 403
    assert context.request.get(f"{ro.url}/login").status == 403
    assert api(ro, "functions/hello")["paused"] is False
    context.close()
    assert console.errors == [], console.errors


def test_a_lost_event_stream_reconnects_and_updates_continue(
    browser: Browser, ro: UiDaemon
) -> None:
    context: BrowserContext = browser.new_context()
    page = context.new_page()
    page.goto(ro.url)
    live = page.locator("#live")
    expect(live).to_have_attribute("data-state", "on")
    page.evaluate("window.__loadedOnce = true")
    ro.daemon.signal(signal.SIGTERM)
    assert ro.daemon.wait() == 0
    expect(live).to_have_attribute("data-state", "reconnecting")
    ro.daemon.start()
    expect(live).to_have_attribute("data-state", "on", timeout=15_000)
    push(ro.remote, "world", "2.0.0", "{type: rolling, batchDelay: PT0S}")
    wait_for(lambda: set(ro.fleet.serving("world").values()) == {"2.0.0"}, 30, "world 2.0.0")
    expect(page.locator("#fn-world")).to_contain_text("2.0.0")
    expect(page.locator("#fn-world .badge")).to_have_text("in sync")
    assert page.evaluate("window.__loadedOnce") is True
    context.close()
