"""`gitopsd` command line. Heavy modules are imported inside commands so `--help` is fast.

Exit codes, like diff(1): 0 success / no changes, 1 a negative result, 2 could not run.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from gitopsd.cli.context import Ctx, common_options, source_options
from gitopsd.cli.state_commands import state as state_group
from gitopsd.errors import GitopsdError


class _Group(click.Group):
    """Catches GitopsdError once: prints `error: ...` and exits with the error's code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GitopsdError as exc:
            report_error(exc)
            sys.exit(exc.exit_code)


def report_error(exc: GitopsdError) -> None:
    """`error: ...` on stderr (for invalid manifests, every `file:line: message` first)."""
    from gitopsd.errors import InvalidManifests

    if isinstance(exc, InvalidManifests):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"error: {len(exc.problems)} manifest problem(s)", err=True)
    else:
        click.echo(f"error: {exc}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gitopsd")
def cli() -> None:
    """GitOps for WebAssembly edge functions."""
    # Logs always go to stderr, whatever the command: stdout is for output (and JSON).
    _setup_logging()


def _setup_logging(json: bool | None = None) -> None:
    from gitopsd import log

    log.configure(json=json)


@cli.command()
@source_options
@common_options
def validate(ctx: Ctx, source: str | None, ref: str | None, path: str | None) -> None:
    """Check the manifests of SOURCE; exit 1 with file:line for every problem."""
    _setup_logging()
    from gitopsd.cli.worktree import hint_uncommitted_modules, working_tree
    from gitopsd.errors import InvalidManifests
    from gitopsd.manifest.loader import load_snapshot
    from gitopsd.source.reader import take_snapshot

    spec = ctx.source(source, ref, path)
    snapshot = take_snapshot(spec, ctx.state_dir)
    tree = working_tree(spec)
    uncommitted = tree.uncommitted() if tree is not None else []
    if uncommitted:
        click.echo(
            f"warning: uncommitted changes to {', '.join(uncommitted)}: validated the commit "
            f"{snapshot.short} of {spec.ref}, not the working tree (commit them first)",
            err=True,
        )
    try:
        desired = load_snapshot(snapshot)
    except InvalidManifests as exc:
        if tree is None:
            raise
        raise InvalidManifests(hint_uncommitted_modules(exc.problems, tree), exc.commit) from None
    for warning in desired.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"{snapshot.short}: {len(desired.nodes)} node(s), {len(desired.functions)} function(s): ok"
    )


@cli.command(name="diff")
@source_options
@click.option("--plan", is_flag=True, help="Also show each rollout's steps.")
@click.option(
    "--what-if",
    "what_if",
    metavar="SPEC",
    help="With --plan: the path each rollout takes under injected outcomes, e.g. 'fail health "
    "on edge-a at stage 2', or a YAML file of them.",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@common_options
def diff_cmd(
    ctx: Ctx,
    source: str | None,
    ref: str | None,
    path: str | None,
    plan: bool,
    what_if: str | None,
    output: str,
) -> None:
    """What a sync would change; exit 0 no change, 1 changes, 2 error."""
    if what_if is not None and not plan:
        raise click.UsageError("--what-if needs --plan")
    _setup_logging()
    from gitopsd.cli import commands

    changed = commands.run_diff(ctx, ctx.source(source, ref, path), plan, output, what_if)
    sys.exit(1 if changed else 0)


@cli.command()
@source_options
@click.option("--once", is_flag=True, help="One pass, then exit (default: keep syncing).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@common_options
def sync(
    ctx: Ctx, source: str | None, ref: str | None, path: str | None, once: bool, dry_run: bool
) -> None:
    """Make the fleet match SOURCE; exit 1 if a rollout failed or was rolled back."""
    _setup_logging()
    from gitopsd.cli import commands

    ok = commands.run_sync(ctx, ctx.source(source, ref, path), once, dry_run)
    sys.exit(0 if ok else 1)


@cli.command()
@common_options
def run(ctx: Ctx) -> None:
    """The daemon: watch, webhook and poll; keep the fleet equal to Git."""
    _setup_logging()
    from gitopsd.cli.daemon_process import run_daemon_process

    if ctx.config_path is None:
        from gitopsd.errors import ConfigError

        raise ConfigError("gitopsd run needs --config FILE (see README: the config file)")
    # Ends the process itself (os._exit) once the daemon stopped: see daemon_process.py.
    run_daemon_process(ctx.config_path, ctx.state_dir_flag, ctx.agent_token_file, report_error)


@cli.command()
@click.option(
    "--output-docs",
    is_flag=True,
    help="Print instead the JSON Schemas of the --output json documents, by command "
    "(diff, status, history).",
)
@common_options
def schema(ctx: Ctx, output_docs: bool) -> None:
    """Print the JSON Schema of the manifests."""
    import json

    if output_docs:
        from gitopsd.cli.json_documents import output_json_schemas

        click.echo(json.dumps(output_json_schemas(), indent=2))
        return
    from gitopsd.manifest.schema import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2))


@cli.command()
@click.option("--listen", required=True, help="HOST:PORT to serve on.")
@click.option("--name", required=True, help="Node name (as in the EdgeNode manifest).")
@click.option("--region", required=True)
@click.option("--label", "labels", multiple=True, help="k=v, repeatable.")
@click.option("--data-dir", required=True, type=click.Path(path_type=str))
@click.option("--token-file", type=click.Path(path_type=str), default=None)
@click.option("--memory-mib", type=int, default=1024, help="Memory budget for loaded versions.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Serve N endpoints from one process (NAME-0..N-1, data dirs DATA_DIR/NAME-i), "
    "sharing one wasmtime engine; --listen then gives the host.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="With --count: endpoint i listens on BASE_PORT+i (default: --listen's port).",
)
@click.option(
    "--controller",
    default=None,
    metavar="URL",
    help="Dial out to the controller's [fleet] listen (https://HOST:PORT) and take its "
    "requests over that connection (EdgeNode spec.connect: dial-out); needs --token-file. "
    "--listen still serves invocations.",
)
@common_options
def agent(
    ctx: Ctx,
    listen: str,
    name: str,
    region: str,
    labels: tuple[str, ...],
    data_dir: str,
    token_file: str | None,
    memory_mib: int,
    count: int | None,
    base_port: int | None,
    controller: str | None,
) -> None:
    """Run an edge agent: hosts WASM functions with wasmtime behind HTTP."""
    _setup_logging()
    from gitopsd.cli.agent_command import run_agent_cmd

    run_agent_cmd(
        listen,
        name,
        region,
        labels,
        data_dir,
        token_file,
        memory_mib,
        count,
        base_port,
        controller,
    )


@cli.command(name="agent-token")
@click.argument("node")
@click.option("--address", default=None, help="NODE's spec.address, as its EdgeNode names it.")
@click.option("--dial-out", is_flag=True, help="A dial-out node's token (over its name alone).")
@common_options
def agent_token(ctx: Ctx, node: str, address: str | None, dial_out: bool) -> None:
    """Print NODE's own agent token, derived from the fleet secret: install it as the
    --token-file of NODE's agent (it is valid on that node, at that address, only)."""
    from gitopsd.cli.agent_token import agent_token as derive

    click.echo(derive(ctx, node, address, dial_out))


@cli.command()
@click.argument("function", required=False)
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@common_options
def status(ctx: Ctx, function: str | None, output: str) -> None:
    """Rollout state per function, and why it is waiting."""
    from gitopsd.cli import commands

    commands.run_status(ctx, function, output)


@cli.command()
@click.argument("function", required=False)
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@common_options
def history(ctx: Ctx, function: str | None, output: str) -> None:
    """Past rollouts: commit, version, strategy, outcome, duration."""
    from gitopsd.cli import commands

    commands.run_history(ctx, function, output)


@cli.command()
@click.argument("function")
@click.option("--to", "to_version", help="Version to go back to (default: the previous one).")
@common_options
def rollback(ctx: Ctx, function: str, to_version: str | None) -> None:
    """Roll FUNCTION back now and hold it there until Git changes it or `resume`."""
    _setup_logging()
    from gitopsd.cli import commands

    sys.exit(0 if commands.run_rollback(ctx, function, to_version) else 1)


def _control(action: str, help_text: str) -> None:
    @cli.command(name=action, help=help_text)
    @click.argument("function")
    @common_options
    def command(ctx: Ctx, function: str) -> None:
        from gitopsd.cli import commands

        click.echo(commands.run_control(ctx, action, function))


for _action, _help in (
    ("pause", "Pause FUNCTION's rollout before its next step."),
    ("resume", "Resume a paused or held FUNCTION."),
    ("promote", "Skip the current wait or pass the manual gate of FUNCTION's rollout."),
    ("abort", "Abort FUNCTION's rollout and roll its nodes back."),
    ("approve", "Approve FUNCTION's rollout waiting in DRAFT (approval: manual)."),
):
    _control(_action, _help)


@cli.command()
@click.option(
    "--example",
    type=click.Path(path_type=str),
    default=None,
    help="Manifest directory to use (default: manifests-example/).",
)
@click.option("--keep", is_flag=True, help="Keep the throwaway directory.")
@common_options
def demo(ctx: Ctx, example: str | None, keep: bool) -> None:
    """Everything local: agents, a Git repo, rollouts, an automatic rollback."""
    from pathlib import Path

    from gitopsd import log
    from gitopsd.demo.run import run_demo

    log.configure(level="warning")
    sys.exit(run_demo(Path(example) if example else None, keep))


cli.add_command(state_group)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
