"""The tests' view of a local agent fleet (see gitopsd.demo.local_fleet).

`TOKEN` is the fleet secret (what `fleet.token_file` holds, and what a controller is given);
each agent holds only its own token, `fleet.token(name)`, derived from it over the node's
name and address (gitopsd/fleet/tokens.py)."""

from gitopsd.demo.local_fleet import TOKEN, LocalFleet, running_fleet

Fleet = LocalFleet

__all__ = ["TOKEN", "Fleet", "running_fleet"]
