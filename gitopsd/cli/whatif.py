"""`gitopsd diff --plan --what-if SPEC`: the path of each rollout under injected outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitopsd.cli.output import echo
from gitopsd.reconcile.results import ReadResult
from gitopsd.reconcile.targets import build_spec
from gitopsd.rollout.preview import describe_step
from gitopsd.rollout.strategies import strategy_for
from gitopsd.rollout.whatif import (
    Injection,
    WhatIfResult,
    check_nodes,
    load_what_if,
    result_json,
    run_what_if,
)


@dataclass(frozen=True)
class WhatIfReport:
    """The injections and, per function that would roll out, where its rollout would go."""

    injections: tuple[Injection, ...]
    results: dict[str, WhatIfResult]

    @property
    def unused(self) -> list[Injection]:
        """Injections no step of any plan met (a node not targeted, a stage never reached)."""
        used = set().union(*(r.used for r in self.results.values()))
        return [i for i in self.injections if i not in used]


def what_if_plans(read: ReadResult, spec: str) -> WhatIfReport:
    """Run every pending rollout's strategy under the outcomes `spec` injects."""
    injections = load_what_if(spec)
    check_nodes(injections, read.desired.nodes)
    results = {}
    for change in read.changes.changes:
        fn = read.desired.functions.get(change.function)
        if fn is not None:
            ctx = build_spec(fn, read.desired, read.live, change).plan_context()
            results[fn.name] = run_what_if(strategy_for(fn.spec.strategy), ctx, injections)
    return WhatIfReport(injections, results)


def render_what_if(report: WhatIfReport) -> None:
    echo(f"What if: {'; '.join(i.text() for i in report.injections)}", bold=True)
    for name, result in report.results.items():
        state = result.finish.state
        colour = "green" if result.note_status == "success" else "red"
        echo(f"{name} {result.version}: ends {state}: {result.finish.message}", fg=colour)
        for i, s in enumerate(result.steps):
            bad = not s.outcome.ok or bool(s.outcome.failed_nodes) or s.outcome.verdict == "fail"
            line = f"  {'✗' if bad else ' '} {i + 1:>2}. {describe_step(s.step, result.version)}"
            if s.injected:
                said = s.outcome.message or s.outcome.verdict
                line += f": {said} [{'; '.join(j.text() for j in s.injected)}]"
            echo(line, fg="yellow" if s.injected else None)
        echo(f"  rolled back: {', '.join(result.rolled_back) or 'no node'}")
        after = ", ".join(f"{n} {result.serving_text(n)}" for n in result.serving)
        echo(f"  serving after: {after or 'no target node'}")
        echo(f"  note: {result.note_status} ({state}): {result.finish.message}")
    for inj in report.unused:
        echo(f"never happened: {inj.text()} (no step of any plan met it)", fg="yellow")


def what_if_json(report: WhatIfReport) -> dict[str, Any]:
    """The `whatIf` member of `diff --plan --what-if SPEC --output json`."""
    from gitopsd.cli.json_documents import plan_step_json

    return {
        "injected": [i.text() for i in report.injections],
        "functions": {n: result_json(r, plan_step_json) for n, r in report.results.items()},
        "neverHappened": [i.text() for i in report.unused],
    }
