"""Forge commit statuses against a local HTTP server that checks each forge's exact request."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gitopsd.report.forges import ForgeReporter, ForgeTarget, status_request

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "tok-3f9a7c1e"


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ForgeServer:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    # (status, headers, body) answered in order; the last one repeats.
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=lambda: [(201, {}, "{}")])

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = await request.text()
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        status, headers, text = self.script[min(len(self.seen), len(self.script)) - 1]
        return web.Response(status=status, headers=headers, text=text)


@asynccontextmanager
async def forge_server(
    *script: tuple[int, dict[str, str], str],
) -> AsyncIterator[ForgeServer]:
    server = ForgeServer(script=list(script) or [(201, {}, "{}")])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


class FakeSleep:
    """Records the delays instead of sleeping: retries run in milliseconds."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _reporter(target: ForgeTarget, sleep: FakeSleep, **kw: Any) -> ForgeReporter:
    return ForgeReporter([target], sleep=sleep, clock=lambda: 1_000_000.0, **kw)


def _headers(seen: Seen, *names: str) -> dict[str, str]:
    return {n: seen.headers.get(n, "<missing>") for n in names}


async def test_github_request_shape() -> None:
    async with forge_server() as srv:
        target = ForgeTarget("github", srv.url + "/", "acme/edge-config", TOKEN)
        async with _reporter(target, FakeSleep()) as rep:
            ok = await rep.post(
                target, SHA, "image-processor", "success", "rolled out", "https://ci/1"
            )
    assert ok
    [seen] = srv.seen
    assert seen.method == "POST"
    assert seen.raw_path == f"/repos/acme/edge-config/statuses/{SHA}"
    assert _headers(seen, "Authorization", "Accept", "X-GitHub-Api-Version") == {
        "Authorization": f"Bearer {TOKEN}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    assert seen.headers["Content-Type"].startswith("application/json")
    assert seen.headers["User-Agent"] == "gitopsd"
    assert seen.body == {
        "state": "success",
        "context": "gitopsd/image-processor",
        "description": "rolled out",
        "target_url": "https://ci/1",
    }


async def test_github_running_is_pending_and_long_descriptions_are_cut() -> None:
    async with forge_server() as srv:
        target = ForgeTarget("github", srv.url + "/api/v3", "acme/edge-config", TOKEN)
        async with _reporter(target, FakeSleep()) as rep:
            assert await rep.post(target, SHA, "fn", "running", "x" * 500)
    [seen] = srv.seen
    assert seen.raw_path == f"/api/v3/repos/acme/edge-config/statuses/{SHA}"
    assert seen.body["state"] == "pending"
    assert len(seen.body["description"]) == 140
    assert "target_url" not in seen.body


async def test_gitea_request_shape() -> None:
    async with forge_server() as srv:
        target = ForgeTarget("gitea", srv.url + "/api/v1", "ops/edge", TOKEN)
        async with _reporter(target, FakeSleep()) as rep:
            assert await rep.post(target, SHA, "router", "failure", "canary failed at 25%")
    [seen] = srv.seen
    assert (seen.method, seen.raw_path) == ("POST", f"/api/v1/repos/ops/edge/statuses/{SHA}")
    assert _headers(seen, "Authorization", "Accept") == {
        "Authorization": f"token {TOKEN}",
        "Accept": "application/json",
    }
    assert "X-GitHub-Api-Version" not in seen.headers
    assert seen.body == {
        "state": "failure",
        "context": "gitopsd/router",
        "description": "canary failed at 25%",
        "target_url": "",
    }


async def test_gitlab_request_shape() -> None:
    async with forge_server() as srv:
        target = ForgeTarget("gitlab", srv.url + "/api/v4", "infra/edge/config", TOKEN)
        async with _reporter(target, FakeSleep()) as rep:
            assert await rep.post(target, SHA, "auth", "failure", "rolled back", "https://x/y")
            assert await rep.post(target, SHA, "auth", "running", "canary 10%")
    first, second = srv.seen
    assert first.method == "POST"
    assert first.raw_path == f"/api/v4/projects/infra%2Fedge%2Fconfig/statuses/{SHA}"
    assert first.headers["PRIVATE-TOKEN"] == TOKEN
    assert "Authorization" not in first.headers
    assert first.body == {
        "state": "failed",
        "name": "gitopsd/auth",
        "description": "rolled back",
        "target_url": "https://x/y",
    }
    assert second.body == {"state": "running", "name": "gitopsd/auth", "description": "canary 10%"}


def test_status_request_is_pure_and_numeric_gitlab_ids_work() -> None:
    target = ForgeTarget("gitlab", "https://gitlab.example/api/v4", "42", TOKEN)
    method, url, headers, body = status_request(target, SHA, "fn", "pending", "waiting")
    assert (method, url) == ("POST", f"https://gitlab.example/api/v4/projects/42/statuses/{SHA}")
    assert headers == {"PRIVATE-TOKEN": TOKEN, "Accept": "application/json"}
    assert body["state"] == "pending"
    assert TOKEN not in repr(target)


async def test_server_error_is_retried_with_backoff() -> None:
    async with forge_server((503, {}, "busy"), (502, {}, "busy"), (201, {}, "{}")) as srv:
        target = ForgeTarget("github", srv.url, "acme/edge", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep, base_delay=0.5) as rep:
            assert await rep.post(target, SHA, "fn", "success", "ok")
    assert len(srv.seen) == 3
    assert sleep.delays == [0.5, 1.0]
    assert srv.seen[0].body == srv.seen[2].body  # the same request, resent


async def test_rate_limit_retry_after_is_honoured() -> None:
    async with forge_server((429, {"Retry-After": "7"}, "slow down"), (201, {}, "{}")) as srv:
        target = ForgeTarget("gitea", srv.url, "ops/edge", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep) as rep:
            assert await rep.post(target, SHA, "fn", "success", "ok")
    assert sleep.delays == [7.0]


async def test_retry_after_as_http_date() -> None:
    when = email.utils.formatdate(1_000_000.0 + 12, usegmt=True)
    async with forge_server((429, {"Retry-After": when}, ""), (201, {}, "{}")) as srv:
        target = ForgeTarget("gitlab", srv.url, "g/p", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep) as rep:
            assert await rep.post(target, SHA, "fn", "success", "ok")
    assert sleep.delays == [12.0]


async def test_github_403_rate_limit_waits_for_the_reset() -> None:
    limited = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(1_000_000 + 30)}
    async with forge_server((403, limited, "API rate limit exceeded"), (201, {}, "{}")) as srv:
        target = ForgeTarget("github", srv.url, "acme/edge", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep) as rep:
            assert await rep.post(target, SHA, "fn", "success", "ok")
    assert sleep.delays == [31.0]  # until the reset, plus a second of slack


async def test_rate_limit_longer_than_the_budget_gives_up() -> None:
    async with forge_server((429, {"Retry-After": "3600"}, "")) as srv:
        target = ForgeTarget("github", srv.url, "acme/edge", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep, max_delay=60) as rep:
            with capture_logs() as logs:
                assert not await rep.post(target, SHA, "fn", "success", "ok")
    assert len(srv.seen) == 1 and sleep.delays == []
    assert any(e["event"] == "forge rate limit outlasts the retry budget" for e in logs)


async def test_permanent_401_gives_up_without_retrying() -> None:
    async with forge_server((401, {}, '{"message": "Bad credentials"}')) as srv:
        target = ForgeTarget("github", srv.url, "acme/edge", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep) as rep:
            with capture_logs() as logs:
                assert not await rep.post(target, SHA, "fn", "success", "ok")
    assert len(srv.seen) == 1 and sleep.delays == []
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "forge refused the status"
    assert "HTTP 401" in warning["reason"] and "Bad credentials" in warning["reason"]


async def test_plain_403_is_not_a_rate_limit() -> None:
    async with forge_server((403, {"X-RateLimit-Remaining": "4999"}, "forbidden")) as srv:
        target = ForgeTarget("github", srv.url, "acme/edge", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep) as rep:
            assert not await rep.post(target, SHA, "fn", "success", "ok")
    assert len(srv.seen) == 1


async def test_persistent_5xx_gives_up_after_the_attempts() -> None:
    async with forge_server((500, {}, "oops")) as srv:
        target = ForgeTarget("gitlab", srv.url, "g/p", TOKEN)
        sleep = FakeSleep()
        async with _reporter(target, sleep, attempts=4, base_delay=1, max_delay=3) as rep:
            with capture_logs() as logs:
                assert not await rep.post(target, SHA, "fn", "success", "ok")
    assert len(srv.seen) == 4
    assert sleep.delays == [1, 2, 3]  # capped
    assert logs[-1]["event"] == "forge status gave up"


async def test_unreachable_forge_never_raises() -> None:
    target = ForgeTarget("gitea", "http://127.0.0.1:9", "ops/edge", TOKEN)
    sleep = FakeSleep()
    async with _reporter(target, sleep, attempts=2) as rep:
        assert not await rep.post(target, SHA, "fn", "success", "ok")
    assert len(sleep.delays) == 1


async def test_submit_runs_in_the_background_for_every_target() -> None:
    async with forge_server() as gh, forge_server() as gl:
        targets = [
            ForgeTarget("github", gh.url, "acme/edge", TOKEN),
            ForgeTarget("gitlab", gl.url, "acme/edge", TOKEN),
        ]
        rep = ForgeReporter(targets, sleep=FakeSleep())
        rep.submit(SHA, "fn", "running", "canary 10%")  # returns at once
        await rep.aclose()
        assert len(gh.seen) == len(gl.seen) == 1
        async with ForgeReporter(targets, sleep=FakeSleep()) as rep2:
            assert await rep2.post_all(SHA, "fn", "success", "done") == {
                "github:acme/edge": True,
                "gitlab:acme/edge": True,
            }


def test_bad_targets_are_rejected() -> None:
    with pytest.raises(ValueError, match="owner/name"):
        ForgeTarget("github", "https://api.github.com", "just-a-name", TOKEN)
