"""The page in a real Chromium during real rollouts on real agents: a canary followed live
through each stage without a reload, and a failing canary's rolled-back state and reason."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from tests.rollout.livesupport import push
from tests.ui.conftest import UiDaemon


def api(ui: UiDaemon, path: str) -> Any:
    with urllib.request.urlopen(f"{ui.url}/api/{path}", timeout=10) as r:
        return json.loads(r.read())


def current_step(page: Page, version: str) -> tuple[str, int]:
    """The current step's label and how many nodes the page shows serving `version`, read
    at one instant (one script run: the page cannot change in between)."""
    label, count = page.evaluate(
        """(version) => {
            const cur = document.querySelector("[aria-current=step] .label");
            const cells = document.querySelectorAll("section[data-live=nodes] td.weights");
            const n = [...cells].filter((c) => c.textContent.includes(version)).length;
            return [cur ? cur.textContent : "", n];
        }""",
        version,
    )
    return str(label), int(count)


def canary_nodes(page: Page, version: str) -> int:
    return current_step(page, version)[1]


def test_a_canary_updates_live_through_each_stage(context: BrowserContext, ui: UiDaemon) -> None:
    page = context.new_page()
    page.goto(f"{ui.url}/functions/hello")
    expect(page.locator("#live")).to_have_attribute("data-state", "on")
    page.evaluate("window.__loadedOnce = true")  # gone if the page reloads
    push(
        ui.remote,
        "hello",
        "2.0.0",
        "{type: canary, stages: [30, 60, 100], evaluationPeriod: PT1S}",
    )
    # current step -> most nodes shown serving 2.0.0 while it was the current one (the
    # inventories on the page can lag the plan by a pass, never lead it)
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        label, nodes = current_step(page, "2.0.0")
        if label:
            seen[label] = max(seen.get(label, 0), nodes)
        rollout = page.locator("section[data-live=rollout] p").first.inner_text()
        done = "hello-2.0.0-" in rollout and "COMPLETED" in rollout
        if done and page.locator("h1 .badge", has_text="in sync").count():
            break
        page.wait_for_timeout(50)
    waits = {label: n for label, n in seen.items() if label.startswith("wait")}
    assert any("evaluation of stage 1" in w for w in waits), seen
    assert any("evaluation of stage 2" in w for w in waits), seen
    # While each stage was evaluated, the nodes table showed that stage's canary nodes.
    stage1 = next(n for w, n in waits.items() if "stage 1" in w)
    stage2 = next(n for w, n in waits.items() if "stage 2" in w)
    assert (stage1, stage2) == (1, 2), seen
    expect(page.locator("h1 .badge")).to_have_text("in sync")
    assert canary_nodes(page, "2.0.0") == 3
    assert page.evaluate("window.__loadedOnce") is True  # updated in place, never reloaded
    assert page.evaluate("window.gitopsd.updates") >= 3
    # The overview agrees, and the JSON API says the same.
    page.goto(ui.url)
    row = page.locator("#fn-hello")
    expect(row).to_contain_text("2.0.0")
    expect(row.locator(".badge")).to_have_text("in sync")
    hello = next(f for f in api(ui, "overview")["functions"] if f["name"] == "hello")
    assert (hello["state"], hello["desiredVersion"]) == ("in-sync", "2.0.0")


def test_a_failing_canary_shows_the_rolled_back_state_and_its_reason(
    context: BrowserContext, ui: UiDaemon
) -> None:
    page = context.new_page()
    page.goto(f"{ui.url}/functions/world")
    expect(page.locator("#live")).to_have_attribute("data-state", "on")
    before = set(ui.fleet.serving("world").values())
    push(
        ui.remote,
        "world",
        "3.0.0",
        "{type: canary, stages: [30, 100]}",
        health="SICK",
        extra="  healthCheck: {failureThreshold: 1}\n",
    )
    badge = page.locator("section[data-live=rollout] .badge").first
    expect(badge).to_have_text("ROLLED_BACK", timeout=20_000)
    expect(page.locator("h1 .badge")).to_have_text("failed")
    reason = page.locator("section[data-live=rollout] .error").first
    expect(reason).to_contain_text("health")
    expect(page.locator("section[data-live=head]")).to_contain_text("rolled back 3.0.0")
    doc = api(ui, "functions/world")
    assert doc["state"] == "failed" and doc["rollout"]["state"] == "ROLLED_BACK"
    # The rollout's own page: the journal as a timeline, its failure with the node's reason.
    page.locator("section[data-live=rollout] a[href^='/rollouts/']").first.click()
    failures = page.locator("section[data-live=failures]")
    expect(failures).to_contain_text("health-check 3.0.0")
    expect(failures).to_contain_text("edge-")
    assert page.locator("section[data-live=timeline] li.st-failed").count() >= 1
    expect(page.locator("h1 .badge")).to_have_text("ROLLED_BACK")
    # The fleet stayed on the version before.
    assert set(ui.fleet.serving("world").values()) == before
