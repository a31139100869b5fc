"""The TTY progress table, rendered to a string through a forced terminal."""

from __future__ import annotations

import io
import time

from rich.console import Console

from gitopsd.cli.progress import ProgressDisplay
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.rollout.steps import Deploy, Finish, NodeResult, RolloutState, StepOutcome, Wait


def test_table_shows_nodes_done_failed_and_a_countdown() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with ProgressDisplay(console) as display:
        deploy = Deploy(("a", "b"))
        display(RolloutEvent("r", "fn", "2.0.0", 0, deploy, None))
        display(
            RolloutEvent(
                "r",
                "fn",
                "2.0.0",
                0,
                deploy,
                StepOutcome(
                    ok=False, nodes=(NodeResult("a", True), NodeResult("b", False, "down"))
                ),
            )
        )
        wait = Wait(300, "evaluation of stage 1 (10%)")
        display(RolloutEvent("r", "fn", "2.0.0", 1, wait, None, deadline=time.time() + 125))
        table = display.table()
        rendered = io.StringIO()
        Console(file=rendered, width=160, color_system=None).print(table)
        text = rendered.getvalue()
        assert "1/1" in text  # one node done, one failed
        assert "evaluation of stage 1" in text and ("2:04 left" in text or "2:05 left" in text)
        display(
            RolloutEvent(
                "r", "fn", "2.0.0", 2, Finish(RolloutState.COMPLETED, "ok"), StepOutcome(ok=True)
            )
        )
        assert display.rows["fn"].state == "COMPLETED"
    assert "fn" in out.getvalue()
