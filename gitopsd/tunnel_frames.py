"""The frames of the dial-out tunnel, shared by the controller (fleet/tunnel.py) and the agent
(agent/dialout.py); neither side imports the other.

A dial-out agent opens one WebSocket to the controller (`GET /agents/connect`). Every frame
is one binary WebSocket message:

    4 bytes   big-endian length H of the header
    H bytes   the header: a JSON object (UTF-8)
    the rest  the body (raw bytes, possibly empty)

Headers, by `t`:

    {"t": "hello", "state": "serving" | "waiting"}        controller -> agent, after upgrade
    {"t": "req", "id": N, "method": M, "path": P, "headers": {...}}   controller -> agent
    {"t": "res", "id": N, "status": S, "headers": {...}}   agent -> controller
    {"t": "cancel", "id": N}                               controller -> agent

A request is the agent's own HTTP API (docs/agent-api.md) with its `Authorization` header;
the answer carries the agent's status, headers and body. Anything else (a text message, a
frame over MAX_FRAME_BYTES, a header that is not one of these shapes) is garbage: the side
that receives it closes the connection.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# A module upload is at most 8 MiB (AgentSettings.max_module_bytes) and an answer at most
# 8 MiB (fleet/client.py MAX_ANSWER_BYTES): the frame cap leaves room for the header.
MAX_FRAME_BYTES = 8 * 1024 * 1024 + 64 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 64
MAX_ID = 2**53

# Never relayed: hop-by-hop and framing headers (meaningful on one HTTP connection only).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        # aiohttp's client decodes a compressed body as it reads it: the header would lie.
        "content-encoding",
    }
)

_LEN = struct.Struct(">I")


class FrameError(ValueError):
    """A frame that is not one of the tunnel's shapes: close the connection."""


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A header name is an RFC 9110 token; a value holds no CR, LF or NUL (no header injection).
HeaderName = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
]
HeaderValue = Annotated[str, Field(max_length=8192, pattern=r"^[^\r\n\x00]*$")]
Headers = Annotated[dict[HeaderName, HeaderValue], Field(max_length=MAX_HEADERS)]


class Hello(_Frame):
    """The controller's word on the connection: serving, or waiting (unknown to Git)."""

    t: Literal["hello"]
    state: Literal["serving", "waiting"]


class Request(_Frame):
    """One HTTP request of the agent API, sent by the controller."""

    t: Literal["req"]
    id: Annotated[int, Field(ge=1, le=MAX_ID)]
    method: Literal["GET", "HEAD", "PUT", "POST", "DELETE"]
    path: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^/[\x21-\x7e]*$")]
    headers: Headers = Field(default_factory=dict)


class Response(_Frame):
    """The agent's answer to request `id`."""

    t: Literal["res"]
    id: Annotated[int, Field(ge=1, le=MAX_ID)]
    status: Annotated[int, Field(ge=100, le=599)]
    headers: Headers = Field(default_factory=dict)


class Cancel(_Frame):
    """The controller no longer waits for request `id` (its caller went away)."""

    t: Literal["cancel"]
    id: Annotated[int, Field(ge=1, le=MAX_ID)]


Header = Annotated[Hello | Request | Response | Cancel, Field(discriminator="t")]
_HEADER: TypeAdapter[Hello | Request | Response | Cancel] = TypeAdapter(Header)


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its header and its body."""

    header: Hello | Request | Response | Cancel
    body: bytes = b""


def encode(header: Hello | Request | Response | Cancel, body: bytes = b"") -> bytes:
    """The bytes of one binary WebSocket message; FrameError when it would exceed the cap."""
    raw = json.dumps(header.model_dump(), separators=(",", ":")).encode()
    size = _LEN.size + len(raw) + len(body)
    if len(raw) > MAX_HEADER_BYTES or size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes exceeds the cap of {MAX_FRAME_BYTES}")
    return _LEN.pack(len(raw)) + raw + body


def decode(data: bytes) -> Frame:
    """The frame in `data`; FrameError (with a short reason, never the bytes) otherwise."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(data)} bytes exceeds the cap of {MAX_FRAME_BYTES}")
    if len(data) < _LEN.size:
        raise FrameError("frame shorter than its length prefix")
    (length,) = _LEN.unpack_from(data)
    if length > MAX_HEADER_BYTES or _LEN.size + length > len(data):
        raise FrameError(f"header length {length} does not fit the frame")
    raw = data[_LEN.size : _LEN.size + length]
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FrameError("header is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise FrameError("header is not a JSON object")
    try:
        header = _HEADER.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FrameError(f"invalid header at {where or 'top'}: {first['msg']}") from None
    body = bytes(data[_LEN.size + length :])
    if body and not isinstance(header, Request | Response):
        raise FrameError(f"a {header.t} frame carries no body")
    return Frame(header, body)


def relayed_headers(headers: object) -> dict[str, str]:
    """The end-to-end headers of `headers` (a multidict or mapping), at most MAX_HEADERS;
    a repeated name keeps its first value."""
    out: dict[str, str] = {}
    items = headers.items() if hasattr(headers, "items") else ()
    for name, value in items:
        key = str(name)
        if key.lower() in HOP_BY_HOP or key in out or len(out) >= MAX_HEADERS:
            continue
        if len(key) <= 256 and len(str(value)) <= 8192:
            out[key] = str(value)
    return out
