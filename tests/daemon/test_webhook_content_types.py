"""Issue 22 item 13: GitHub and Gitea deliver webhooks as `application/json` or as
`application/x-www-form-urlencoded` (`payload=<url-encoded JSON>`), signed over the body as
sent. Both are accepted; GitHub's `ping` (sent when a hook is created) is answered, and asks
for no reconcile.

The payloads are GitHub's own examples from its documentation of the push and ping events
("Webhook events and payloads"), trimmed of nothing that gitopsd reads.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
import pytest
from aiohttp import web

from gitopsd.daemon.webhook import WebhookReceiver

SECRET = b"It's a Secret to Everybody"  # GitHub's example secret (validating deliveries)

# GitHub's example push payload (a tag pushed to Codertocat/Hello-World).
GITHUB_PUSH: dict[str, Any] = {
    "ref": "refs/tags/simple-tag",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "0000000000000000000000000000000000000000",
    "created": False,
    "deleted": True,
    "forced": False,
    "base_ref": None,
    "compare": "https://github.com/Codertocat/Hello-World/compare/6113728f27ae...000000000000",
    "commits": [],
    "head_commit": None,
    "repository": {
        "id": 186853002,
        "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
        "name": "Hello-World",
        "full_name": "Codertocat/Hello-World",
        "private": False,
        "owner": {
            "name": "Codertocat",
            "email": "21031067+Codertocat@users.noreply.github.com",
            "login": "Codertocat",
            "id": 21031067,
            "type": "User",
            "site_admin": False,
        },
        "html_url": "https://github.com/Codertocat/Hello-World",
        "description": None,
        "fork": False,
        "url": "https://github.com/Codertocat/Hello-World",
        "created_at": 1557933565,
        "updated_at": "2019-05-15T15:20:41Z",
        "pushed_at": 1557933657,
        "default_branch": "master",
        "master_branch": "master",
    },
    "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
    "sender": {
        "login": "Codertocat",
        "id": 21031067,
        "node_id": "MDQ6VXNlcjIxMDMxMDY3",
        "type": "User",
        "site_admin": False,
    },
}
# GitHub's example ping payload (sent once, when the hook is created).
GITHUB_PING: dict[str, Any] = {
    "zen": "Anything added dilutes everything else.",
    "hook_id": 109948940,
    "hook": {
        "type": "Repository",
        "id": 109948940,
        "name": "web",
        "active": True,
        "events": ["*"],
        "config": {
            "content_type": "json",
            "url": "https://smee.io/****************",
            "insecure_ssl": "0",
        },
        "updated_at": "2019-05-15T15:20:49Z",
        "created_at": "2019-05-15T15:20:49Z",
        "url": "https://api.github.com/repos/Octocat/Hello-World/hooks/109948940",
        "test_url": "https://api.github.com/repos/Octocat/Hello-World/hooks/109948940/test",
        "ping_url": "https://api.github.com/repos/Octocat/Hello-World/hooks/109948940/pings",
        "last_response": {"code": None, "status": "unused", "message": None},
    },
    "repository": GITHUB_PUSH["repository"],
    "sender": GITHUB_PUSH["sender"],
}
MAIN = "master"  # the example repository's branch: the receiver watches it


def on_main(payload: dict[str, Any]) -> dict[str, Any]:
    """GitHub's example, as a push to the watched branch."""
    return {
        **payload,
        "ref": f"refs/heads/{MAIN}",
        "deleted": False,
        "after": "1481a2de7b2a7d02428ad93446ab166be7793fbb",
    }


def encode(payload: dict[str, Any], content_type: str) -> bytes:
    """The body as GitHub sends it in each content type."""
    text = json.dumps(payload)
    if content_type == "application/json":
        return text.encode()
    return f"payload={quote_plus(text)}".encode()


def headers(
    forge: str, body: bytes, event: str, delivery: str, content_type: str
) -> dict[str, str]:
    digest = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if forge == "github":
        return {
            "Content-Type": content_type,
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={digest}",
        }
    return {
        "Content-Type": content_type,
        "X-Gitea-Event": event,
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Signature": digest,
    }


Post = Callable[[str, bytes, dict[str, str]], Coroutine[Any, Any, tuple[int, dict[str, Any]]]]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Post, list[str]]]:
    triggers: list[str] = []
    hooks = WebhookReceiver(SECRET, MAIN, triggers.append)
    runner = web.AppRunner(hooks.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:

        async def post(forge: str, body: bytes, hdrs: dict[str, str]) -> tuple[int, dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/hooks/{forge}"
            async with session.post(url, data=body, headers=hdrs) as response:
                return response.status, await response.json()

        yield post, triggers
    await runner.cleanup()


CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded")


@pytest.mark.parametrize("forge", ["github", "gitea"])
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_a_push_in_either_content_type_asks_for_a_reconcile(
    receiver: tuple[Post, list[str]], forge: str, content_type: str
) -> None:
    post, triggers = receiver
    body = encode(on_main(GITHUB_PUSH), content_type)
    status, answer = await post(forge, body, headers(forge, body, "push", "d-1", content_type))
    assert (status, answer) == (202, {"status": "accepted"})
    assert len(triggers) == 1
    # GitHub's example as it is (a tag, not the watched branch): read, and ignored.
    body = encode(GITHUB_PUSH, content_type)
    status, answer = await post(forge, body, headers(forge, body, "push", "d-2", content_type))
    assert (status, answer["status"]) == (200, "ignored")
    assert len(triggers) == 1


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
async def test_githubs_ping_is_answered_and_reconciles_nothing(
    receiver: tuple[Post, list[str]], content_type: str
) -> None:
    post, triggers = receiver
    body = encode(GITHUB_PING, content_type)
    status, answer = await post(
        "github", body, headers("github", body, "ping", "p-1", content_type)
    )
    assert status == 200 and answer["status"] == "pong"
    assert answer["hookId"] == 109948940
    assert triggers == []


async def test_the_signature_covers_the_form_body_as_sent(
    receiver: tuple[Post, list[str]],
) -> None:
    post, triggers = receiver
    form_type = "application/x-www-form-urlencoded"
    inner = json.dumps(on_main(GITHUB_PUSH)).encode()
    body = encode(on_main(GITHUB_PUSH), form_type)
    signed_inner = headers("github", inner, "push", "s-1", form_type)  # over the JSON inside
    assert (await post("github", body, signed_inner))[0] == 401
    assert triggers == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "no payload field"),
        (b"other=1", "no payload field"),
        (urlencode([("payload", "{}"), ("payload", "{}")]).encode(), "more than one"),
        (b"payload=%7Bnot+json", "not valid JSON"),
        (b"payload=%FF%FE", "not valid JSON"),
    ],
)
async def test_a_bad_form_body_is_a_clear_400(
    receiver: tuple[Post, list[str]], body: bytes, why: str
) -> None:
    post, triggers = receiver
    form_type = "application/x-www-form-urlencoded"
    status, answer = await post("github", body, headers("github", body, "push", "b-1", form_type))
    assert status == 400 and why in answer["error"], answer
    assert triggers == []


async def test_content_type_parameters_and_case_do_not_matter(
    receiver: tuple[Post, list[str]],
) -> None:
    post, triggers = receiver
    for i, content_type in enumerate(
        ("application/json; charset=utf-8", "Application/X-WWW-Form-Urlencoded; charset=UTF-8")
    ):
        plain = content_type.split(";")[0].lower()
        body = encode(on_main({**GITHUB_PUSH, "after": f"{i:040d}"}), plain)
        hdrs = headers("github", body, "push", f"c-{i}", content_type)
        assert (await post("github", body, hdrs))[0] == 202
    assert len(triggers) == 2
