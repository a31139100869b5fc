"""One `POST /fn/{fn}` request turned into its HTTP answer, independent of the HTTP server.

Both servers of the data plane use it: the agent's own HTTP/1.1 fast path
(`data_plane.py`) and the aiohttp application (`server.py`) for requests the fast path
hands over, so either answers a call the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gitopsd.agent import wagi
from gitopsd.agent.errors import AgentRequestError
from gitopsd.agent.runtime import Outcome
from gitopsd.agent.service import AgentService

VERSION_HEADER = "X-Gitopsd-Version"
JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """Status, content type, the serving version (None if none was picked) and body."""

    status: int
    content_type: str
    version: str | None
    body: bytes


def error_answer(status: int, message: str, version: str | None = None) -> Answer:
    """The contract's `{"error": ...}` answer."""
    return Answer(status, JSON_TYPE, version, json.dumps({"error": message}).encode())


async def answer_call(
    service: AgentService,
    function: str,
    *,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    lookup: Mapping[str, str],
    body: bytes,
) -> Answer:
    """Route the request to a version, run its handler, and say what to answer.

    `headers` go to the module's environment in request order; `lookup` is the same
    headers as a case-insensitive mapping, for routing.
    """
    try:
        version = service.route(function, lookup)
    except AgentRequestError as exc:
        return error_answer(exc.status, str(exc))
    call = await service.invoke(
        function, version, method="POST", path=path, query=query, headers=headers, body=body
    )
    name = version.name
    result = call.result
    if result.outcome is Outcome.TIMEOUT:
        return error_answer(504, f"{function} {name}: {result.error}", name)
    if not result.ok:
        return error_answer(500, f"{function} {name}: {result.error}", name)
    try:
        response = wagi.parse_output(result.stdout)
    except wagi.BadResponse as exc:
        return error_answer(500, f"{function} {name}: {exc}", name)
    return Answer(response.status, response.content_type, name, response.body)
