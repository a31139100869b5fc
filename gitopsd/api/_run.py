"""Running the async internals from the synchronous API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def ensure_no_loop(what: str) -> None:
    """Raise RuntimeError when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{what} is synchronous and cannot be called from a running event loop: "
        "call it from a worker thread (asyncio.to_thread) or use the async internals"
    )


def run_blocking(what: str, start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run(start())`, refused (RuntimeError) from inside a running event loop.

    `start` is called only once we know it can run, so a refusal leaves behind no coroutine
    that was never awaited.
    """
    ensure_no_loop(what)
    return asyncio.run(start())
