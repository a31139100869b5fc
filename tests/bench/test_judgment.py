"""The judgment benchmark (bench/judgment.py) on a tiny scale: the shape of its rows and
figures that must hold whatever the seed (no timing is asserted)."""

from __future__ import annotations

import json
import math

from bench import judgment
from bench.judgment import Scenario, rows, run_cells, simulate


def test_a_gross_regression_is_caught_by_both_judges() -> None:
    sixfold = Scenario("X", "+500% latency", latency_factor=6.0)
    for judge_name in ("today", "new"):
        cell = simulate(sixfold, 50, judge_name, rollouts=30, seed=1)
        assert cell.share >= 0.9, (judge_name, cell)


def test_the_new_judge_leaves_an_identical_version_alone() -> None:
    same = judgment.SCENARIOS[3]
    assert not same.regression
    cell = simulate(same, 50, "new", rollouts=40, seed=2)
    assert cell.share <= 0.1, cell
    # ... and decided on it (promoted) with requests counted on both sides.
    assert cell.decided_per_side and min(cell.decided_per_side) >= 200


def test_the_new_judge_catches_a_20_percent_slowdown_today_misses() -> None:
    slower = judgment.SCENARIOS[0]
    new = simulate(slower, 50, "new", rollouts=30, seed=3)
    today = simulate(slower, 50, "today", rollouts=30, seed=3)
    assert new.share >= 0.8, new
    assert today.share <= 0.5, today  # its 100 ms average limit is far above 24 ms


def test_rows_j1_to_j6_have_the_bench_shape() -> None:
    cells = run_cells(rollouts=4, seed=5, log=lambda _m: None)
    got = rows(cells)
    assert [r.id for r in got] == ["J1", "J2", "J3", "J4", "J5", "J6"]
    for row in got:
        data = json.loads(json.dumps(row.to_json()))
        assert data["measure"] and data["unit"] and data["target"]
        assert isinstance(data["median"], float) and math.isfinite(data["median"]), data
        assert data["samples"] and all(isinstance(s, float) for s in data["samples"])
        assert data["verdict"] in ("ok", "MISS")
    for row in got[:4]:
        cells_json = row.extra["cells"]
        assert {(c["judge"], c["rate_per_node"]) for c in cells_json} == {
            (j, r) for j in ("today", "new") for r in judgment.RATES
        }
        for c in cells_json:
            low, high = c["ci95"]
            assert 0 <= low <= c["share"] <= high <= 1 and c["rollouts"] == 4
    assert "| J1 +20% median latency | 50 |" in judgment.table(cells)
