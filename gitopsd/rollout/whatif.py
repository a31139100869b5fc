"""What-if plans: a strategy run against injected outcomes instead of "all healthy".

`gitopsd diff --plan --what-if SPEC` answers "what would this rollout do if ...": the
strategy (a pure plan generator) is driven with the healthy answers of `diff --plan`
except where SPEC injects a fault, and the path it takes is reported: every step with its
outcome, which nodes roll back, what each node ends up serving, and the note that would be
written. SPEC is a phrase or a YAML file (docs/strategies.md, "What-if plans"):

    fail health on edge-ap-south-1 at stage 2
    fail deploy on edge-a; breach error_rate on edge-b at stage 1
    edge-c unreachable
    inconclusive analysis at stage 1

A *stage* is what ends with a judgement: stage 1 runs up to and including the first
analysis (or A/B comparison), stage 2 up to the second, and so on; an injection without a
stage applies in every stage.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitopsd.errors import GitopsdError
from gitopsd.manifest.strategy_options import MetricName
from gitopsd.rollout.preview import healthy_outcome
from gitopsd.rollout.steps import (
    Analyze,
    Compare,
    Deploy,
    Finish,
    HealthCheck,
    NodeResult,
    PlanContext,
    Rollback,
    RolloutState,
    SetTraffic,
    Step,
    StepOutcome,
    Strategy,
)
from gitopsd.rollout.strategies._common import step_nodes

Fault = Literal["health", "deploy", "metric", "unreachable", "inconclusive"]
METRICS: tuple[str, ...] = typing.get_args(MetricName)
_MAX_STEPS = 10_000
_SPEC_MAX = 64 * 1024  # a what-if is a few lines: refuse anything resembling a flood


class WhatIfError(GitopsdError):
    """A what-if SPEC that cannot be understood (exit 2, like any usage error)."""


@dataclass(frozen=True)
class Injection:
    """One injected fault: on `nodes` (empty: all of a step's nodes), in `stage` (None: all)."""

    fault: Fault
    nodes: tuple[str, ...] = ()
    stage: int | None = None
    metric: str = "error_rate"

    def text(self) -> str:
        where = f" on {', '.join(self.nodes)}" if self.nodes else ""
        when = f" at stage {self.stage}" if self.stage is not None else ""
        what = {
            "health": "fail health",
            "deploy": "fail deploy",
            "metric": f"breach {self.metric}",
            "unreachable": "unreachable",
            "inconclusive": "inconclusive analysis",
        }[self.fault]
        return f"{what}{where}{when}"

    def applies(self, stage: int, nodes: Iterable[str]) -> tuple[str, ...]:
        """The nodes of a step in `stage` this injection hits (all of them when it names none)."""
        if self.stage is not None and self.stage != stage:
            return ()
        listed = tuple(nodes)
        return listed if not self.nodes else tuple(n for n in listed if n in self.nodes)


# -- reading a SPEC ---------------------------------------------------------------------------

_NODES = r"(?P<nodes>[a-z0-9][-a-z0-9]*(?:\s*,\s*[a-z0-9][-a-z0-9]*)*)"
_STAGE = r"(?:\s+at\s+stage\s+(?P<stage>\d+))?"
_PHRASE_PATTERNS: tuple[tuple[str, Fault], ...] = (
    (rf"fail(?:ed)?\s+health(?:\s*check)?\s+on\s+{_NODES}{_STAGE}", "health"),
    (rf"fail(?:ed)?\s+deploy\s+on\s+{_NODES}{_STAGE}", "deploy"),
    (rf"breach(?:ed)?\s+(?P<metric>[a-z0-9_]+)\s+on\s+{_NODES}{_STAGE}", "metric"),
    (rf"(?:node\s+)?{_NODES}\s+unreachable{_STAGE}", "unreachable"),
    (rf"unreachable\s+{_NODES}{_STAGE}", "unreachable"),
    (
        rf"(?:inconclusive\s+analysis|analysis\s+inconclusive)(?:\s+on\s+{_NODES})?{_STAGE}",
        "inconclusive",
    ),
)
_PHRASES = tuple((re.compile(p + "$", re.IGNORECASE), f) for p, f in _PHRASE_PATTERNS)


def parse_phrase(text: str) -> tuple[Injection, ...]:
    """Injections from a phrase; clauses are separated by `;` or ` and `."""
    clauses = [c.strip() for c in re.split(r";|\s+and\s+", text.strip()) if c.strip()]
    if not clauses:
        raise WhatIfError("--what-if: empty; e.g. 'fail health on edge-a at stage 2'")
    out = []
    for clause in clauses:
        for pattern, fault in _PHRASES:
            match = pattern.match(" ".join(clause.split()))
            if match:
                groups = match.groupdict()
                nodes = tuple(n.strip() for n in (groups.get("nodes") or "").split(",") if n)
                out.append(
                    _injection(fault, nodes, groups.get("stage"), groups.get("metric"), clause)
                )
                break
        else:
            raise WhatIfError(
                f"--what-if: cannot read {clause!r}; say 'fail health on NODE', 'fail deploy on "
                "NODE', 'breach METRIC on NODE', 'NODE unreachable' or 'inconclusive analysis', "
                "each optionally followed by 'at stage N'"
            )
    return tuple(out)


def _injection(
    fault: Fault, nodes: tuple[str, ...], stage: str | int | None, metric: str | None, what: str
) -> Injection:
    number = int(stage) if stage is not None else None
    if number is not None and not 1 <= number <= 1000:
        raise WhatIfError(f"--what-if: {what!r}: stages count from 1")
    if fault == "metric" and (metric or "").lower() not in METRICS:
        raise WhatIfError(
            f"--what-if: {what!r}: unknown metric {metric!r}; one of {', '.join(METRICS)}"
        )
    return Injection(fault, nodes, number, (metric or "error_rate").lower())


class _OutcomeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    fail: Fault = Field(description="What goes wrong.")
    nodes: list[str] = Field(default_factory=list, max_length=1000)
    stage: int | None = Field(None, ge=1, le=1000)
    metric: MetricName = "error_rate"


class _WhatIfFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    outcomes: list[_OutcomeEntry] = Field(min_length=1, max_length=1000)


def parse_file(path: Path) -> tuple[Injection, ...]:
    """Injections from a YAML file: `outcomes: [{fail, nodes, stage, metric}, ...]`."""
    try:
        raw = path.read_bytes()[: _SPEC_MAX + 1]
    except OSError as exc:
        raise WhatIfError(f"--what-if {path}: {exc.strerror or exc}") from exc
    if len(raw) > _SPEC_MAX:
        raise WhatIfError(f"--what-if {path}: larger than {_SPEC_MAX} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
        parsed = _WhatIfFile.model_validate(data)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WhatIfError(f"--what-if {path}: not YAML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise WhatIfError(f"--what-if {path}: {where}: {first['msg']}") from exc
    return tuple(
        _injection(o.fail, tuple(o.nodes), o.stage, o.metric, f"outcomes[{i}]")
        for i, o in enumerate(parsed.outcomes)
    )


def load_what_if(spec: str) -> tuple[Injection, ...]:
    """A SPEC: the path of a `.yaml`/`.yml` file, else a phrase."""
    if len(spec) > _SPEC_MAX:
        raise WhatIfError("--what-if: too long")
    if spec.endswith((".yaml", ".yml")):
        return parse_file(Path(spec))
    return parse_phrase(spec)


def check_nodes(injections: Sequence[Injection], known: Iterable[str]) -> None:
    """Every node an injection names must be a node of the manifests."""
    names = set(known)
    for inj in injections:
        unknown = [n for n in inj.nodes if n not in names]
        if unknown:
            raise WhatIfError(
                f"--what-if: {inj.text()!r}: no node {', '.join(unknown)} in the manifests "
                f"(nodes: {', '.join(sorted(names)) or 'none'})"
            )


# -- running a plan under injected outcomes --------------------------------------------------


@dataclass(frozen=True)
class WhatIfStep:
    """One step of the path, its outcome, and the injections that shaped the outcome."""

    step: Step
    outcome: StepOutcome
    stage: int
    injected: tuple[Injection, ...] = ()


@dataclass(frozen=True)
class WhatIfResult:
    """Where a rollout would go: its steps, its end, and the fleet it would leave."""

    version: str
    steps: tuple[WhatIfStep, ...]
    finish: Finish
    rolled_back: tuple[str, ...]
    serving: Mapping[str, Mapping[str, float]]  # node -> version -> % of traffic
    used: frozenset[Injection] = field(default_factory=frozenset)

    @property
    def note_status(self) -> str:
        """The status the commit's note would carry for this function."""
        return "success" if self.finish.state is RolloutState.COMPLETED else "failure"

    def serving_text(self, node: str) -> str:
        split = self.serving.get(node, {})
        if not split:
            return "nothing"
        if len(split) == 1:
            return next(iter(split))
        return " + ".join(f"{v} {p:g}%" for v, p in sorted(split.items(), key=lambda x: -x[1]))


def _answer(
    step: Step, stage: int, injections: Sequence[Injection]
) -> tuple[StepOutcome, tuple[Injection, ...]]:
    """The outcome of `step` in `stage`: healthy, except where an injection hits it."""
    nodes = step_nodes(step)
    failed: dict[str, str] = {}
    used: list[Injection] = []
    verdict = healthy_outcome(step).verdict
    message = ""
    for inj in injections:
        hit = inj.applies(stage, nodes)
        if not hit:
            continue
        if inj.fault == "unreachable":
            failed.update({n: "unreachable (what-if)" for n in hit if n not in failed})
        elif inj.fault == "deploy" and isinstance(step, Deploy):
            failed.update({n: "deploy failed (what-if)" for n in hit if n not in failed})
        elif inj.fault == "health" and isinstance(step, HealthCheck):
            failed.update({n: "health check failed (what-if)" for n in hit if n not in failed})
        elif inj.fault == "metric" and isinstance(step, Analyze):
            failed.update({n: f"{inj.metric} over its limit (what-if)" for n in hit})
            verdict, message = "fail", f"{inj.metric} breached on {', '.join(hit)} (what-if)"
        elif inj.fault == "metric" and isinstance(step, Compare):
            if any(n in step.b_nodes for n in hit):
                verdict, message = "A", f"B breached {inj.metric} (what-if)"
            else:
                continue
        elif inj.fault == "inconclusive" and isinstance(step, Analyze | Compare):
            if verdict not in ("fail", "A"):
                verdict, message = "inconclusive", "not enough evidence (what-if)"
        else:
            continue
        used.append(inj)
    if not used:
        return healthy_outcome(step), ()
    results = tuple(NodeResult(n, n not in failed, failed.get(n, "")) for n in nodes)
    ok = not failed and verdict != "fail"
    if not message and failed:
        message = "; ".join(f"{n}: {why}" for n, why in failed.items())
    return StepOutcome(ok=ok, nodes=results, verdict=verdict, message=message), tuple(used)


def run_what_if(
    strategy: Strategy, ctx: PlanContext, injections: Sequence[Injection]
) -> WhatIfResult:
    """Drive `strategy` on `ctx` with the injected outcomes to its Finish."""
    serving: dict[str, dict[str, float]] = {
        n.name: ({n.old_version: 100.0} if n.old_version else {}) for n in ctx.nodes
    }
    old = {n.name: n.old_version for n in ctx.nodes}
    path: list[WhatIfStep] = []
    used: set[Injection] = set()
    rolled_back: list[str] = []
    stage = 1
    plan = strategy.plan(ctx)
    try:
        step = next(plan)
        while not isinstance(step, Finish):
            if len(path) >= _MAX_STEPS:
                raise WhatIfError(f"the plan still runs after {_MAX_STEPS} steps")
            outcome, hit = _answer(step, stage, injections)
            used.update(hit)
            path.append(WhatIfStep(step, outcome, stage, hit))
            fine = (
                {r.node for r in outcome.nodes if r.ok}
                if outcome.nodes
                else set(step_nodes(step) if outcome.ok else ())
            )
            _apply(step, fine, ctx.version, old, serving, rolled_back)
            if isinstance(step, Analyze | Compare):
                stage += 1
            step = plan.send(outcome)
    except StopIteration:
        raise WhatIfError("the plan ended without a Finish step") from None
    finally:
        plan.close()
    return WhatIfResult(
        ctx.version, tuple(path), step, tuple(rolled_back), serving, frozenset(used)
    )


def _apply(
    step: Step,
    fine: set[str],
    new: str,
    old: Mapping[str, str | None],
    serving: dict[str, dict[str, float]],
    rolled_back: list[str],
) -> None:
    """What a step did to what each node serves (only where it succeeded)."""
    for node in sorted(fine):
        before = old.get(node)
        if isinstance(step, Deploy) and not before:
            serving[node] = {new: 100.0}
        elif isinstance(step, SetTraffic):
            pct = max(0.0, min(100.0, step.new_percent))
            serving[node] = (
                {new: 100.0}
                if not before or pct >= 100
                else ({before: 100.0} if pct <= 0 else {new: pct, before: 100.0 - pct})
            )
        elif isinstance(step, Rollback):
            serving[node] = {before: 100.0} if before else {}
            if node not in rolled_back:
                rolled_back.append(node)


def result_json(result: WhatIfResult, plan_step_json: Any) -> dict[str, Any]:
    """The `whatIf` entry of one function in `diff --output json`."""
    return {
        "steps": [
            {
                "step": plan_step_json(s.step),
                "stage": s.stage,
                "ok": s.outcome.ok and not s.outcome.failed_nodes,
                "verdict": s.outcome.verdict,
                "message": s.outcome.message,
                "failedNodes": list(s.outcome.failed_nodes),
                "injected": [i.text() for i in s.injected],
            }
            for s in result.steps
        ],
        "state": str(result.finish.state),
        "message": result.finish.message,
        "rolledBack": list(result.rolled_back),
        "serving": {n: dict(v) for n, v in result.serving.items()},
        "note": {
            "status": result.note_status,
            "version": result.version,
            "state": str(result.finish.state),
            "message": result.finish.message,
        },
    }
