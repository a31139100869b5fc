"""The held `GET /inventory?wait=` of fleet/watch.py over one kept-alive raw connection.

Each agent's held request is answered and sent again every watch period, so for a large
fleet this is the daemon's main idle cost. Through aiohttp's client a renewal cost ~350 µs
of CPU here (bench P3, 500 agents: ~180 ms per 30 s); on a kept-alive connection with
asyncio streams, isolated runs gave 80 to 110 ms per 30 s (the figure is noisy: much of it
is kernel loopback time that neither path avoids). Only what an agent sends is understood:
a status line, headers (parsed by httptools: http_answer.py), a body of `Content-Length`
bytes. Anything else (chunked encoding,
https, a body over the cap) is an error that ends the node's watch; the reconcile pass then
asks that agent through the full client, as it always can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gitopsd.fleet.http_answer import BadAnswer, parse_answer_head
from gitopsd.fleet.tokens import excerpt


class LongPollError(Exception):
    """The held request failed or was answered in a form this module does not read."""


@dataclass
class Answer:
    status: int
    etag: str | None
    body: Any  # parsed JSON, or None for a bodiless answer


class HeldConnection:
    """One connection to one agent, one held request at a time."""

    def __init__(self, base: str, authorization: str | None, max_bytes: int) -> None:
        """`authorization` is this node's own `Bearer <token>` header value (or None)."""
        url = urlsplit(base)
        if url.scheme != "http" or not url.hostname:
            raise LongPollError(f"held requests need an http:// address, not {base}")
        self.base = base
        self._host, self._port = url.hostname, url.port or 80
        self._path = url.path.rstrip("/") + "/inventory"
        self._head = f"Host: {url.netloc.rpartition('@')[2]}\r\n" + (
            f"Authorization: {authorization}\r\n" if authorization else ""
        )
        self._max = max_bytes
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, etag: str, seconds: float, grace: float) -> Answer:
        """`GET /inventory?wait=seconds` with `If-None-Match: etag`; the answer, or
        LongPollError. `grace` bounds the connect, and the wait beyond `seconds`."""
        try:
            async with asyncio.timeout(seconds + grace):  # no extra task, unlike wait_for
                return await self._get(etag, seconds, grace)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            # The message may quote what the other end sent: keep a short escaped excerpt.
            raise LongPollError(f"{exc.__class__.__name__} {excerpt(str(exc))}".strip()) from None
        except LongPollError:
            self.close()
            raise

    async def _get(self, etag: str, seconds: float, grace: float) -> Answer:
        if self._streams is not None and (
            self._streams[0].at_eof() or self._streams[1].is_closing()
        ):
            self.close()  # the agent closed it (a restart, an idle timeout): connect again
        if self._streams is None:
            async with asyncio.timeout(grace):
                self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        writer.write(
            (
                f"GET {self._path}?wait={seconds:g} HTTP/1.1\r\n{self._head}"
                f"If-None-Match: {etag}\r\n\r\n"
            ).encode("latin-1")
        )
        head = await reader.readuntil(b"\r\n\r\n")
        try:
            answer = parse_answer_head(head)
        except BadAnswer as exc:
            raise LongPollError(f"not an HTTP answer: {exc}") from None
        status, headers = answer.status, answer.headers
        if "transfer-encoding" in headers:
            raise LongPollError("chunked answers are not read here")
        length = int(headers.get("content-length", "0"))
        if length > self._max:
            raise LongPollError(f"answer refused, {length} bytes")
        raw = await reader.readexactly(length) if length else b""
        if status not in (200, 304) or not answer.keep_alive:
            self.close()  # an agent that answers otherwise may be on its way down
        body = json.loads(raw.decode("utf-8", errors="replace")) if raw else None
        return Answer(status, headers.get("etag"), body)

    def close(self) -> None:
        if self._streams is not None:
            with contextlib.suppress(Exception):
                self._streams[1].close()
            self._streams = None
