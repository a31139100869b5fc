"""Which shard a function belongs to: a stable hash of its name, the same in Python and in
PostgreSQL (`gitopsd_shard(name, n)` in migrations/pg/0002_leases.sql), so a process and the
database's fencing trigger always agree, whatever Python's hash seed."""

from __future__ import annotations

import hashlib


def shard_of(function: str, shards: int) -> int:
    """The shard (0 .. shards-1) of `function`: the first 32 bits of md5(name), modulo."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    digest = hashlib.md5(function.encode("utf-8"), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % shards
