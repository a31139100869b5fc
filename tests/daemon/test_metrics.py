"""The daemon's Prometheus registry (prometheus_client): every series, histogram, label
values, HTTP; read back with prometheus_client's own parser."""

from __future__ import annotations

import math

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitopsd.daemon.metrics import CONTENT_TYPE, Metrics, serve_metrics

Sample = tuple[str, dict[str, str], float]


def parse(text: str) -> tuple[dict[str, str], dict[str, str], list[Sample]]:
    """HELP texts and TYPEs by family name, and every sample (the parser refuses text
    that is not valid exposition format)."""
    assert text.endswith("\n")
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        assert family.name not in types, f"second family {family.name}"
        helps[family.name] = family.documentation
        types[family.name] = family.type
        samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
    return helps, types, samples


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, ls, v in samples if n == name and ls == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_empty_registry_renders_every_family() -> None:
    helps, types, samples = parse(Metrics().render())
    assert types == {  # counters' families are named without `_total`, their samples with
        "gitopsd_reconcile": "counter",
        "gitopsd_reconcile_duration_seconds": "histogram",
        "gitopsd_last_reconcile_timestamp_seconds": "gauge",
        "gitopsd_last_applied_commit_info": "gauge",
        "gitopsd_rollouts": "gauge",
        "gitopsd_agent_request_errors": "counter",
        "gitopsd_webhook_deliveries": "counter",
    }
    assert set(helps) == set(types) and all(helps.values())
    assert value(samples, "gitopsd_reconcile_duration_seconds_count") == 0
    assert value(samples, "gitopsd_reconcile_duration_seconds_bucket", le="+Inf") == 0


def test_every_series() -> None:
    m = Metrics()
    m.observe_reconcile("ok", 0.2, now=1_700_000_000.5)
    m.observe_reconcile("ok", 1.5)
    m.observe_reconcile("error", 0.01, now=1_700_000_100)
    m.set_last_applied_commit("a" * 40)
    m.set_last_applied_commit("b" * 40)
    m.set_rollouts({"PROGRESSING": 2, "SUCCEEDED": 5})
    m.set_rollouts({"SUCCEEDED": 6, "ROLLED_BACK": 1})
    for _ in range(3):
        m.agent_request_error("edge-a")
    m.webhook_delivery("github", "accepted")
    m.webhook_delivery("gitlab", "bad_signature")
    _, _, s = parse(m.render())
    assert value(s, "gitopsd_reconcile_total", result="ok") == 2
    assert value(s, "gitopsd_reconcile_total", result="error") == 1
    assert value(s, "gitopsd_reconcile_duration_seconds_count") == 3
    assert math.isclose(value(s, "gitopsd_reconcile_duration_seconds_sum"), 1.71)
    assert value(s, "gitopsd_last_reconcile_timestamp_seconds") == 1_700_000_100
    assert [ls for n, ls, _ in s if n == "gitopsd_last_applied_commit_info"] == [
        {"commit": "b" * 40}
    ]
    assert value(s, "gitopsd_last_applied_commit_info", commit="b" * 40) == 1
    # A state seen before and gone now reads 0, not a stale 2.
    assert value(s, "gitopsd_rollouts", state="PROGRESSING") == 0
    assert value(s, "gitopsd_rollouts", state="SUCCEEDED") == 6
    assert value(s, "gitopsd_rollouts", state="ROLLED_BACK") == 1
    assert value(s, "gitopsd_agent_request_errors_total", node="edge-a") == 3
    assert value(s, "gitopsd_webhook_deliveries_total", forge="github", result="accepted") == 1
    assert value(s, "gitopsd_webhook_deliveries_total", forge="gitlab", result="bad_signature") == 1


def test_histogram_buckets_are_cumulative_and_inf_is_count() -> None:
    m = Metrics(buckets=(0.1, 1, 10))
    for d in (0.05, 0.1, 0.5, 2, 20, 30):
        m.observe_reconcile("ok", d)
    _, _, s = parse(m.render())
    buckets = [(ls["le"], v) for n, ls, v in s if n == "gitopsd_reconcile_duration_seconds_bucket"]
    assert [(float(le), n) for le, n in buckets] == [(0.1, 2), (1, 3), (10, 4), (math.inf, 6)]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    assert buckets[-1][1] == value(s, "gitopsd_reconcile_duration_seconds_count") == 6
    assert value(s, "gitopsd_reconcile_duration_seconds_sum") == pytest.approx(52.65)


@pytest.mark.parametrize(
    "raw", ['say "hi"', "back\\slash", "two\nlines", 'all \\ " \n three', "ünïcødé", ""]
)
def test_label_values_round_trip(raw: str) -> None:
    m = Metrics()
    m.agent_request_error(raw)
    _, _, s = parse(m.render())
    assert value(s, "gitopsd_agent_request_errors_total", node=raw) == 1


def test_wrong_labels_and_negative_counter_are_refused() -> None:
    m = Metrics()
    with pytest.raises(ValueError):
        m.reconcile_total.labels(node="x")
    with pytest.raises(ValueError):
        m.reconcile_total.labels(result="ok").inc(-1)


def test_leadership_keeps_every_other_series() -> None:
    m = Metrics()
    m.observe_reconcile("ok", 0.2)
    m.set_leadership(frozenset({0}), 2)
    _, types, s = parse(m.render())
    assert {"gitopsd_leader", "gitopsd_shard_leader", "gitopsd_reconcile"} <= set(types)
    assert value(s, "gitopsd_reconcile_total", result="ok") == 1


async def test_serve_metrics_over_http() -> None:
    m = Metrics()
    m.observe_reconcile("ok", 0.3)
    m.set_last_applied_commit("c0ffee")
    runner = await serve_metrics(m, "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == CONTENT_TYPE
                assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
                _, _, s = parse(await resp.text())
            assert value(s, "gitopsd_reconcile_total", result="ok") == 1
            assert value(s, "gitopsd_last_applied_commit_info", commit="c0ffee") == 1
            m.observe_reconcile("ok", 0.3)
            async with http.get(f"http://{host}:{port}/metrics") as resp:
                _, _, s = parse(await resp.text())
            assert value(s, "gitopsd_reconcile_total", result="ok") == 2
            async with http.get(f"http://{host}:{port}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://{host}:{port}/nope") as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()


async def test_serve_metrics_busy_port_raises() -> None:
    first = await serve_metrics(Metrics(), "127.0.0.1", 0)
    try:
        port = first.addresses[0][1]
        with pytest.raises(OSError):
            await serve_metrics(Metrics(), "127.0.0.1", port)
    finally:
        await first.cleanup()
