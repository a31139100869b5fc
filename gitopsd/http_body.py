"""Reading the body of a peer's HTTP answer within a cap, for the controller and the agent.

`StreamReader.read(n)` returns what is buffered (at least one byte), not n bytes: a single
call reads only the first chunk of a body sent in several writes, which cut a 200 KB
inventory in half. `read_capped` reads to the end of the body or to one byte past the cap.
"""

from __future__ import annotations

import aiohttp


async def read_capped(content: aiohttp.StreamReader, cap: int) -> bytes:
    """The body up to its end, or its first `cap + 1` bytes when it is longer than `cap`
    (so the caller can tell "too long" from "exactly cap")."""
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = await content.read(cap + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
