"""Live progress of rollouts on a terminal: one row per function with its step, nodes done
and failed, and a countdown while it waits. Not on a TTY, `render_event` prints a line per
event instead (logs and CI read those)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from gitopsd.rollout.engine import RolloutEvent
from gitopsd.rollout.preview import describe_step
from gitopsd.rollout.steps import Deploy, Finish, RolloutState

# A finished rollout's colour; every other state is yellow (still moving or waiting).
_COLOURS = {
    RolloutState.COMPLETED: "green",
    RolloutState.ROLLED_BACK: "red",
    RolloutState.FAILED: "red",
}


@dataclass
class _Row:
    version: str
    step: str = "starting"
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    deadline: float | None = None
    state: RolloutState = RolloutState.IN_PROGRESS


class ProgressDisplay:
    """A rich Live table fed with RolloutEvents (use as a context manager)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.rows: dict[str, _Row] = {}
        self._now = time.time
        self._live = Live(
            self.table(), console=self.console, refresh_per_second=4, get_renderable=self.table
        )

    def __enter__(self) -> ProgressDisplay:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)

    def __call__(self, event: RolloutEvent) -> None:
        row = self.rows.setdefault(event.function, _Row(event.version))
        row.version = event.version
        row.step = f"{event.seq + 1}. {describe_step(event.step)}"
        row.deadline = event.deadline if event.outcome is None else None
        if event.outcome is not None and isinstance(event.step, Deploy):
            row.done |= set(event.outcome.ok_nodes)
            row.failed |= set(event.outcome.failed_nodes)
        if isinstance(event.step, Finish):
            row.state = event.step.state
        self._live.refresh()

    def table(self) -> Table:
        table = Table(box=None, expand=False)
        for column in ("function", "version", "state", "nodes ok/failed", "step"):
            table.add_column(column)
        for name, row in sorted(self.rows.items()):
            step = row.step
            if row.deadline is not None:
                left = max(0, int(row.deadline - self._now()))
                step += f"  [bold]{left // 60}:{left % 60:02d} left[/bold]"
            colour = _COLOURS.get(row.state, "yellow")
            table.add_row(
                name,
                row.version,
                f"[{colour}]{row.state}[/{colour}]",
                f"{len(row.done)}/{len(row.failed)}",
                step,
            )
        return table
