"""Traffic routing between the versions of one function (pure: no I/O, no clock).

A request picks a version (docs/agent-api.md "Routing"): the first header rule that
matches; else, when the sticky header is present, a bucket derived from the function name
and the header value, keyed with the function's bucket key; else a random bucket. A bucket
(0..9,999) is walked through the cumulative weights in list order, so a user in the first
p % stays on the first version as p grows: the controller lists the new version first.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Weight:
    """`percent` of the traffic (0..100) goes to `version`."""

    version: str
    percent: float


@dataclass(frozen=True, slots=True)
class Rule:
    """A request whose `header` equals `equals` goes to `version`, before any weight."""

    header: str
    equals: str
    version: str


def sticky_bucket(function: str, key: str, bucket_key: bytes) -> int:
    """Bucket of a sticky key: HMAC-SHA256(bucket_key, function + ":" + key), big-endian,
    mod 10,000.

    The controller hands every agent the same bucket key for one function, so one user
    lands on the same version everywhere; without the key nobody can tell which users a
    canary gets, so an outsider cannot aim requests at it.
    """
    message = f"{function}:{key}".encode("utf-8", "surrogateescape")
    digest = hmac.new(bucket_key, message, hashlib.sha256).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def pick(weights: Sequence[Weight], bucket: int) -> str | None:
    """The version whose cumulative weight range holds `bucket`; None if none does."""
    cumulative = 0.0
    for weight in weights:
        cumulative += weight.percent
        # Round the cumulative sum, not each step, so float noise never shifts a boundary.
        if bucket < round(cumulative * BUCKETS / 100):
            return weight.version
    return None


def route(
    function: str,
    weights: Sequence[Weight],
    rules: Sequence[Rule],
    sticky_header: str | None,
    headers: Mapping[str, str],
    bucket_key: bytes,
    rng: random.Random | None = None,
) -> str | None:
    """Pick the version serving a request with `headers` (a case-insensitive mapping);
    `bucket_key` is the function's (see `sticky_bucket`).

    Returns None when no weight covers the bucket (traffic not set).
    """
    for rule in rules:
        if headers.get(rule.header) == rule.equals:
            return rule.version
    key = headers.get(sticky_header) if sticky_header else None
    if key is None:
        return pick(weights, (rng or random).randrange(BUCKETS))
    return pick(weights, sticky_bucket(function, key, bucket_key))
