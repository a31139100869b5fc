"""gitopsd_leader and gitopsd_shard_leader{shard}: present once leadership is reported (a
PostgreSQL controller), absent on a SQLite one; parsed with prometheus_client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gitopsd.daemon.metrics import Metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_leadership_series_follow_the_shards_led() -> None:
    metrics = Metrics()
    assert "gitopsd_leader" not in metrics.render()
    metrics.set_leadership(frozenset({1}), 3)
    got = samples(metrics.render())
    assert got[("gitopsd_leader", ())] == 1
    assert [got[("gitopsd_shard_leader", (("shard", str(s)),))] for s in range(3)] == [0, 1, 0]
    metrics.set_leadership(frozenset(), 3)
    got = samples(metrics.render())
    assert got[("gitopsd_leader", ())] == 0
    assert [got[("gitopsd_shard_leader", (("shard", str(s)),))] for s in range(3)] == [0, 0, 0]
