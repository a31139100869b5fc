"""What-if plans: every strategy driven with injected outcomes (failed health, breached
metric, unreachable node, inconclusive analysis) takes the path its failure handling says,
and the result names the nodes rolled back, what each ends up serving and the note; SPEC
phrases and files are read strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitopsd.rollout.preview import preview
from gitopsd.rollout.steps import Analyze, Compare, HealthCheck, NodeTarget, PlanContext, Strategy
from gitopsd.rollout.strategies import create_strategy
from gitopsd.rollout.whatif import (
    Injection,
    WhatIfError,
    check_nodes,
    load_what_if,
    parse_phrase,
    run_what_if,
)

NODES = tuple(
    NodeTarget(f"edge-{region}-{i}", region, "1.0.0", 512.0)
    for region in ("ap-south", "eu-central", "us-east")
    for i in (1, 2)
)
CTX = PlanContext("fn", "2.0.0", NODES)
ALL_OLD = {n.name: {"1.0.0": 100.0} for n in NODES}

STRATEGIES: dict[str, Strategy] = {
    "rolling": create_strategy("rolling", batchSize=2, batchDelay=0),
    "blue-green": create_strategy("blue-green"),
    "canary": create_strategy("canary", stages=[34, 100]),
    "regional": create_strategy("regional", abortOnRegionFailure=True),
    "ab-test": create_strategy("ab-test", variantBPercentage=50),
    "feature-flag": create_strategy("feature-flag", flagName="f", initialRollout=25),
}


def first_checked(strategy: Strategy, kind: type, stage: int = 1) -> str:
    """A node the healthy plan runs `kind` on in `stage` (stages end with a judgement)."""
    current = 1
    for step in preview(strategy, CTX):
        if isinstance(step, kind) and current == stage:
            nodes = step.b_nodes if isinstance(step, Compare) else step.nodes  # type: ignore[attr-defined]
            return str(nodes[0])
        if isinstance(step, Analyze | Compare):
            current += 1
    raise AssertionError(f"no {kind.__name__} in stage {stage}")


@pytest.mark.parametrize("name", STRATEGIES)
def test_healthy_what_if_is_the_preview(name: str) -> None:
    strategy = STRATEGIES[name]
    never = Injection("health", ("edge-us-east-2",), stage=99)
    result = run_what_if(strategy, CTX, [never])
    assert [s.step for s in result.steps] + [result.finish] == preview(strategy, CTX)
    assert str(result.finish.state) == "COMPLETED" and result.note_status == "success"
    assert result.used == frozenset() and result.rolled_back == ()


@pytest.mark.parametrize("name", STRATEGIES)
def test_failed_health_rolls_back_to_the_old_version(name: str) -> None:
    strategy = STRATEGIES[name]
    node = first_checked(strategy, HealthCheck)
    result = run_what_if(strategy, CTX, parse_phrase(f"fail health on {node} at stage 1"))
    assert str(result.finish.state) == "ROLLED_BACK", result.finish
    assert node in result.rolled_back
    assert result.serving == ALL_OLD  # every node back on 1.0.0 alone
    (hit,) = [s for s in result.steps if s.injected]
    assert isinstance(hit.step, HealthCheck) and hit.outcome.failed_nodes == (node,)
    assert result.note_status == "failure"


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_breached_metric_is_judged_a_failure(name: str) -> None:
    strategy = STRATEGIES[name]
    judged = Compare if name == "ab-test" else Analyze
    node = first_checked(strategy, judged)
    result = run_what_if(strategy, CTX, parse_phrase(f"breach p99_latency_ms on {node}"))
    assert str(result.finish.state) in ("ROLLED_BACK", "FAILED"), result.finish
    assert result.serving == ALL_OLD
    assert any(isinstance(s.step, judged) and s.injected for s in result.steps)


@pytest.mark.parametrize("name", STRATEGIES)
def test_an_unreachable_node_never_completes(name: str) -> None:
    strategy = STRATEGIES[name]
    result = run_what_if(strategy, CTX, parse_phrase("edge-ap-south-1 unreachable"))
    assert str(result.finish.state) != "COMPLETED"
    assert result.note_status == "failure"
    # A node nobody reached keeps what it ran: the rollout cannot have changed it.
    assert result.serving["edge-ap-south-1"] == {"1.0.0": 100.0}


@pytest.mark.parametrize("name", STRATEGIES)
def test_inconclusive_analysis_takes_the_strategys_own_path(name: str) -> None:
    strategy = STRATEGIES[name]
    result = run_what_if(strategy, CTX, parse_phrase("inconclusive analysis at stage 1"))
    (hit,) = [s for s in result.steps if s.injected]
    assert hit.outcome.verdict == "inconclusive" and hit.stage == 1
    # A/B: no winner keeps A; the others have no extension here and judge what they saw.
    expected = "ROLLED_BACK" if name == "ab-test" else "COMPLETED"
    assert str(result.finish.state) == expected, result.finish


def test_stage_two_of_a_canary_rolls_back_both_stages() -> None:
    canary = STRATEGIES["canary"]
    second = first_checked(canary, HealthCheck, stage=2)
    first = first_checked(canary, HealthCheck, stage=1)
    result = run_what_if(canary, CTX, parse_phrase(f"fail health on {second} at stage 2"))
    assert str(result.finish.state) == "ROLLED_BACK"
    assert {first, second} <= set(result.rolled_back)
    assert result.serving == ALL_OLD
    # The same fault named for stage 1 never happens: that node is not checked then.
    missed = run_what_if(canary, CTX, parse_phrase(f"fail health on {second} at stage 1"))
    assert str(missed.finish.state) == "COMPLETED" and missed.used == frozenset()


def test_a_regional_rollout_without_abort_finishes_the_other_regions() -> None:
    regional = create_strategy("regional", abortOnRegionFailure=False)
    result = run_what_if(regional, CTX, parse_phrase("fail health on edge-ap-south-1"))
    assert str(result.finish.state) == "FAILED" and "failed [ap-south]" in result.finish.message
    assert result.rolled_back == ("edge-ap-south-1", "edge-ap-south-2")
    assert {n: result.serving_text(n) for n in result.serving} == {
        "edge-ap-south-1": "1.0.0",
        "edge-ap-south-2": "1.0.0",
        "edge-eu-central-1": "2.0.0",
        "edge-eu-central-2": "2.0.0",
        "edge-us-east-1": "2.0.0",
        "edge-us-east-2": "2.0.0",
    }


def test_pause_on_failure_leaves_the_rest_on_the_new_version() -> None:
    rolling = create_strategy("rolling", batchSize=2, batchDelay=0, pauseOnFailure=True)
    result = run_what_if(rolling, CTX, parse_phrase("fail health on edge-eu-central-1"))
    assert str(result.finish.state) == "PAUSED"
    assert result.serving["edge-ap-south-1"] == {"2.0.0": 100.0}  # batch 1 stays updated
    assert result.serving["edge-eu-central-1"] == {"1.0.0": 100.0}
    assert result.serving["edge-us-east-1"] == {"1.0.0": 100.0}  # never reached


def test_phrases_and_files(tmp_path: Path) -> None:
    assert parse_phrase("fail health on edge-a, edge-b at stage 2; edge-c unreachable") == (
        Injection("health", ("edge-a", "edge-b"), 2),
        Injection("unreachable", ("edge-c",)),
    )
    assert parse_phrase("breach avg_latency_ms on edge-a and inconclusive analysis") == (
        Injection("metric", ("edge-a",), None, "avg_latency_ms"),
        Injection("inconclusive"),
    )
    spec = tmp_path / "what-if.yaml"
    spec.write_text(
        "outcomes:\n  - {fail: health, nodes: [edge-a], stage: 2}\n"
        "  - {fail: metric, metric: error_rate, nodes: [edge-b]}\n"
    )
    assert load_what_if(str(spec)) == (
        Injection("health", ("edge-a",), 2),
        Injection("metric", ("edge-b",), None, "error_rate"),
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("make it rain on edge-a", "cannot read 'make it rain on edge-a'"),
        ("breach joy on edge-a", "unknown metric 'joy'"),
        ("fail health on edge-a at stage 0", "stages count from 1"),
    ],
)
def test_bad_phrases_are_refused(spec: str, message: str) -> None:
    with pytest.raises(WhatIfError, match=message):
        load_what_if(spec)


def test_bad_files_and_unknown_nodes_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("outcomes:\n  - {fail: health, nodes: [edge-a], when: later}\n")
    with pytest.raises(WhatIfError, match=r"outcomes\.0\.when"):
        load_what_if(str(bad))
    with pytest.raises(WhatIfError, match="No such file"):
        load_what_if(str(tmp_path / "missing.yaml"))
    with pytest.raises(WhatIfError, match="no node edge-z in the manifests"):
        check_nodes(parse_phrase("edge-z unreachable"), ["edge-a"])


def test_a_plugin_strategy_under_what_if(tmp_path: Path) -> None:
    from tests.plugins.install import installed

    with installed("shadow", tmp_path / "site"):
        shadow = create_strategy("shadow", observeFor="PT0S")
        result = run_what_if(shadow, CTX, parse_phrase("breach error_rate on edge-us-east-2"))
    assert str(result.finish.state) == "ROLLED_BACK"
    assert result.finish.message == "shadow analysis failed"
    assert set(result.rolled_back) == {n.name for n in NODES}
    assert result.serving == ALL_OLD
