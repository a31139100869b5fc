"""`gitopsd agent-token NODE --address URL | --dial-out`: the token to install on NODE."""

from __future__ import annotations

import re

import click

from gitopsd.cli.context import Ctx
from gitopsd.errors import ConfigError
from gitopsd.fleet.tokens import dial_out_token, excerpt, node_token
from gitopsd.manifest.models import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


def agent_token(ctx: Ctx, node: str, address: str | None, dial_out: bool) -> str:
    """NODE's own token, derived from the fleet secret (fleet/tokens.py has the formula).

    Printed whatever `[fleet] token_mode` says: the upgrade from one shared token installs
    these while the controller still runs in shared mode (docs/operations.md)."""
    if len(node) > 63 or not _NAME.match(node):
        raise ConfigError(
            f"NODE {excerpt(node, 80)!r} is not a node name: give the EdgeNode's "
            "metadata.name (a lowercase DNS label)"
        )
    if dial_out == (address is not None):
        raise ConfigError(
            "give exactly one of --address URL (the node's spec.address) or --dial-out"
        )
    secret = ctx.fleet_secret()
    if ctx.config.fleet.token_mode == "shared":
        click.echo(
            'note: [fleet] token_mode = "shared": the controller sends the shared token, '
            'not this one, until token_mode = "per-node"',
            err=True,
        )
    if address is not None:
        return node_token(secret, node, address)
    return dial_out_token(secret, node)
