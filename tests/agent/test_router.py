"""Routing between versions (pure)."""

from __future__ import annotations

import hashlib
import hmac
import random

from multidict import CIMultiDict

from gitopsd.agent.router import BUCKETS, Rule, Weight, pick, route, sticky_bucket

KEY = bytes(range(32))


def test_sticky_bucket_is_the_contract_formula() -> None:
    digest = hmac.new(KEY, b"image-processor:user-42", hashlib.sha256).digest()
    bucket = sticky_bucket("image-processor", "user-42", KEY)
    assert bucket == int.from_bytes(digest, "big") % 10_000


def test_without_the_key_buckets_cannot_be_aimed() -> None:
    # Issue 14, finding 5: the unkeyed sha256 of function and user told an outsider which
    # users a canary gets. With another key, users land in other buckets.
    users = [f"user-{i}" for i in range(1000)]
    keyed = [sticky_bucket("fn", u, KEY) for u in users]
    unkeyed = [int.from_bytes(hashlib.sha256(f"fn:{u}".encode()).digest()) % BUCKETS for u in users]
    other_key = [sticky_bucket("fn", u, bytes(32)) for u in users]
    assert sum(a == b for a, b in zip(keyed, unkeyed, strict=True)) < 10
    assert sum(a == b for a, b in zip(keyed, other_key, strict=True)) < 10
    assert keyed == [sticky_bucket("fn", u, KEY) for u in users]  # and stable with one key


def test_pick_walks_cumulative_weights_in_list_order() -> None:
    weights = [Weight("new", 10), Weight("old", 90)]
    assert pick(weights, 0) == "new"
    assert pick(weights, 999) == "new"
    assert pick(weights, 1000) == "old"
    assert pick(weights, BUCKETS - 1) == "old"
    assert pick([Weight("a", 0), Weight("b", 100)], 0) == "b"
    assert pick([Weight("a", 50)], 7000) is None


def test_float_weights_do_not_leave_gaps() -> None:
    weights = [Weight(str(i), 100 / 3) for i in range(3)]
    assert {pick(weights, b) for b in range(BUCKETS)} == {"0", "1", "2"}


def test_a_user_keeps_the_new_version_while_its_share_grows() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    on_new: set[str] = set()
    for percent in (10, 25, 50, 100):
        weights = [Weight("new", percent), Weight("old", 100 - percent)]
        now = {
            k for k in keys if route("fn", weights, [], "X-User-Id", {"X-User-Id": k}, KEY) == "new"
        }
        assert on_new <= now
        on_new = now
    assert on_new == set(keys)


def test_rules_come_first_and_headers_are_case_insensitive() -> None:
    weights = [Weight("a", 100)]
    rules = [Rule("X-Variant", "b", "b"), Rule("X-Variant", "c", "c")]
    headers = CIMultiDict({"x-variant": "c", "X-User-Id": "u"})
    assert route("fn", weights, rules, "X-User-Id", headers, KEY) == "c"
    assert route("fn", weights, rules, "X-User-Id", CIMultiDict({"X-Variant": "z"}), KEY) == "a"


def test_without_the_sticky_header_the_bucket_is_random() -> None:
    weights = [Weight("a", 30), Weight("b", 70)]
    rng = random.Random(7)
    picks = [route("fn", weights, [], "X-User-Id", {}, KEY, rng) for _ in range(4000)]
    assert 0.25 < picks.count("a") / len(picks) < 0.35
