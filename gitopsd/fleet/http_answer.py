"""The head of an agent's HTTP/1.1 answer, parsed by httptools (llhttp).

The daemon's raw connections to agents (longpoll.py's held request, probe.py's conditional
GET) read answers without aiohttp's client; their heads are parsed here, by the same parser
aiohttp's own is built on, never by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools


class BadAnswer(ValueError):
    """What the other end sent is not an HTTP/1.x answer head (llhttp says why)."""


@dataclass(frozen=True, slots=True)
class AnswerHead:
    """Status, headers (lower-case names, the last of repeated ones), and whether the
    connection may carry another request."""

    status: int
    headers: dict[str, str]
    keep_alive: bool


class _Reader:
    """httptools' callbacks for one answer head."""

    __slots__ = ("complete", "headers", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.complete = True
        assert self.parser is not None
        # Now: once a message is complete, llhttp's flags are those of the next one.
        self.keep_alive = self.parser.should_keep_alive()


def parse_answer_head(head: bytes) -> AnswerHead:
    """The answer head `head` (up to and including its blank line); BadAnswer otherwise."""
    reader = _Reader()
    parser = reader.parser = httptools.HttpResponseParser(reader)
    try:
        parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
        raise BadAnswer(f"{exc} in {head[:80]!r}") from None
    finally:
        reader.parser = None  # no reference cycle left behind
    if not reader.complete:
        raise BadAnswer(f"incomplete head {head[:80]!r}")
    return AnswerHead(parser.get_status_code(), reader.headers, reader.keep_alive)
