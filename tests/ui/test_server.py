"""The page's HTTP surface in-process (real HTTP on loopback, a real state database):
headers, errors, the JSON API without a fleet, and the cap on open event streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gitopsd.fleet.live import LiveState
from gitopsd.store.sqlite import SqliteStore
from gitopsd.ui import server
from gitopsd.ui.events import EventBus
from gitopsd.ui.ports import UiPorts, no_commit, no_notes
from gitopsd.ui.standalone import PageThread


async def no_fleet() -> LiveState:
    return LiveState()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[PageThread]:
    store = SqliteStore(tmp_path / "state #1?")  # URI characters in the path: still this file
    ports = UiPorts(store, EventBus(), lambda: None, no_fleet, no_commit, no_notes)
    running = PageThread(ports, token="t0ken")
    yield running
    running.close()
    store.close()


async def test_headers_errors_and_an_empty_overview(page: PageThread) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{page.url}/") as r:
            assert r.status == 200
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Cache-Control"] == "no-store"
            assert "No functions known yet." in await r.text()
        async with http.get(f"{page.url}/api/overview") as r:
            doc = await r.json()
            assert (doc["functions"], doc["page"]["total"], doc["readOnly"]) == ([], 0, False)
        async with http.get(f"{page.url}/api/overview?page=two") as r:
            assert r.status == 400
        async with http.get(f"{page.url}/api/functions/nope") as r:
            assert r.status == 404 and "nope" in (await r.json())["error"]
        async with http.get(f"{page.url}/functions/..%2Fetc") as r:
            assert r.status == 404
        async with http.post(f"{page.url}/functions/hello/reboot", data={"csrf": "x"}) as r:
            assert r.status == 404
        async with http.get(f"{page.url}/static/../server.py") as r:
            assert r.status == 404


async def test_open_event_streams_are_capped(
    page: PageThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "MAX_STREAMS", 2)
    async with aiohttp.ClientSession() as http:
        first = await http.get(f"{page.url}/events")
        second = await http.get(f"{page.url}/events")
        assert (first.status, second.status) == (200, 200)
        assert (await first.content.readline()).startswith(b"retry: ")
        third = await http.get(f"{page.url}/events")
        assert third.status == 503 and third.headers["Retry-After"] == "5"
        for r in (first, second, third):
            r.close()
