"""The WAGI-style module ABI: request metadata in, CGI-style response out (pure).

In: the environment of docs/agent-api.md "Module ABI". Out: stdout, optionally starting
with a CGI header block (`content-type:` / `status:` lines ended by an empty line).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_HEADER_LINE = re.compile(rb"^(content-type|status)[ \t]*:[ \t]*(.*?)[ \t]*$", re.IGNORECASE)
_BLANK = re.compile(rb"\r?\n\r?\n")
# Control characters (tab allowed) would corrupt the answer's header block.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# HTTP answers that never carry a body (RFC 9110 6.4.1): whatever the module wrote after
# the header block is dropped, or the client would read it as the start of the next answer.
NO_BODY_STATUSES = frozenset({204, 304})


def environment(
    *,
    function: str,
    version: str,
    method: str,
    path: str,
    query: str,
    body_length: int,
    headers: Iterable[tuple[str, str]],
) -> list[tuple[str, str]]:
    """Environment variables of one request."""
    env = [
        ("REQUEST_METHOD", method),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("CONTENT_LENGTH", str(body_length)),
        ("X_GITOPSD_FUNCTION", function),
        ("X_GITOPSD_VERSION", version),
    ]
    env.extend(("HTTP_" + name.upper().replace("-", "_"), value) for name, value in headers)
    return env


@dataclass(frozen=True, slots=True)
class Response:
    """What the module's stdout says to answer."""

    status: int
    content_type: str
    body: bytes


class BadResponse(ValueError):
    """The module wrote a CGI header block the agent cannot answer with (a status that is
    not a final HTTP status, a content type that would corrupt the answer's headers)."""


def parse_output(stdout: bytes) -> Response:
    """Split an optional CGI header block off stdout.

    Only a block made entirely of `content-type` / `status` lines counts as headers, so a
    body that merely contains a colon on its first line is never eaten.
    """
    status, content_type = 200, DEFAULT_CONTENT_TYPE
    if not _HEADER_LINE.match(stdout.split(b"\n", 1)[0].rstrip(b"\r")):
        return Response(status, content_type, stdout)
    end = _BLANK.search(stdout)
    if end is None:
        return Response(status, content_type, stdout)
    fields = []
    for line in stdout[: end.start()].splitlines():
        match = _HEADER_LINE.match(line)
        if match is None:
            return Response(status, content_type, stdout)
        fields.append((match.group(1).lower(), match.group(2).decode("latin-1")))
    for name, value in fields:
        if name == b"content-type":
            if _CONTROL.search(value):
                raise BadResponse(f"module wrote a content-type with control characters {value!r}")
            content_type = value
        else:
            status = _final_status(value)
    body = b"" if status in NO_BODY_STATUSES else stdout[end.end() :]
    return Response(status, content_type, body)


def _final_status(value: str) -> int:
    """The code of a CGI `status:` value. 1xx codes are refused too: they are interim
    answers (101 would switch protocols), and a call has exactly one, final, answer."""
    code = value.split(" ", 1)[0]
    if not code.isdigit() or not 200 <= int(code) <= 599:
        raise BadResponse(
            f"module wrote an invalid CGI status line {value!r} (a status from 200 to 599)"
        )
    return int(code)
