"""The concurrent-baseline judge (gitopsd.rollout.judge) on hand-made figures, the canary's
extension of an inconclusive analysis, and the journal forms the executor relies on."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from gitopsd.manifest.strategy_options import CanaryOptions
from gitopsd.rollout import judge
from gitopsd.rollout.analysis import VersionFigures
from gitopsd.rollout.executor import _snapshot_figures, _snapshots_from
from gitopsd.rollout.spec import RolloutSpec, TargetNode
from gitopsd.rollout.stats import mixture_likelihood_ratio, wilson_interval
from gitopsd.rollout.steps import (
    Analyze,
    Finish,
    PlanContext,
    RolloutState,
    SetTraffic,
    StepOutcome,
    Wait,
)
from gitopsd.rollout.strategies.canary import CanaryStrategy
from tests.rollout.conftest import build_ctx

BOUNDS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, math.inf)
SETTINGS = judge.JudgeSettings()


def figures(bins: list[int], errors: int = 0) -> VersionFigures:
    """A version's figures from per-bucket (not cumulative) counts over BOUNDS."""
    running, buckets = 0, []
    for bound, count in zip(BOUNDS, bins, strict=True):
        running += count
        buckets.append((bound, running))
    return VersionFigures(
        requests=running,
        errors=errors,
        latency_sum_ms=float(running),
        latency_count=running,
        buckets=tuple(buckets),
    )


FAST = [0, 100, 700, 190, 10, 0, 0]  # most calls 5-10 ms
SLOW = [0, 0, 100, 700, 190, 10, 0]  # the same shape one bucket up (a slow node)


def look(new, old, *, triggers=(), extension_left=0.0, settings=SETTINGS) -> StepOutcome:
    return judge.look(
        new,
        old,
        {},
        triggers,
        settings,
        new_since=new,
        old_since=old,
        extension_left=extension_left,
    )


def test_a_slow_node_slow_for_both_versions_is_no_regression() -> None:
    # Node a is slow for everyone, b fast: each version is compared on its own node only.
    new = {"a": figures(SLOW), "b": figures(FAST)}
    old = {"a": figures(SLOW), "b": figures(FAST)}
    outcome = look(new, old)
    assert outcome.ok and outcome.verdict == "pass", outcome
    assert outcome.figures["new_requests"] == 2000 and outcome.figures["old_requests"] == 2000
    assert "no regression" in outcome.message


def test_the_new_version_slower_on_its_nodes_fails_with_the_figures() -> None:
    new = {"a": figures(SLOW)}
    old = {"a": figures(FAST)}
    outcome = look(new, old)
    assert not outcome.ok and outcome.verdict == "fail"
    assert "latency ranks" in outcome.message and "always-valid p=" in outcome.message
    assert outcome.figures["rank_p_slower"] > 0.5
    assert outcome.figures["rank_p"] < SETTINGS.alpha / judge.TESTS
    assert "1000 new / 1000 old requests" in outcome.message


def test_a_slow_tail_is_caught_by_the_tail_test() -> None:
    old = {"a": figures([0, 100, 700, 190, 10, 0, 0])}
    new = {"a": figures([0, 95, 665, 180, 10, 0, 50])}  # 5% of calls past 100 ms
    outcome = look(new, old)
    assert outcome.verdict == "fail"
    assert "latency tail" in outcome.message or "latency ranks" in outcome.message
    assert outcome.figures["tail_new_pct"] > outcome.figures["tail_old_pct"]
    assert outcome.figures["tail_bound_ms"] == 25.0 and "tail_p" in outcome.figures


def test_more_errors_than_the_old_version_fail_the_error_test() -> None:
    new = {"a": figures(FAST, errors=40)}
    old = {"a": figures(FAST, errors=10)}
    outcome = look(new, old)
    assert outcome.verdict == "fail" and "error rate" in outcome.message
    assert outcome.figures["error_new_pct"] == 4.0 and outcome.figures["error_old_pct"] == 1.0


def test_too_few_requests_ask_for_an_extension_until_none_is_left() -> None:
    new = {"a": figures([0, 5, 30, 10, 5, 0, 0])}
    old = {"a": figures([0, 5, 30, 10, 5, 0, 0])}
    waiting = look(new, old, extension_left=1800.0)
    assert waiting.ok and waiting.verdict == "inconclusive"
    assert waiting.figures["extend_s"] == SETTINGS.extension_step == 180.0
    assert "fewer than 200 requests per side" in waiting.message
    short = look(new, old, extension_left=20.0)
    assert short.figures["extend_s"] == 20.0
    final = look(new, old, extension_left=0.0)
    assert final.ok and final.verdict == "inconclusive" and "extend_s" not in final.figures
    assert "no extension left" in final.message


def test_rate_limits_need_evidence_not_one_unlucky_call() -> None:
    triggers = (("error_rate", 5.0),)
    one_in_ten = look(
        {"a": figures([0, 10, 0, 0, 0, 0, 0], errors=1)},
        {},
        triggers=triggers,
        extension_left=600.0,
    )
    assert one_in_ten.verdict == "inconclusive" and one_in_ten.ok
    assert "error_rate over the limit on fewer than 200 requests" in one_in_ten.message
    # A look that cannot wait longer judges the figures as they are, as the thresholds do.
    last = look({"a": figures([0, 10, 0, 0, 0, 0, 0], errors=1)}, {}, triggers=triggers)
    assert last.verdict == "fail" and "error_rate 10.0% > 5%" in last.message
    all_ten = look(
        {"a": figures([0, 10, 0, 0, 0, 0, 0], errors=10)},
        {},
        triggers=triggers,
        extension_left=600.0,
    )
    assert all_ten.verdict == "fail" and "hard limit: error_rate 100.0% > 5%" in all_ten.message
    # With enough requests the limit is the plain threshold again.
    many = look({"a": figures([0, 300, 0, 0, 0, 0, 0], errors=18)}, {}, triggers=triggers)
    assert many.verdict == "fail" and "error_rate 6.0% > 5%" in many.message


def test_thresholds_judge_is_the_old_per_node_judge() -> None:
    triggers = (("error_rate", 5.0),)
    outcome = look(
        {"a": figures([0, 10, 0, 0, 0, 0, 0], errors=1)},
        {},
        triggers=triggers,
        settings=judge.THRESHOLDS_ONLY,
    )
    assert outcome.verdict == "fail" and outcome.failed_nodes == ("a",)


def test_since_subtracts_the_snapshot_and_survives_an_agent_restart() -> None:
    before = figures([0, 10, 10, 0, 0, 0, 0], errors=2)
    now = figures([0, 15, 30, 5, 0, 0, 0], errors=3)
    delta = judge.since(now, before)
    assert (delta.requests, delta.errors) == (30, 1)
    assert delta.buckets[-1] == (math.inf, 30) and delta.buckets[1] == (5.0, 5)
    restarted = figures([0, 3, 0, 0, 0, 0, 0])
    assert judge.since(restarted, before) is restarted


def test_snapshots_round_trip_through_the_journal_figures() -> None:
    raw = {
        "n1": {
            "1.0.0": {
                "requests": 7,
                "errors": 1,
                "latencyMs": {"buckets": {"1": 2, "5": 6, "+Inf": 7}, "sum": 20.5, "count": 7},
            },
            "2.0.0": {"requests": "lots"},  # unreadable: left out, not a crash
        }
    }
    back = _snapshots_from(_snapshot_figures(raw))
    got = back["n1"]["1.0.0"]
    assert (got.requests, got.errors, got.latency_count) == (7, 1, 7)
    assert got.buckets == ((1.0, 2), (5.0, 6), (math.inf, 7))
    assert "2.0.0" not in back["n1"]


def test_the_extension_tally_counts_only_waits_an_analysis_offered() -> None:
    tally = judge.ExtensionTally()
    tally.note(Wait(300.0, "evaluation"), StepOutcome(ok=True))
    offered = StepOutcome(ok=True, verdict="inconclusive", figures={"extend_s": 180.0})
    tally.note(Analyze(("a",)), offered)
    tally.note(Wait(180.0, "more evidence"), StepOutcome(ok=True))
    tally.note(Analyze(("a",)), StepOutcome(ok=True, verdict="pass"))
    tally.note(Wait(300.0, "evaluation"), StepOutcome(ok=True))
    assert tally.spent == 180.0
    assert tally.left(SETTINGS) == 1620.0


def test_the_sequential_test_stays_below_alpha_over_many_looks() -> None:
    # Under no difference, the z-statistic of a growing sample is a scaled random walk;
    # the mixture ratio must reach 1/alpha in at most ~alpha of the runs, over 50 looks.
    rng = random.Random(7)
    alpha, runs, crossed = 0.05, 400, 0
    for _ in range(runs):
        total = 0.0
        for n in range(1, 51):
            total += rng.gauss(0, 1)
            z = total / math.sqrt(n)
            if mixture_likelihood_ratio(z, n * 40 / judge.MIXTURE_SCALE) >= 1 / alpha:
                crossed += 1
                break
    assert crossed / runs <= alpha
    # The naive alternative, a 5% test at every look, is far above alpha on the same walks.
    rng = random.Random(7)
    naive = 0
    for _ in range(runs):
        total = 0.0
        for n in range(1, 51):
            total += rng.gauss(0, 1)
            if abs(total / math.sqrt(n)) > 1.96:
                naive += 1
                break
    assert naive / runs > 2 * alpha


def test_wilson_interval() -> None:
    low, high = wilson_interval(1, 10, 0.99)
    assert 0 < low < 0.05 < 0.1 < high < 0.6
    assert wilson_interval(0, 0) == (0.0, 1.0)


def _canary_answers(ctx: PlanContext, answers: list[StepOutcome]) -> list[object]:
    """Run the canary plan, answering Analyze steps from `answers` in order, others ok."""
    plan = CanaryStrategy(
        CanaryOptions.model_validate({"stages": [50, 100], "trafficWeights": [50, 100]})
    ).plan(ctx)
    steps: list[object] = []
    step = next(plan)
    while True:
        steps.append(step)
        if isinstance(step, Finish):
            return steps
        if isinstance(step, Analyze):
            outcome = answers.pop(0) if answers else StepOutcome(ok=True, verdict="pass")
        else:
            outcome = StepOutcome.all_ok(getattr(step, "nodes", ()))
        step = plan.send(outcome)


def test_canary_extends_an_inconclusive_stage_as_waits_then_judges_again() -> None:
    more = StepOutcome(ok=True, verdict="inconclusive", figures={"extend_s": 120.0})
    fail = StepOutcome(ok=False, verdict="fail", message="concurrent baseline: worse")
    steps = _canary_answers(build_ctx(2), [more, more, fail])
    first = steps.index(SetTraffic(("n1",), 50.0))
    assert steps[first + 1 : first + 7] == [
        Wait(300.0, "evaluation of stage 1 (50%)"),
        Analyze(("n1",)),
        Wait(120.0, "more evidence for stage 1 (50%)"),
        Analyze(("n1",)),
        Wait(120.0, "more evidence for stage 1 (50%)"),
        Analyze(("n1",)),
    ]
    assert isinstance(steps[-1], Finish) and steps[-1].state is RolloutState.ROLLED_BACK
    assert "concurrent baseline: worse" in steps[-1].message


def test_canary_passes_an_inconclusive_stage_without_an_offer() -> None:
    final = StepOutcome(ok=True, verdict="inconclusive", message="no extension left")
    steps = _canary_answers(build_ctx(2), [final])
    assert sum(isinstance(s, Analyze) for s in steps) == 2
    assert steps[-1].state is RolloutState.COMPLETED


def test_spec_keeps_its_judge_and_old_rollouts_keep_theirs() -> None:
    spec = RolloutSpec(
        "fn",
        "2.0.0",
        "c" * 40,
        "d" * 64,
        {"type": "canary"},
        (TargetNode("n1", "r", "u"),),
        analysis=judge.JudgeSettings(confidence=0.995, minimum_samples=50, max_extension=60.0),
    )
    data = spec.to_json()
    assert RolloutSpec.from_json(data).analysis == spec.analysis
    del data["analysis"]  # a rollout journaled before autoRollback.analysis existed
    assert RolloutSpec.from_json(data).analysis == judge.THRESHOLDS_ONLY


def test_an_error_burst_on_the_node_is_not_the_new_versions_fault() -> None:
    triggers = (("error_rate", 5.0),)
    # The node failed 7% of everyone's calls: over the limit, but the old version beside
    # the new one failed as many.
    burst = look(
        {"a": figures(FAST, errors=70)}, {"a": figures(FAST, errors=68)}, triggers=triggers
    )
    assert burst.verdict == "pass", burst
    # The same 7% against an old version at 1% is the new version's doing.
    own = look({"a": figures(FAST, errors=70)}, {"a": figures(FAST, errors=10)}, triggers=triggers)
    assert own.verdict == "fail" and "hard limit: error_rate 7.0% > 5%" in own.message


def test_exact_latencies_are_ranked_while_the_rings_hold_every_call() -> None:
    old_values = tuple(4.0 + (i % 10) / 100 for i in range(300))  # 4.00-4.09 ms
    new_values = tuple(v * 1.2 for v in old_values)  # 20% slower: all in the same bucket
    new = {"a": replace(figures([0, 300, 0, 0, 0, 0, 0]), samples=new_values)}
    old = {"a": replace(figures([0, 300, 0, 0, 0, 0, 0]), samples=old_values)}
    outcome = look(new, old)
    assert outcome.verdict == "fail" and outcome.figures["rank_exact_nodes"] == 1.0
    # Without the samples the histograms cannot tell the two apart.
    blind = look({"a": figures([0, 300, 0, 0, 0, 0, 0])}, {"a": figures([0, 300, 0, 0, 0, 0, 0])})
    assert blind.verdict == "pass"


def test_since_keeps_only_the_samples_of_calls_after_the_snapshot() -> None:
    before = replace(figures([0, 3, 0, 0, 0, 0, 0]), samples=(9.0, 9.0, 9.0))
    now = replace(figures([0, 5, 0, 0, 0, 0, 0]), samples=(9.0, 9.0, 9.0, 1.0, 2.0))
    delta = judge.since(now, before)
    assert delta.samples == (1.0, 2.0) and judge.complete(delta)


def test_a_completed_canary_says_how_it_was_judged() -> None:
    verdict = StepOutcome(
        ok=True,
        verdict="pass",
        message="concurrent baseline: no regression at confidence 0.99 (300 new / 310 old)",
        figures={"old_requests": 310.0},
    )
    steps = _canary_answers(build_ctx(2), [verdict])
    assert steps[-1].state is RolloutState.COMPLETED
    assert steps[-1].message.endswith(
        "; judged: concurrent baseline: no regression at confidence 0.99 (300 new / 310 old)"
    )


def test_a_node_with_impossible_counts_is_left_out_of_the_comparison() -> None:
    liar = replace(figures(FAST), errors=-5)
    outcome = look({"a": figures(SLOW), "b": figures(FAST)}, {"a": liar, "b": figures(FAST)})
    # Node a's old version cannot be believed: only node b (no difference) is compared.
    assert outcome.verdict == "pass" and outcome.figures["old_requests"] == 1000
    assert not judge.consistent(replace(figures(FAST), buckets=((1.0, 5), (5.0, 3))))


def test_a_restarted_executor_rebuilds_the_judges_bookkeeping_from_the_journal() -> None:
    from typing import Any, cast

    from gitopsd.rollout.executor import StepExecutor

    spec = RolloutSpec(
        "fn",
        "2.0.0",
        "c" * 40,
        "d" * 64,
        {"type": "canary"},
        (TargetNode("n1", "r", "u", old_version="1.0.0"), TargetNode("n2", "r", "u2")),
    )
    # The client and store are not touched by remember(): it only reads outcomes.
    executor = StepExecutor(spec, cast(Any, None), cast(Any, None), lambda: 0.0)
    snapshot = _snapshot_figures(
        {"n1": {"1.0.0": {"requests": 40, "latencyMs": {"buckets": {"+Inf": 40}, "count": 40}}}}
    )
    traffic = StepOutcome.all_ok(("n1",))
    executor.remember(SetTraffic(("n1",), 50.0), replace(traffic, figures=snapshot))
    offered = StepOutcome(ok=True, verdict="inconclusive", figures={"extend_s": 180.0})
    executor.remember(Analyze(("n1",)), offered)
    executor.remember(Wait(180.0, "more evidence for stage 1 (50%)"), StepOutcome(ok=True))
    assert executor.since["n1"]["1.0.0"].requests == 40
    assert executor.new_percent == {"n1": 50.0}
    assert executor.extensions.spent == 180.0
