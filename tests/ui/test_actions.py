"""Operator actions on the function page: they need a login with the `[ui] token_file`
token and the form's CSRF token, do what the CLI does, and are recorded with who and when."""

from __future__ import annotations

import urllib.error
import urllib.request

from playwright.sync_api import BrowserContext, Page, expect

from tests.daemon.daemonsupport import wait_for
from tests.rollout.livesupport import push
from tests.ui.conftest import UI_TOKEN, UiDaemon
from tests.ui.test_live_page import api


def login(page: Page, ui: UiDaemon, who: str) -> None:
    page.goto(f"{ui.url}/login")
    page.fill("#who", who)
    page.fill("#token", UI_TOKEN)
    page.click("form.login button")
    expect(page.locator(".who")).to_contain_text(who)


def post_without_session(ui: UiDaemon, path: str, form: bytes) -> int:
    req = urllib.request.Request(f"{ui.url}{path}", data=form, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_actions_work_with_the_token_and_are_refused_without_it_or_the_csrf_token(
    context: BrowserContext, ui: UiDaemon
) -> None:
    before = set(ui.fleet.serving("gate").values())
    push(ui.remote, "gate", "2.0.0", "{type: canary, stages: [30, 100], evaluationPeriod: PT1H}")
    wait_for(
        lambda: (api(ui, "functions/gate")["rollout"] or {}).get("step", "").startswith("wait"),
        30,
        "the canary of gate 2.0.0 waiting",
    )
    # No session: refused, and nothing changed.
    assert post_without_session(ui, "/functions/gate/pause", b"csrf=anything") == 401
    assert api(ui, "functions/gate")["paused"] is False

    page = context.new_page()
    page.goto(f"{ui.url}/functions/gate")
    expect(page.locator("section[data-live=actions]")).to_contain_text("Log in")
    assert page.locator("button.act-pause").count() == 0

    # A wrong token is refused (posted as the login form would post it).
    page.goto(f"{ui.url}/login")
    nonce = page.locator("input[name=csrf]").input_value()
    wrong = context.request.post(
        f"{ui.url}/login", form={"csrf": nonce, "token": "not-the-token", "who": "mallory"}
    )
    assert wrong.status == 403 and "wrong token" in wrong.text()
    assert not [c for c in context.cookies() if c["name"] == "gitopsd_session"]

    login(page, ui, "alice")
    session = next(c for c in context.cookies() if c["name"] == "gitopsd_session")
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"

    # Logged in, but a form without the page's CSRF token (as another site would post it).
    forged = context.request.post(
        f"{ui.url}/functions/gate/pause", form={"csrf": "forged"}, max_redirects=0
    )
    assert forged.status == 403
    bare = context.request.post(f"{ui.url}/functions/gate/pause", max_redirects=0)
    assert bare.status == 403
    assert api(ui, "functions/gate")["paused"] is False

    page.goto(f"{ui.url}/functions/gate")
    page.click("button.act-pause")
    expect(page.locator(".flash")).to_contain_text("gate: paused")
    assert api(ui, "functions/gate")["paused"] is True
    wait_for(lambda: api(ui, "functions/gate")["rollout"]["state"] == "PAUSED", 10, "paused")

    page.click("button.act-resume")
    expect(page.locator(".flash")).to_contain_text("gate: resumed")
    assert api(ui, "functions/gate")["paused"] is False

    page.click("button.act-abort")
    expect(page.locator(".flash")).to_contain_text("abort requested")
    badge = page.locator("section[data-live=rollout] .badge").first
    # Live, from the engine (a wait for the event, generous for a busy 2-core machine).
    expect(badge).to_have_text("ROLLED_BACK", timeout=45_000)
    assert set(ui.fleet.serving("gate").values()) == before

    # Each action recorded with who, from where and when, newest first.
    audit = api(ui, "functions/gate")["audit"]
    assert [(e["who"], e["action"], e["ok"]) for e in audit] == [
        ("alice", "abort", True),
        ("alice", "resume", True),
        ("alice", "pause", True),
    ]
    assert all(e["at"].endswith("Z") and e["from"] == "127.0.0.1" for e in audit)
    expect(page.locator(".audit")).to_contain_text("alice")


def test_rollback_from_the_page_holds_the_chosen_version(
    context: BrowserContext, ui: UiDaemon
) -> None:
    push(ui.remote, "back", "2.0.0", "{type: blue-green}")
    wait_for(lambda: set(ui.fleet.serving("back").values()) == {"2.0.0"}, 30, "back 2.0.0")
    wait_for(lambda: api(ui, "functions/back")["state"] == "in-sync", 10, "back in sync")
    page = context.new_page()
    login(page, ui, "bob")
    page.goto(f"{ui.url}/functions/back")
    page.fill("#to-version", "1.0.0")
    page.click("button.act-rollback")
    expect(page.locator(".flash")).to_contain_text("back: COMPLETED", timeout=30_000)
    assert set(ui.fleet.serving("back").values()) == {"1.0.0"}
    doc = api(ui, "functions/back")
    assert doc["held"] is True and doc["state"] == "held"
    expect(page.locator("h1 .badge")).to_have_text("held")
    # The CLI's refusal (no rollout in progress to promote) comes back, and is recorded.
    csrf = page.locator("input[name=csrf]").first.input_value()
    page.goto(f"{ui.url}/functions/back")
    answer = context.request.post(f"{ui.url}/functions/back/promote", form={"csrf": csrf})
    assert answer.ok and "refused: back: no rollout in progress to promote" in answer.text()
    audit = api(ui, "functions/back")["audit"]
    assert [(e["who"], e["action"], e["ok"]) for e in audit] == [
        ("bob", "promote", False),
        ("bob", "rollback", True),
    ]


def test_the_login_form_survives_a_second_fetch_of_the_login_page(
    context: BrowserContext, ui: UiDaemon
) -> None:
    """A second tab, or the live script fetching /login again while an operator types,
    once replaced the form's nonce cookie, and the form in hand was refused as expired."""
    page = context.new_page()
    page.goto(f"{ui.url}/login")
    page.fill("#who", "carol")
    page.fill("#token", UI_TOKEN)
    again = context.request.get(f"{ui.url}/login")
    assert again.ok
    page.click("form.login button")
    expect(page.locator(".who")).to_contain_text("carol")
