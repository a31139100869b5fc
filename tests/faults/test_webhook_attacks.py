"""Webhook attacks: bad signatures, replays, oversized, slow and truncated bodies.

The receiver is exercised twice: in-process (the real `WebhookReceiver` app on a loopback
port, counting the reconciles it asks for) where thousands of deliveries cost a second, and
through the real daemon (`gitopsd run`), where reconciles are counted from its metrics and
memory from /proc.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gitopsd.clock import FakeClock
from gitopsd.daemon.webhook import (
    MAX_BODY,
    REPLAY_MEMORY,
    REPLAY_TTL,
    ReplayGuard,
    WebhookReceiver,
)
from tests.daemon.daemonsupport import SECRET, DaemonProcess, wait_for
from tests.faults.conftest import Figures, scale
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

FORGES = ("github", "gitea", "gitlab")
COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"

PAYLOADS: dict[str, dict[str, Any]] = {
    "github": {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": COMMIT,
        "repository": {"full_name": "edge/fleet", "default_branch": "main"},
        "pusher": {"name": "zoë", "email": "zoe@example.test"},
        "commits": [{"id": COMMIT, "message": "canary 1.2.0 — ünïcode ✓", "added": []}],
    },
    "gitea": {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": COMMIT,
        "repository": {"full_name": "edge/fleet"},
        "pusher": {"login": "jörg"},
        "commits": [{"id": COMMIT, "message": "blue-green 2.0 → 2.1"}],
    },
    "gitlab": {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "checkout_sha": COMMIT,
        "project": {"path_with_namespace": "edge/fleet"},
        "user_name": "Łukasz",
        "commits": [{"id": COMMIT, "message": "rollout 3.0 ✓"}],
    },
}


def sign(forge: str, body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    base = {"Content-Type": "application/json"}
    if forge == "github":
        return base | {
            "X-Hub-Signature-256": f"sha256={digest}",
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": "push",
        }
    if forge == "gitea":
        return base | {"X-Gitea-Signature": digest, "X-Gitea-Delivery": delivery}
    return base | {"X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": delivery}


def bad_signatures(forge: str, body: bytes, delivery: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Every kind of wrong signature for `forge`, with its headers."""
    good = sign(forge, body, delivery)
    name = {"github": "X-Hub-Signature-256", "gitea": "X-Gitea-Signature"}.get(
        forge, "X-Gitlab-Token"
    )
    value = good[name]
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    other_body = hmac.new(SECRET.encode(), body + b" ", hashlib.sha256).hexdigest()
    wrong_key = hmac.new(b"wrong", body, hashlib.sha256).hexdigest()
    sha1 = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    prefix = "sha256=" if forge == "github" else ""
    variants = {
        "missing": None,
        "empty": "",
        "wrong-secret": prefix + wrong_key,
        "other-body": prefix + other_body,
        "truncated": value[:-1],
        "one-char-off": value[:-1] + ("0" if value[-1] != "0" else "1"),
        "upper-case": value.upper() if forge != "gitlab" else value.swapcase(),
        "sha1": ("sha1=" if forge == "github" else "") + sha1,
        "no-prefix": digest if forge == "github" else "sha256=" + digest,
        "doubled": value + value,
        "whitespace": " " + value + "x",
        "null-byte": value[:10] + "\x00" + value[10:],
        "secret-prefix": SECRET[:-1] if forge == "gitlab" else prefix + digest[:32],
        "secret-suffix": SECRET + "x" if forge == "gitlab" else value + "0",
        "secret-itself": SECRET if forge != "gitlab" else SECRET.upper(),
        "digest-of-secret": prefix + hashlib.sha256(SECRET.encode()).hexdigest(),
        "non-ascii": value[:-1] + "é",
        "other-forge-header": None,
    }
    for kind, sig in variants.items():
        headers = {k: v for k, v in good.items() if k != name}
        if sig is not None:
            headers[name] = sig
        if kind == "other-forge-header":
            other = "gitea" if forge == "github" else "github"
            foreign = sign(other, body, delivery)
            headers |= {k: v for k, v in foreign.items() if "Signature" in k or "Token" in k}
        yield kind, headers


def truncations(body: bytes) -> Iterator[tuple[str, bytes]]:
    """The body cut at several points, including inside multi-byte UTF-8 characters."""
    cuts = {0, 1, len(body) // 10, len(body) // 2, len(body) - 1}
    multibyte = [i for i, b in enumerate(body) if b >= 0xC0]
    cuts.update(i + 1 for i in multibyte[:3])
    for cut in sorted(cuts):
        if 0 <= cut < len(body):
            yield f"cut-at-{cut}", body[:cut]


# -- in-process receiver ---------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.triggers: list[str] = []
        self.receiver = WebhookReceiver(SECRET.encode(), "main", self.triggers.append)
        self.url = ""

    async def __aenter__(self) -> Receiver:
        self.runner = web.AppRunner(self.receiver.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = getattr(server, "sockets", [])[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r


async def post(
    session: aiohttp.ClientSession, url: str, forge: str, body: Any, headers: dict[str, str]
) -> int:
    """POST `body` (bytes, or an async iterator of chunks: sent chunked) to the receiver."""
    async with session.post(f"{url}/hooks/{forge}", data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_bad_signatures_are_refused(receiver: Receiver, figures: Figures) -> None:
    total = scale(200, 600)
    statuses: dict[str, int] = {}
    sent = 0
    async with aiohttp.ClientSession() as session:
        while sent < total:
            for forge in FORGES:
                body = json.dumps(PAYLOADS[forge] | {"n": sent}).encode()
                for kind, headers in bad_signatures(forge, body, f"bad-{sent}"):
                    try:
                        status = await post(session, receiver.url, forge, body, headers)
                    except (aiohttp.ClientError, ValueError):
                        status = 400  # the client itself refused to send the header
                    statuses[f"{forge}/{kind}"] = status
                    sent += 1
    figures.update(
        bad_signatures_sent=sent,
        kinds=len(statuses),
        refused_4xx_kinds=sum(400 <= s < 500 for s in statuses.values()),
        reconciles_triggered=len(receiver.triggers),
        not_401={k: s for k, s in statuses.items() if s != 401},  # aiohttp refuses a NUL: 400
    )
    assert sent >= total
    assert {k: s for k, s in statuses.items() if not 400 <= s < 500} == {}
    assert receiver.triggers == []


async def test_one_delivery_replayed_1000_times_reconciles_once(
    receiver: Receiver, figures: Figures
) -> None:
    replays = scale(1000, 1000)
    seen: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        for forge in FORGES:
            body = json.dumps(PAYLOADS[forge]).encode()
            headers = sign(forge, body, f"delivery-{forge}")
            for _ in range(replays):
                status = await post(session, receiver.url, forge, body, headers)
                seen[status] = seen.get(status, 0) + 1
    figures.update(
        replays_per_forge=replays, statuses=seen, reconciles_triggered=len(receiver.triggers)
    )
    assert len(receiver.triggers) == len(FORGES)  # one per forge's delivery id
    assert seen == {202: len(FORGES), 409: len(FORGES) * (replays - 1)}


async def test_oversized_and_truncated_bodies(receiver: Receiver, figures: Figures) -> None:
    big = b"{" + b'"a": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    results: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        for forge in FORGES:
            headers = sign(forge, big, f"big-{forge}")
            results[f"{forge}/10MB-with-length"] = await post(
                session, receiver.url, forge, big, headers
            )

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(big), 65536):
                    yield big[i : i + 65536]

            try:
                results[f"{forge}/10MB-chunked"] = await post(
                    session,
                    receiver.url,
                    forge,
                    chunks(),
                    headers,
                )
            except aiohttp.ClientError:
                results[f"{forge}/10MB-chunked"] = -1  # cut off while sending: also fine
            body = json.dumps(PAYLOADS[forge]).encode()
            for name, cut in truncations(body):
                signed = await post(session, receiver.url, forge, cut, sign(forge, cut, name))
                unsigned = await post(session, receiver.url, forge, cut, sign(forge, body, name))
                results[f"{forge}/{name}/signed"] = signed
                results[f"{forge}/{name}/full-body-signature"] = unsigned
    truncated = {k: v for k, v in results.items() if "cut-at" in k}
    figures.update(
        oversized={k: v for k, v in results.items() if "10MB" in k},
        truncated_cases=len(truncated),
        truncated_4xx=sum(400 <= v < 500 for v in truncated.values()),
        reconciles_triggered=len(receiver.triggers),
    )
    assert all(v in (413, -1) for k, v in results.items() if "10MB" in k), results
    assert all(400 <= v < 500 for v in truncated.values()), truncated
    # a signed empty body is not a push: nothing triggers, nothing crashes
    assert receiver.triggers == []


# -- through the daemon ---------------------------------------------------------------------


def reconciles(daemon: DaemonProcess) -> int:
    return int(
        sum(
            float(v)
            for v in re.findall(r"^gitopsd_reconcile_total\{[^}]*\} (\S+)$", daemon.metrics(), re.M)
        )
    )


def vm_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match[1])


def raw_post(
    port: int, forge: str, body: bytes, headers: dict[str, str], timeout: float = 10
) -> int:
    """POST with a plain socket (exact headers, no client-side checks); the status, 0 if cut."""
    head = [f"POST /hooks/{forge} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            answer = sock.recv(65536)
        except (ConnectionError, TimeoutError):
            return 0
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return int(match[1]) if match else 0


@pytest.fixture
def daemon(tmp_path: Path, remote: GitRemote, fleet: Fleet) -> Iterator[DaemonProcess]:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "hello", "1.0.0", "{type: blue-green}")
    d = DaemonProcess(tmp_path / "daemon", remote, fleet, watch=False)
    d.start()
    wait_for(lambda: set(fleet.serving("hello").values()) == {"1.0.0"}, what="first sync")
    wait_for(lambda: reconciles(d) >= 1, what="first pass counted")
    yield d
    d.close()


@pytest.mark.timeout(scale(120, 900))
def test_attacks_on_the_daemon(daemon: DaemonProcess, figures: Figures) -> None:
    assert daemon.proc is not None
    pid, port = daemon.proc.pid, daemon.webhook_port
    time.sleep(0.3)
    passes = reconciles(daemon)
    hwm_before = vm_kib(pid, "VmHWM")
    statuses: dict[int, int] = {}

    def count(status: int) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    bad = 0
    while bad < scale(30, 200):
        for forge in FORGES:
            body = json.dumps(PAYLOADS[forge] | {"n": bad}).encode()
            for _kind, headers in bad_signatures(forge, body, f"bad-{bad}"):
                count(raw_post(port, forge, body, headers))
                bad += 1
    for forge in FORGES:
        body = json.dumps(PAYLOADS[forge]).encode()
        for name, cut in truncations(body):
            count(raw_post(port, forge, cut, sign(forge, cut, f"trunc-{forge}-{name}")))
        for _kind, headers in non_utf8_signatures(forge, body):
            count(raw_post(port, forge, body, headers))
        deep = nested(100_000, "mixed")
        count(raw_post(port, forge, deep, sign(forge, deep, f"deep-{forge}")))
    big = b"x" * (10 * 1024 * 1024)
    for forge in FORGES:
        for _ in range(3):
            count(raw_post(port, forge, big, sign(forge, big, "big")))
    time.sleep(0.5)  # a pass a refused delivery might have caused
    refused_passes = reconciles(daemon) - passes
    passes = reconciles(daemon)
    replays = scale(100, 1000)
    body = json.dumps(PAYLOADS["github"]).encode()
    headers = sign("github", body, "the-one-delivery")
    replay_statuses = [raw_post(port, "github", body, headers) for _ in range(replays)]
    wait_for(lambda: reconciles(daemon) > passes, what="the accepted delivery's pass")
    time.sleep(1.0)  # any extra pass a replay might have caused
    after_replays = reconciles(daemon) - passes
    hwm_growth = (vm_kib(pid, "VmHWM") - hwm_before) / 1024
    figures.update(
        bad_signatures=bad,
        refusals=statuses,
        passes_from_refused=refused_passes,
        replays=replays,
        replay_202=replay_statuses.count(202),
        replay_409=replay_statuses.count(409),
        passes_from_replays=after_replays,
        daemon_peak_rss_growth_mib=round(hwm_growth, 1),
        max_body=MAX_BODY,
    )
    assert daemon.proc.poll() is None and daemon.healthy()
    assert set(statuses) <= {400, 401, 413, 0}, statuses
    assert statuses.get(200, 0) == statuses.get(202, 0) == 0
    assert refused_passes == 0
    assert replay_statuses.count(202) == 1 and replay_statuses.count(409) == replays - 1
    assert after_replays == 1
    assert hwm_growth < 32, f"peak RSS grew by {hwm_growth:.0f} MiB"


def test_slow_bodies_do_not_starve_the_daemon(daemon: DaemonProcess, figures: Figures) -> None:
    """Many connections trickling a body: the daemon keeps answering, memory stays flat."""
    assert daemon.proc is not None
    pid, port = daemon.proc.pid, daemon.webhook_port
    rss_before = vm_kib(pid, "VmRSS")
    slow = []
    for i in range(scale(100, 500)):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-GitHub-Delivery: slow-{i}\r\nContent-Length: 1000000\r\n\r\n{{".encode()
        )
        slow.append(sock)
    closed = 0
    try:
        for _ in range(3):
            for sock in slow:
                try:
                    sock.sendall(b" ")
                except OSError:  # past the listener's cap the oldest are closed: by design
                    closed += 1
            time.sleep(0.2)
        started = time.monotonic()
        body = json.dumps(PAYLOADS["gitea"]).encode()
        status = raw_post(port, "gitea", body, sign("gitea", body, "while-slow"))
        answered = time.monotonic() - started
        healthy = daemon.healthy()
        rss_growth = (vm_kib(pid, "VmRSS") - rss_before) / 1024
    finally:
        for sock in slow:
            sock.close()
    figures.update(
        slow_connections=len(slow),
        closed_by_the_daemon=closed,
        valid_delivery_status=status,
        valid_delivery_seconds=round(answered, 3),
        healthz_ok=healthy,
        rss_growth_mib=round(rss_growth, 1),
    )
    assert status == 202 and healthy  # answered while they trickle (figure: seconds)
    assert rss_growth < 32


async def test_truncated_payloads_keep_the_receiver_serving(receiver: Receiver) -> None:
    """After every malformed delivery the receiver still accepts a good one (no crash)."""
    async with aiohttp.ClientSession() as session:
        for forge in FORGES:
            body = json.dumps(PAYLOADS[forge]).encode()
            for name, cut in truncations(body):
                await post(session, receiver.url, forge, cut, sign(forge, cut, f"t-{name}"))
            status = await post(
                session, receiver.url, forge, body, sign(forge, body, f"ok-{forge}")
            )
            assert status == 202
    assert len(receiver.triggers) == len(FORGES)
    await asyncio.sleep(0)


# -- hostile bytes in headers and bodies (issue 14, finding 9) ---------------------------------

SIGNATURE_HEADER = {
    "github": "X-Hub-Signature-256",
    "gitea": "X-Gitea-Signature",
    "gitlab": "X-Gitlab-Token",
}
DELIVERY_HEADER = {
    "github": "X-GitHub-Delivery",
    "gitea": "X-Gitea-Delivery",
    "gitlab": "X-Gitlab-Event-UUID",
}
# Raw header bytes that are not UTF-8, written as the surrogate escapes `raw_post` turns back
# into those very bytes: a lone 0xFF, a cut 2-byte sequence, Latin-1 "é", an overlong "/".
NON_UTF8 = {
    "ff": "\udcff",
    "cut-2-byte": "\udcc3",
    "latin-1": "caf\udce9",
    "overlong": "\udcc0\udcaf",
}


def non_utf8_signatures(forge: str, body: bytes) -> Iterator[tuple[str, dict[str, str]]]:
    """The valid headers with the signature header replaced, extended or prefixed by bytes
    that are not UTF-8."""
    good = sign(forge, body, f"non-utf8-{forge}")
    name = SIGNATURE_HEADER[forge]
    for kind, junk in NON_UTF8.items():
        for where, value in (
            ("alone", junk),
            ("suffix", good[name] + junk),
            ("prefix", junk + good[name]),
        ):
            yield f"{kind}-{where}", good | {name: value}


def nested(depth: int, kind: str) -> bytes:
    """A JSON document nested `depth` levels deep, a `ref` at the top where it can be."""
    if kind == "arrays":
        return b"[" * depth + b"]" * depth
    if kind == "objects":
        return b'{"a":' * depth + b"1" + b"}" * depth
    inner = b'{"a":[' * (depth // 2) + b"1" + b"]}" * (depth // 2)
    return b'{"ref": "refs/heads/main", "x": ' + inner + b"}"


async def test_non_utf8_signature_headers_are_401_and_the_receiver_keeps_serving(
    receiver: Receiver, figures: Figures
) -> None:
    """Regression (issue 14, finding 9): `signature_ok` encoded the header to compare it and
    raised UnicodeEncodeError on the surrogates aiohttp keeps for undecodable bytes: 500."""
    port = int(receiver.url.rsplit(":", 1)[1])
    statuses: dict[str, int] = {}
    for forge in FORGES:
        body = json.dumps(PAYLOADS[forge]).encode()
        for kind, headers in non_utf8_signatures(forge, body):
            statuses[f"{forge}/{kind}"] = await asyncio.to_thread(
                raw_post, port, forge, body, headers
            )
    async with aiohttp.ClientSession() as session:
        for forge in FORGES:
            body = json.dumps(PAYLOADS[forge] | {"after-attack": True}).encode()
            ok = await post(session, receiver.url, forge, body, sign(forge, body, f"ok-{forge}"))
            statuses[f"{forge}/valid-after"] = ok
    figures.update(cases=len(statuses), statuses=sorted(set(statuses.values())))
    assert {k: s for k, s in statuses.items() if "valid-after" not in k and s != 401} == {}
    assert [statuses[f"{forge}/valid-after"] for forge in FORGES] == [202] * len(FORGES)
    assert len(receiver.triggers) == len(FORGES)


async def test_non_utf8_or_odd_delivery_ids_are_400(receiver: Receiver) -> None:
    """A correctly signed delivery whose (unsigned) delivery id is not printable ASCII is
    refused before it reaches the replay guard, the logs or a trigger reason."""
    port = int(receiver.url.rsplit(":", 1)[1])
    for forge in FORGES:
        for n, odd in enumerate([*NON_UTF8.values(), "x" * 129, "a b", "zoë"]):
            body = json.dumps(PAYLOADS[forge] | {"n": n}).encode()
            headers = sign(forge, body, "unused") | {DELIVERY_HEADER[forge]: odd}
            status = await asyncio.to_thread(raw_post, port, forge, body, headers)
            assert status == 400, (forge, odd, status)
    assert receiver.triggers == []


@pytest.mark.parametrize("kind", ["arrays", "objects", "mixed"])
async def test_deeply_nested_signed_bodies_are_400(receiver: Receiver, kind: str) -> None:
    """Regression (issue 14, finding 9): `json.loads` raised RecursionError on a signed body
    nested 100,000 levels deep, which aiohttp answered with 500 and a traceback."""
    async with aiohttp.ClientSession() as session:
        for forge in FORGES:
            for depth in (2_000, 100_000, 500_000):
                body = nested(depth, kind)
                assert len(body) <= MAX_BODY * 4
                if len(body) > MAX_BODY:
                    continue  # the size cap answers first (413): not this test's subject
                headers = sign(forge, body, f"deep-{kind}-{depth}")
                async with session.post(
                    f"{receiver.url}/hooks/{forge}", data=body, headers=headers
                ) as resp:
                    assert resp.status == 400, (forge, depth, await resp.text())
                    assert "nested too deeply" in (await resp.json())["error"]
            body = json.dumps(PAYLOADS[forge] | {"kind": kind}).encode()
            assert await post(session, receiver.url, forge, body, sign(forge, body, kind)) == 202
    assert len(receiver.triggers) == len(FORGES)


# -- replays under fresh delivery ids (issue 14, finding 10) -----------------------------------


async def test_a_signed_body_replayed_under_fresh_delivery_ids_reconciles_once(
    receiver: Receiver, figures: Figures
) -> None:
    """Regression (issue 14, finding 10): the replay guard keyed on the delivery id header,
    which the signature does not cover, so a captured delivery sent again with a new id was
    accepted every time and asked for a pass every time."""
    replays = scale(300, 1000)
    seen: dict[int, int] = {}
    async with aiohttp.ClientSession() as session:
        for forge in FORGES:
            body = json.dumps(PAYLOADS[forge]).encode()
            for n in range(replays):
                headers = sign(forge, body, f"fresh-{forge}-{n}")
                status = await post(session, receiver.url, forge, body, headers)
                seen[status] = seen.get(status, 0) + 1
            # A new push is a new body: accepted, although the forge and the secret are the same.
            other = json.dumps(PAYLOADS[forge] | {"after": "1" * 40}).encode()
            assert await post(session, receiver.url, forge, other, sign(forge, other, "new")) == 202
    figures.update(replays_per_forge=replays, statuses=seen, triggers=len(receiver.triggers))
    assert seen == {202: len(FORGES), 409: len(FORGES) * (replays - 1)}
    assert len(receiver.triggers) == 2 * len(FORGES)


async def test_a_delivery_captured_on_one_forge_endpoint_is_a_replay_on_another(
    receiver: Receiver,
) -> None:
    """Red-team finding: GitHub's `sha256=` signature and Gitea's are the same HMAC under the
    one secret, and the body key named the forge, so a captured GitHub delivery sent to
    /hooks/gitea with the same hex started another pass."""
    body = json.dumps(PAYLOADS["github"]).encode()
    async with aiohttp.ClientSession() as session:
        first = await post(session, receiver.url, "github", body, sign("github", body, "cap-1"))
        again = await post(session, receiver.url, "gitea", body, sign("gitea", body, "cap-2"))
    assert (first, again) == (202, 409)
    assert len(receiver.triggers) == 1


def test_replay_guard_forgets_after_its_window_and_stays_bounded() -> None:
    """The guard remembers a key for `ttl` seconds of the injected clock and never holds more
    than `size` keys, however many distinct deliveries arrive."""
    clock = FakeClock()
    guard = ReplayGuard(size=100, ttl=3600.0, clock=clock)
    assert guard.first_time("github:d1", "github:sha256:aa")
    assert not guard.first_time("github:d2", "github:sha256:aa")  # same body, new id
    assert not guard.first_time("github:d1", "github:sha256:bb")  # same id, new body
    assert guard.first_time("gitea:d1", "gitea:sha256:aa")  # another forge: other keys
    clock.advance(3599.0)
    assert not guard.first_time("github:d3", "github:sha256:aa")
    clock.advance(2.0)
    assert guard.first_time("github:d3", "github:sha256:aa")  # the window has passed
    for n in range(10_000):
        guard.first_time(f"github:id-{n}", f"github:sha256:{n}")
        assert len(guard) <= 100
    assert guard.first_time("github:id-0", "github:sha256:0")  # evicted long ago: new again
    assert REPLAY_MEMORY >= 2 * 10_000 and REPLAY_TTL >= 3600
