"""J1-J6: how often the rollout judge is right, measured over simulated traffic.

Each simulated rollout runs the real canary plan generator (`CanaryStrategy.plan`) and the
real judge (`gitopsd.rollout.judge.look`, what the executor's Analyze step calls) on an
injected clock; only the agents are simulated. They report what real agents report: per
version counters and a cumulative latency histogram on the agent's bucket bounds, counted
since the new version got traffic on the node (what the executor's snapshots give).

Fleet and plan: 4 nodes, canary stages 25/50/100 % with trafficWeights 50/50/100 (a canary
node serves both versions), evaluationPeriod PT30S, triggers `error_rate 5` and
`avg_latency_ms 100` (issue 18's example), autoRollback.analysis defaults (confidence 0.99,
minimumSamples 200, maxExtension PT30M).

Traffic per node and version, in 10 s ticks: Poisson arrivals at 5, 50 or 500 requests/s
per node (split by the traffic weights); latency log-normal, median 20 ms (sigma 0.5), with
a heavy tail (2 % of calls: median 80 ms, sigma 0.8); node n0 (a canary node) is 30 % slower
for every version; each rollout has a noisy-neighbour period (one random node 2x slower for
30 s) and an error burst (one random node +10 points of errors for 10 s); 1 % errors.

Scenarios: J1 the new version 20 % slower (median), J2 +2 points of errors, J3 5 % of its
calls 10x slower (a p99 regression), J4 identical (A/A): J1-J3 report detection (rolled
back), J4 false rollbacks. J5: requests per side when the judge decided (J1-J3 rollbacks
and J4 promotions, 50 req/s). J6: J4 at 5 req/s (must wait, never roll back).

While a version has served at most 1,000 calls on a node (the agent's ring of latency
samples still holds them all), every call is drawn and its exact latency reported, as the
agent does. Past that, counts in a tick are drawn from their distributions' normal/Poisson
approximations, and the ring (only the old judge's latency veto reads it then) is drawn only
when a latency trigger is over its threshold, from the latest tick's distribution.
"""

from __future__ import annotations

import math
import random
import statistics
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import Context, Row
from gitopsd.manifest.strategy_options import CanaryOptions
from gitopsd.rollout import judge
from gitopsd.rollout.analysis import LATENCY_METRICS, VersionFigures
from gitopsd.rollout.stats import wilson_interval
from gitopsd.rollout.steps import (
    Analyze,
    Finish,
    NodeTarget,
    PlanContext,
    Rollback,
    RolloutState,
    SetTraffic,
    StepOutcome,
    Wait,
)
from gitopsd.rollout.strategies.canary import CanaryStrategy

BOUNDS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0)  # the agent's LATENCY_BUCKETS_MS
NODES = ("n0", "n1", "n2", "n3")
SLOW_NODE, SLOW_FACTOR = "n0", 1.3
TICK = 10.0
RATES = (5, 50, 500)
TRIGGERS = (("error_rate", 5.0), ("avg_latency_ms", 100.0))
RING = 1000  # the agent's SAMPLES
BASE_ERROR = 0.01
MEDIAN_MS, SIGMA = 20.0, 0.5
TAIL_SHARE, TAIL_MEDIAN_MS, TAIL_SIGMA = 0.02, 80.0, 0.8
NOISY_FACTOR, NOISY_SECONDS = 2.0, 30.0
BURST_POINTS, BURST_SECONDS = 0.10, 10.0
OPTIONS = CanaryOptions.model_validate(
    {
        "type": "canary",
        "stages": [25, 50, 100],
        "trafficWeights": [50, 50, 100],
        "evaluationPeriod": 30.0,
    }
)
JUDGES = {"today": judge.THRESHOLDS_ONLY, "new": judge.JudgeSettings()}


@dataclass(frozen=True)
class Scenario:
    """What the new version does differently from the old one."""

    id: str
    label: str
    latency_factor: float = 1.0
    extra_errors: float = 0.0
    slow_share: float = 0.0  # share of calls 10x slower

    @property
    def regression(self) -> bool:
        return self.latency_factor != 1.0 or self.extra_errors > 0 or self.slow_share > 0


SCENARIOS = (
    Scenario("J1", "+20% median latency", latency_factor=1.2),
    Scenario("J2", "+2 points of errors", extra_errors=0.02),
    Scenario("J3", "5% of calls 10x slower", slow_share=0.05),
    Scenario("J4", "identical version (A/A)"),
)


# --- random counts -----------------------------------------------------------------------------


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if n < 40:
        return sum(1 for _ in range(n) if rng.random() < p)
    if n * p * (1 - p) < 15:  # rare events: Poisson, the better approximation there
        return min(n, poisson(rng, n * p)) if p < 0.5 else n - min(n, poisson(rng, n * (1 - p)))
    return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))


@dataclass(frozen=True)
class Mixture:
    """A latency distribution: log-normal components (weight, mu, sigma)."""

    parts: tuple[tuple[float, float, float], ...]

    @classmethod
    def of(cls, factor: float, slow_share: float) -> Mixture:
        parts = []
        for weight, median, sigma in (
            (1 - TAIL_SHARE, MEDIAN_MS, SIGMA),
            (TAIL_SHARE, TAIL_MEDIAN_MS, TAIL_SIGMA),
        ):
            parts.append(((1 - slow_share) * weight, math.log(median * factor), sigma))
            if slow_share:
                parts.append((slow_share * weight, math.log(median * factor * 10), sigma))
        return cls(tuple(parts))

    def cdf(self, x: float) -> float:
        lx = math.log(x)
        return sum(w * 0.5 * math.erfc(-(lx - mu) / (s * math.sqrt(2))) for w, mu, s in self.parts)

    def moments(self) -> tuple[float, float]:
        mean = sum(w * math.exp(mu + s * s / 2) for w, mu, s in self.parts)
        second = sum(w * math.exp(2 * mu + 2 * s * s) for w, mu, s in self.parts)
        return mean, second - mean * mean

    def draw(self, rng: random.Random) -> float:
        return self.draws(rng, 1)[0]

    def draws(self, rng: random.Random, n: int) -> list[float]:
        """`n` latencies (ms); written for speed, as most of the benchmark's time is here
        (normal deviates by Box-Muller, two per pair of uniforms)."""
        parts, last = self.parts, self.parts[-1]
        uniform, exp, log, sqrt = rng.random, math.exp, math.log, math.sqrt
        cos, sin, tau = math.cos, math.sin, math.tau
        normals: list[float] = []
        while len(normals) < n:
            radius, angle = sqrt(-2.0 * log(1.0 - uniform())), tau * uniform()
            normals += (radius * cos(angle), radius * sin(angle))
        out = []
        for z in normals[:n]:
            u = uniform()
            chosen = last
            for part in parts:
                u -= part[0]
                if u <= 0:
                    chosen = part
                    break
            out.append(exp(chosen[1] + chosen[2] * z))
        return out


_BIN_PROBS: dict[Mixture, tuple[float, ...]] = {}


def bin_probabilities(mix: Mixture) -> tuple[float, ...]:
    """P(latency in each bin): (0, 1], (1, 5], ... (100, inf)."""
    cached = _BIN_PROBS.get(mix)
    if cached is None:
        cdf = [mix.cdf(b) for b in BOUNDS]
        cached = (*(c - (cdf[i - 1] if i else 0.0) for i, c in enumerate(cdf)), 1 - cdf[-1])
        _BIN_PROBS[mix] = cached
    return cached


@dataclass
class Tally:
    """One version on one node since the new version got traffic there."""

    requests: int = 0
    errors: int = 0
    bins: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    latency_sum: float = 0.0
    last_mix: Mixture | None = None
    # Every latency while the agent's ring still holds all calls (the judge then ranks the
    # exact values); None once more than RING calls were counted.
    values: list[float] | None = field(default_factory=list)

    def add(self, rng: random.Random, n: int, mix: Mixture, error_p: float) -> None:
        if n <= 0:
            return
        self.requests += n
        self.errors += binomial(rng, n, error_p)
        self.last_mix = mix
        if self.values is not None and self.requests > RING:
            self.values = None
        if n < 30 or self.values is not None:
            drawn = mix.draws(rng, n)
            self.latency_sum += sum(drawn)
            bins = self.bins
            for value in drawn:
                bins[bisect_left(BOUNDS, value)] += 1
            if self.values is not None:
                self.values.extend(drawn)
            return
        left, mass = n, 1.0
        probs = bin_probabilities(mix)
        for i in range(len(BOUNDS)):  # a multinomial draw as a chain of binomials
            got = binomial(rng, left, min(1.0, probs[i] / mass)) if mass > 0 else 0
            self.bins[i] += got
            left -= got
            mass -= probs[i]
            if left == 0:
                break
        self.bins[len(BOUNDS)] += left
        mean, variance = mix.moments()
        self.latency_sum += max(0.0, rng.gauss(n * mean, math.sqrt(n * variance)))

    def figures(self, rng: random.Random | None) -> VersionFigures:
        cumulative, running = [], 0
        for bound, count in zip((*BOUNDS, math.inf), self.bins, strict=True):
            running += count
            cumulative.append((bound, running))
        samples: tuple[float, ...] = ()
        if self.values is not None:
            samples = tuple(self.values)
        elif rng is not None and self.last_mix is not None:
            mix = self.last_mix
            samples = tuple(mix.draws(rng, min(self.requests, RING)))
        return VersionFigures(
            requests=self.requests,
            errors=self.errors,
            latency_sum_ms=self.latency_sum,
            latency_count=self.requests,
            buckets=tuple(cumulative),
            samples=samples,
        )


# --- one rollout -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutResult:
    rolled_back: bool
    decided_per_side: float | None  # requests per side at the first verdict not inconclusive
    seconds: float
    looks: int


class SimulatedFleet:
    """The canary nodes' traffic, tick by tick, on the rollout's own clock."""

    def __init__(self, rng: random.Random, rate: float, scenario: Scenario) -> None:
        self.rng = rng
        self.rate = rate
        self.scenario = scenario
        self.now = 0.0
        self.weight: dict[str, float] = {}
        self.tallies: dict[str, tuple[Tally, Tally]] = {}  # node -> (new, old)
        self.noisy = (rng.choice(NODES), rng.randrange(0, 13) * TICK)
        self.burst = (rng.choice(NODES), rng.randrange(0, 13) * TICK)

    def set_traffic(self, nodes: Sequence[str], percent: float) -> None:
        for node in nodes:
            self.weight[node] = percent
            self.tallies.setdefault(node, (Tally(), Tally()))

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self._tick(min(TICK, end - self.now))

    def _tick(self, dt: float) -> None:
        t = self.now
        for node, percent in self.weight.items():
            factor = SLOW_FACTOR if node == SLOW_NODE else 1.0
            if node == self.noisy[0] and self.noisy[1] <= t < self.noisy[1] + NOISY_SECONDS:
                factor *= NOISY_FACTOR
            error_p = BASE_ERROR
            if node == self.burst[0] and self.burst[1] <= t < self.burst[1] + BURST_SECONDS:
                error_p += BURST_POINTS
            s = self.scenario
            arrivals = poisson(self.rng, self.rate * dt)
            to_new = binomial(self.rng, arrivals, percent / 100)
            new, old = self.tallies[node]
            new.add(
                self.rng,
                to_new,
                Mixture.of(factor * s.latency_factor, s.slow_share),
                error_p + s.extra_errors,
            )
            old.add(self.rng, arrivals - to_new, Mixture.of(factor, 0.0), error_p)
        self.now += dt

    def figures(
        self, nodes: Sequence[str]
    ) -> tuple[dict[str, VersionFigures], dict[str, VersionFigures]]:
        """What the executor hands the judge: new and old figures per node."""
        serving = [n for n in nodes if n in self.tallies]
        # The samples ring is read only when a latency trigger is over its threshold.
        rng = self.rng if _latency_over([self.tallies[n][0] for n in serving]) else None
        new = {n: self.tallies[n][0].figures(rng) for n in serving}
        old = {n: self.tallies[n][1].figures(rng) for n in serving if self.tallies[n][1].requests}
        return new, old


def _latency_over(tallies: Sequence[Tally]) -> bool:
    """Whether a latency trigger is over its threshold on a node or merged (the bench's
    triggers are averages; a percentile trigger would read the samples every time)."""
    for metric, threshold in TRIGGERS:
        if metric not in LATENCY_METRICS:
            continue
        if metric != "avg_latency_ms":
            return True
        merged = sum(t.requests for t in tallies)
        if merged and sum(t.latency_sum for t in tallies) / merged > threshold:
            return True
        if any(t.requests and t.latency_sum / t.requests > threshold for t in tallies):
            return True
    return False


def simulate_rollout(
    rng: random.Random, rate: float, scenario: Scenario, settings: judge.JudgeSettings
) -> RolloutResult:
    """One canary rollout of the scenario's new version, judged by `settings`."""
    ctx = PlanContext(
        "fn", "2.0.0", tuple(NodeTarget(n, "r1", "1.0.0") for n in NODES), memory_mib=64.0
    )
    fleet = SimulatedFleet(rng, rate, scenario)
    plan = CanaryStrategy(OPTIONS).plan(ctx)
    tally = judge.ExtensionTally()
    step = next(plan)
    decided: float | None = None
    looks = 0
    rolled_back = False
    while True:
        if isinstance(step, SetTraffic):
            fleet.set_traffic(step.nodes, step.new_percent)
            outcome = StepOutcome.all_ok(step.nodes)
        elif isinstance(step, Wait):
            fleet.advance(step.seconds)
            outcome = StepOutcome(ok=True, message="waited")
        elif isinstance(step, Analyze):
            looks += 1
            new, old = fleet.figures(step.nodes)
            # As the executor: the counts since both versions shared a node (the simulated
            # agents count from then on), the old version's only where it still shares it.
            sharing = {n: f for n, f in old.items() if fleet.weight[n] < 100}
            outcome = judge.look(
                new,
                old,
                {},
                TRIGGERS,
                settings,
                new_since=new,
                old_since=sharing,
                extension_left=tally.left(settings),
            )
            if decided is None and outcome.verdict != "inconclusive":
                sides = [
                    sum(f.requests for f in new.values()),
                    sum(f.requests for f in old.values()),
                ]
                decided = float(min(sides))
        elif isinstance(step, Rollback):
            rolled_back = True
            outcome = StepOutcome.all_ok(step.nodes)
        elif isinstance(step, Finish):
            rolled_back = rolled_back or step.state is RolloutState.ROLLED_BACK
            return RolloutResult(rolled_back, decided, fleet.now, looks)
        else:
            outcome = StepOutcome.all_ok(getattr(step, "nodes", ()))
        tally.note(step, outcome)
        step = plan.send(outcome)


# --- cells and rows --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    scenario: str
    rate: int
    judge: str
    rollouts: int
    rolled_back: int
    decided_per_side: tuple[float, ...]
    mean_seconds: float
    outcomes: tuple[bool, ...] = ()  # rolled back, per simulated rollout

    @property
    def per_rollout(self) -> list[float]:
        """100.0 for a rollout rolled back, 0.0 for one that completed (the row's samples)."""
        return [100.0 if rolled else 0.0 for rolled in self.outcomes]

    @property
    def share(self) -> float:
        return self.rolled_back / self.rollouts

    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.rolled_back, self.rollouts, 0.95)

    def to_json(self) -> dict[str, Any]:
        low, high = self.interval()
        decided = sorted(self.decided_per_side)
        return {
            "scenario": self.scenario,
            "rate_per_node": self.rate,
            "judge": self.judge,
            "rollouts": self.rollouts,
            "rolled_back": self.rolled_back,
            "share": self.share,
            "ci95": [low, high],
            "decided_per_side_median": statistics.median(decided) if decided else None,
            "decided_per_side_p95": decided[int(0.95 * (len(decided) - 1))] if decided else None,
            "mean_rollout_seconds": self.mean_seconds,
        }


def simulate(scenario: Scenario, rate: int, judge_name: str, rollouts: int, seed: int) -> Cell:
    """`rollouts` rollouts of one scenario at one rate; rollout i uses the same random stream
    under both judges (common random numbers make the two columns comparable)."""
    settings = JUDGES[judge_name]
    results = [
        simulate_rollout(
            random.Random(f"{seed}/{scenario.id}/{rate}/{i}"), rate, scenario, settings
        )
        for i in range(rollouts)
    ]
    return Cell(
        scenario.id,
        rate,
        judge_name,
        rollouts,
        sum(r.rolled_back for r in results),
        tuple(
            r.decided_per_side
            for r in results
            if r.decided_per_side is not None and r.rolled_back == scenario.regression
        ),
        statistics.fmean(r.seconds for r in results),
        tuple(r.rolled_back for r in results),
    )


def _pct(cell: Cell) -> str:
    low, high = cell.interval()
    return f"{100 * cell.share:.1f}% [{100 * low:.1f}-{100 * high:.1f}]"


def table(cells: Sequence[Cell]) -> str:
    """The side-by-side table: rows scenario x rate, columns today's and the new judge."""
    by = {(c.scenario, c.rate, c.judge): c for c in cells}
    lines = [
        "| scenario | req/s per node | today: rolled back [95% CI] | new: rolled back [95% CI] |",
        "|---|---|---|---|",
    ]
    for s in SCENARIOS:
        for rate in RATES:
            today, new = by.get((s.id, rate, "today")), by.get((s.id, rate, "new"))
            if today and new:
                lines.append(f"| {s.id} {s.label} | {rate} | {_pct(today)} | {_pct(new)} |")
    return "\n".join(lines)


def run_cells(rollouts: int, seed: int = 18, log: Callable[[str], None] = print) -> list[Cell]:
    cells = []
    for s in SCENARIOS:
        for rate in RATES:
            for name in JUDGES:
                cells.append(simulate(s, rate, name, rollouts, seed))
            log(f"J {s.id} at {rate}/s: {_pct(cells[-2])} -> {_pct(cells[-1])}")
    return cells


def rows(cells: Sequence[Cell]) -> list[Row]:
    """J1-J6 from the cells: median = the new judge, baseline = today's judge."""
    by = {(c.scenario, c.rate, c.judge): c for c in cells}
    n = cells[0].rollouts
    out: list[Row] = []
    for s in SCENARIOS:
        new = [by[(s.id, r, "new")] for r in RATES]
        today = [by[(s.id, r, "today")] for r in RATES]
        at50n, at50t = by[(s.id, 50, "new")], by[(s.id, 50, "today")]
        goal = at50n.share >= 0.95 if s.regression else at50n.share <= 0.01
        detail = "; ".join(
            f"{r}/s: today {_pct(t)}, new {_pct(c)}"
            for r, t, c in zip(RATES, today, new, strict=True)
        )
        out.append(
            Row(
                id=s.id,
                measure=("detection: " if s.regression else "false rollbacks: ") + s.label,
                unit="%",
                median=100 * at50n.share,
                baseline=100 * at50t.share,
                baseline_measure="today's judge (thresholds only), same simulated traffic",
                target=">= 95% at 50 req/s" if s.regression else "<= 1% at 50 req/s",
                ok=goal,
                samples=at50n.per_rollout,
                baseline_samples=at50t.per_rollout,
                extra={"cells": [c.to_json() for c in (*today, *new)]},
                note=f"{n} rollouts per cell (samples: 100 = rolled back, per rollout at 50 "
                f"req/s); {detail}",
            )
        )
    decided_new = [v for s in SCENARIOS for v in by[(s.id, 50, "new")].decided_per_side]
    decided_today = [v for s in SCENARIOS for v in by[(s.id, 50, "today")].decided_per_side]
    med_new = statistics.median(decided_new) if decided_new else math.nan
    med_today = statistics.median(decided_today) if decided_today else math.nan
    out.append(
        Row(
            id="J5",
            measure="requests per side at a right decision (J1-J4, 50 req/s)",
            unit="req",
            median=float(med_new),
            baseline=float(med_today),
            baseline_measure="today's judge: its first look",
            target="<= 2,000 per side",
            ok=bool(med_new <= 2000),
            samples=[float(v) for v in decided_new],
            baseline_samples=[float(v) for v in decided_today],
            extra={
                "p95_new": sorted(decided_new)[int(0.95 * (len(decided_new) - 1))]
                if decided_new
                else None,
                "right_decisions_new": len(decided_new),
                "right_decisions_today": len(decided_today),
            },
            note="median over the rollouts each judge got right (rolled back a regression, "
            "promoted the A/A version), one sample per such rollout",
        )
    )
    j6n, j6t = by[("J4", 5, "new")], by[("J4", 5, "today")]
    out.append(
        Row(
            id="J6",
            measure="false rollbacks at 5 req/s (A/A)",
            unit="%",
            median=100 * j6n.share,
            baseline=100 * j6t.share,
            baseline_measure="today's judge, same simulated traffic",
            target="0 false rollbacks",
            ok=j6n.rolled_back == 0,
            samples=j6n.per_rollout,
            baseline_samples=j6t.per_rollout,
            extra={
                "new": j6n.to_json(),
                "today": j6t.to_json(),
                "detection_at_5_new": {s.id: by[(s.id, 5, "new")].share for s in SCENARIOS[:3]},
            },
            note=f"{j6n.rolled_back} of {j6n.rollouts} (new) against {j6t.rolled_back} of "
            f"{j6t.rollouts} (today); mean rollout {j6n.mean_seconds:.0f}s (new, with "
            f"extensions) against {j6t.mean_seconds:.0f}s",
        )
    )
    return out


def run(ctx: Context) -> list[Row]:
    rollouts = ctx.reps(1000, 100)
    cells = run_cells(rollouts, log=ctx.log)
    ctx.log("judgment table (share of rollouts rolled back):\n" + table(cells))
    return rows(cells)


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    found = run_cells(count, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(table(found))
