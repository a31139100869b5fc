"""Commit statuses through forge APIs: GitHub, Gitea and GitLab, context `gitopsd/<function>`.

`status_request` builds the exact request each forge expects (a pure function, tested on
its own); `ForgeReporter` sends it with aiohttp, retrying server errors and rate limits with
capped exponential backoff (honouring Retry-After and the rate-limit reset headers), and
never raises: a status is a report, never a reason to block or fail a rollout. The token is
only ever in the request headers: never in a log line, a repr or an error message.

States are gitopsd's: `pending` (waiting, e.g. for approval), `running` (rolling out),
`success`, `failure`, `error` (gitopsd could not finish). GitHub and Gitea know no
`running` (sent as `pending`); GitLab knows no `failure`/`error` (sent as `failed`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from gitopsd.log import get_logger
from gitopsd.report.notes import CommitOutcome

ForgeKind = Literal["github", "gitea", "gitlab"]
State = Literal["pending", "running", "success", "failure", "error"]
Request = tuple[str, str, dict[str, str], dict[str, Any]]
Sleep = Callable[[float], Awaitable[None]]

DESCRIPTION_MAX = 140  # GitHub's limit; the shortest of the three
USER_AGENT = "gitopsd"
_GITHUB_STATES: Mapping[str, str] = {"running": "pending"}
_GITLAB_STATES: Mapping[str, str] = {"failure": "failed", "error": "failed"}


@dataclass(frozen=True)
class ForgeTarget:
    """One repository on one forge. `repo` is `owner/name` (GitLab: the project's path
    `group/sub/project` or its numeric id); `api_url` the API root, e.g.
    `https://api.github.com`, `https://gitea.example/api/v1`, `https://gitlab.com/api/v4`."""

    kind: ForgeKind
    api_url: str
    repo: str
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("github", "gitea", "gitlab"):
            raise ValueError(f"unknown forge kind {self.kind!r}: github, gitea or gitlab")
        if self.kind != "gitlab" and self.repo.count("/") != 1:
            raise ValueError(f"{self.kind} repo must be owner/name, not {self.repo!r}")

    @property
    def name(self) -> str:
        """What logs call this target (no token)."""
        return f"{self.kind}:{self.repo}"


def context(function: str) -> str:
    return f"gitopsd/{function}"


def _description(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 3] + "..."


def status_request(
    target: ForgeTarget,
    sha: str,
    function: str,
    state: State,
    description: str,
    target_url: str | None = None,
) -> Request:
    """(method, url, headers, json body) of the status call, exactly as the forge wants it."""
    api = target.api_url.rstrip("/")
    desc = _description(description)
    if target.kind == "gitlab":
        project = quote(target.repo, safe="")
        body: dict[str, Any] = {
            "state": _GITLAB_STATES.get(state, state),
            "name": context(function),
            "description": desc,
        }
        if target_url:
            body["target_url"] = target_url
        headers = {"PRIVATE-TOKEN": target.token, "Accept": "application/json"}
        return "POST", f"{api}/projects/{project}/statuses/{sha}", headers, body
    owner, repo = (quote(part, safe="") for part in target.repo.split("/"))
    url = f"{api}/repos/{owner}/{repo}/statuses/{sha}"
    body = {
        "state": _GITHUB_STATES.get(state, state),
        "context": context(function),
        "description": desc,
    }
    if target.kind == "github":
        if target_url:
            body["target_url"] = target_url
        headers = {
            "Authorization": f"Bearer {target.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    else:
        body["target_url"] = target_url or ""
        headers = {"Authorization": f"token {target.token}", "Accept": "application/json"}
    return "POST", url, headers, body


class ForgeReporter:
    """Posts commit statuses to every configured forge; never raises to the caller.

    `post` waits for the outcome (retries included); `submit` starts it in the background
    and returns at once, which is what a rollout should use. `aclose` waits a little for
    background posts, cancels the rest and closes the HTTP session.
    """

    def __init__(
        self,
        targets: Iterable[ForgeTarget] = (),
        *,
        attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = tuple(targets)
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[bool]] = set()

    async def __aenter__(self) -> ForgeReporter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    def submit(
        self,
        sha: str,
        function: str,
        state: State,
        description: str,
        target_url: str | None = None,
    ) -> None:
        """Post to every target in the background (needs a running event loop)."""
        for target in self.targets:
            task = asyncio.get_running_loop().create_task(
                self.post(target, sha, function, state, description, target_url)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def post_all(
        self,
        sha: str,
        function: str,
        state: State,
        description: str,
        target_url: str | None = None,
    ) -> dict[str, bool]:
        """Post to every target concurrently; target name -> whether the forge took it."""
        done = await asyncio.gather(
            *(self.post(t, sha, function, state, description, target_url) for t in self.targets)
        )
        return {t.name: ok for t, ok in zip(self.targets, done, strict=True)}

    async def post(
        self,
        target: ForgeTarget,
        sha: str,
        function: str,
        state: State,
        description: str,
        target_url: str | None = None,
    ) -> bool:
        """Post one status; True when the forge accepted it. Never raises (but cancels)."""
        log = get_logger(forge=target.name, commit=sha[:12], function=function, state=state)
        try:
            return await self._post(log, target, sha, function, state, description, target_url)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a report must never break the caller
            log.warning("forge status failed", error=_scrub(repr(exc), target.token))
            return False

    async def _post(
        self,
        log: structlog.stdlib.BoundLogger,
        target: ForgeTarget,
        sha: str,
        function: str,
        state: State,
        description: str,
        target_url: str | None,
    ) -> bool:
        method, url, headers, body = status_request(
            target, sha, function, state, description, target_url
        )
        why = ""
        for attempt in range(1, self.attempts + 1):
            delay: float | None
            try:
                async with self._client().request(
                    method, URL(url, encoded=True), headers=headers, json=body
                ) as resp:
                    if 200 <= resp.status < 300:
                        log.debug("forge status posted", attempt=attempt)
                        return True
                    text = _scrub((await resp.text(errors="replace"))[:200], target.token)
                    why = f"HTTP {resp.status}: {text.strip()}"
                    delay = self._retry_delay(resp.status, resp.headers, attempt)
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = _scrub(f"{type(exc).__name__}: {exc}", target.token)
                delay = self._backoff(attempt)
            if delay is None:
                log.warning("forge refused the status", reason=why, attempt=attempt)
                return False
            if attempt == self.attempts:
                break
            if delay > self.max_delay:
                log.warning("forge rate limit outlasts the retry budget", wait=round(delay, 1))
                return False
            log.info("forge status will be retried", reason=why, wait=round(delay, 3))
            await self._sleep(delay)
        log.warning("forge status gave up", reason=why, attempts=self.attempts)
        return False

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    def _retry_delay(self, status: int, headers: Mapping[str, str], attempt: int) -> float | None:
        """Seconds to wait before the next try, or None when retrying cannot help."""
        limited = status == 429 or (status == 403 and _rate_limited(headers))
        if not limited and status < 500:
            return None
        asked = _asked_wait(headers, self._clock())
        if asked is not None:
            return asked
        return self._backoff(attempt)

    async def aclose(self, grace: float = 5.0) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def _rate_limited(headers: Mapping[str, str]) -> bool:
    """GitHub answers 403 (not 429) for its primary and secondary rate limits."""
    remaining = headers.get("X-RateLimit-Remaining") or headers.get("RateLimit-Remaining")
    return "Retry-After" in headers or remaining == "0"


def _asked_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Retry-After (seconds or HTTP date), else a rate-limit reset time (epoch seconds)."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        if retry_after.strip().isdigit():
            return float(retry_after.strip())
        try:
            when = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.replace(tzinfo=when.tzinfo or UTC).timestamp() - now)
    remaining = headers.get("X-RateLimit-Remaining") or headers.get("RateLimit-Remaining")
    reset = headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset")
    if remaining == "0" and reset and reset.strip().isdigit():
        return max(0.0, float(reset) - now) + 1.0
    return None


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def reporter_from_config(forges: Iterable[Any]) -> ForgeReporter:
    """A ForgeReporter for `[status] forges` entries (kind, api_url, repo, token_file)."""
    from gitopsd.config import read_secret

    return ForgeReporter(
        ForgeTarget(f.kind, f.api_url, f.repo, read_secret(f.token_file, "forge token"))
        for f in forges
    )


def outcome_statuses(outcome: CommitOutcome) -> list[tuple[str, State, str]]:
    """(function, forge state, description) for every function of a commit outcome; a
    commit refused as a whole (invalid manifests, bad signature) reports as `manifests`."""
    if not outcome.functions:
        state: State = (
            "success"
            if outcome.status == "success"
            else ("pending" if outcome.status == "pending" else "failure")
        )
        return [("manifests", state, outcome.message)]
    out: list[tuple[str, State, str]] = []
    for name, fn in sorted(outcome.functions.items()):
        fn_state: State = {"pending": "pending", "success": "success"}.get(  # type: ignore[assignment]
            fn.status, "failure"
        )
        out.append((name, fn_state, f"{fn.version} {fn.state}: {fn.message}"))
    return out
