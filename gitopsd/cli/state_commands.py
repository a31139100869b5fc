"""`gitopsd state check|rebuild|migrate`: look at the state database, recover from a damaged
one, and move it into PostgreSQL.

gitopsd state check     exit 0 sound, 1 damaged (every problem printed), 2 could not run
gitopsd state rebuild   move a damaged gitopsd.db aside, start a new one from what can
                        still be read, and say what was salvaged and what was lost
gitopsd state migrate --to URL
                        copy gitopsd.db into an empty PostgreSQL database, verify the counts
"""

from __future__ import annotations

import sys

import click

from gitopsd.cli.context import Ctx, common_options
from gitopsd.errors import ConfigError


@click.group(name="state")
def state() -> None:
    """Check the state database, or rebuild a damaged one."""


@state.command(name="check")
@common_options
def check(ctx: Ctx) -> None:
    """Run SQLite's integrity check on gitopsd.db (with [state] url: PostgreSQL's schema and
    rows); exit 0 sound, 1 damaged."""
    from gitopsd.store.sqlite import DB_NAME
    from gitopsd.store.sqlite_integrity import check_file

    if ctx.config.state.url:
        from gitopsd.store.open import open_store

        store = open_store(ctx.config, ctx.state_dir)
        try:
            report = store.check(thorough=True)
        finally:
            store.close()
    else:
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
    from gitopsd.reconcile.keys import retry_key
    from gitopsd.store.sqlite import DB_NAME
    from gitopsd.store.sqlite_integrity import check_file
    from gitopsd.store.sqlite_rebuild import rebuild as rebuild_state

    if ctx.config.state.url:
        raise ConfigError(
            "state rebuild repairs the SQLite file; a PostgreSQL [state] url is repaired with "
            "the database's own tools (restore a backup; `gitopsd state check` says what is wrong)"
        )
    path = ctx.state_dir / DB_NAME
    if path.is_file():
        sound = check_file(path, thorough=True)
        if sound.ok:
            click.echo(f"{path} passed the integrity check: nothing to rebuild")
            sys.exit(0)
    report = rebuild_state(ctx.state_dir, SystemClock().now(), retry_key)
    for line in report.lines():
        click.echo(line)


@state.command(name="migrate")
@click.option(
    "--to",
    "to",
    required=True,
    metavar="URL",
    help="postgresql://user@host:port/dbname (an empty database; password from [state] "
    "password_file or libpq's PGPASSWORD / ~/.pgpass).",
)
@common_options
def migrate(ctx: Ctx, to: str) -> None:
    """Copy the SQLite state (gitopsd.db in the state dir) into PostgreSQL.

    Stop the daemon first. Rollouts and their journal, operator controls and holds, module
    bytes, scheduled retirements and keys are copied in one transaction and the counts
    compared on both sides; gitopsd.db is only read. Then set [state] url to URL."""
    from gitopsd.store.pg_import import migrate_sqlite_to_postgres
    from gitopsd.store.pg_url import pg_target
    from gitopsd.store.sqlite import DB_NAME

    target = pg_target(to, ctx.config.state.password_file)
    report = migrate_sqlite_to_postgres(ctx.state_dir / DB_NAME, target)
    for line in report.lines():
        click.echo(line)
