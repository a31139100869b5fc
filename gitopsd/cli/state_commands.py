"""`gitopsd state check|rebuild`: look at the state database, and recover from a damaged one.

gitopsd state check     exit 0 sound, 1 damaged (every problem printed), 2 could not run
gitopsd state rebuild   move a damaged gitopsd.db aside, start a new one from what can
                        still be read, and say what was salvaged and what was lost
"""

from __future__ import annotations

import sys

import click

from gitopsd.cli.context import Ctx, common_options


@click.group(name="state")
def state() -> None:
    """Check the state database, or rebuild a damaged one."""


@state.command(name="check")
@common_options
def check(ctx: Ctx) -> None:
    """Run SQLite's integrity check on gitopsd.db; exit 0 sound, 1 damaged."""
    from gitopsd.store.sqlite import DB_NAME
    from gitopsd.store.sqlite_integrity import check_file

    report = check_file(ctx.state_dir / DB_NAME, thorough=True)
    if report.ok:
        click.echo(f"ok: {report.location} passed the integrity check")
        sys.exit(0)
    click.echo(f"damaged: {report.location}")
    for problem in report.problems:
        click.echo(f"  {problem}")
    click.echo(
        "`gitopsd state rebuild` (with the same --config/--state-dir) moves it aside and "
        "starts a new one from what can still be read"
    )
    sys.exit(1)


@state.command(name="rebuild")
@common_options
def rebuild(ctx: Ctx) -> None:
    """Move a damaged gitopsd.db aside and rebuild it from every row still readable.

    Stop the daemon first (it refuses to start on a damaged file anyway). Live state comes
    back from the agents and desired state from Git; what only the file knew (history,
    holds and operator controls, module bytes) is kept where it can be read, and every loss
    is listed."""
    from gitopsd.clock import SystemClock
    from gitopsd.reconcile import retry_key
    from gitopsd.store.sqlite import DB_NAME
    from gitopsd.store.sqlite_integrity import check_file
    from gitopsd.store.sqlite_rebuild import rebuild as rebuild_state

    path = ctx.state_dir / DB_NAME
    if path.is_file():
        sound = check_file(path, thorough=True)
        if sound.ok:
            click.echo(f"{path} passed the integrity check: nothing to rebuild")
            sys.exit(0)
    report = rebuild_state(ctx.state_dir, SystemClock().now(), retry_key)
    for line in report.lines():
        click.echo(line)
