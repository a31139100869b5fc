"""`gitopsd rollback FUNCTION [--to VERSION]`: an immediate rollback chosen by an operator.

It is a blue-green rollout to an earlier version, run by the same engine (so it is journaled
and survives a crash): when the earlier version is still loaded (the retained blue), the
deploy step is a no-op and the switch is instant; otherwise its module comes from the store.
Afterwards the function is held, so the next sync does not undo the operator's decision.
"""

from __future__ import annotations

from collections import Counter

from gitopsd.clock import Clock
from gitopsd.errors import ConfigError
from gitopsd.fleet.client import AgentClient
from gitopsd.rollout.engine import Engine, EventSink
from gitopsd.rollout.hold import hold
from gitopsd.rollout.spec import RolloutSpec, TargetNode
from gitopsd.rollout.steps import RolloutState
from gitopsd.store.protocol import Store
from gitopsd.store.rows import RolloutRow


def choose_target(rows: list[RolloutRow], serving: str | None, to: str | None) -> RolloutRow:
    """The rollout whose version to go back to: `to`, else the newest completed other one."""
    for row in rows:
        if row.state != RolloutState.COMPLETED:
            continue
        if (to is not None and row.version == to) or (to is None and row.version != serving):
            return row
    if to is not None:
        raise ConfigError(f"version {to} was never completed here: nothing to roll back to")
    raise ConfigError(f"no earlier completed version than {serving} to roll back to")


async def rollback_function(
    store: Store,
    client: AgentClient,
    clock: Clock,
    function: str,
    to: str | None = None,
    on_event: EventSink | None = None,
) -> RolloutRow:
    """Roll `function` back on every node it runs on and hold it there."""
    rows = store.rollouts(function)
    if not rows:
        raise ConfigError(f"{function}: no rollout recorded in this state dir")
    latest = rows[0]
    nodes = {n["name"]: n for n in latest.context["nodes"]}
    client.addresses.update({name: n["address"] for name, n in nodes.items()})
    live = await client.live_state(nodes)
    per_node = {
        name: (inv.functions[function].serving if function in inv.functions else None)
        for name, inv in live.nodes.items()
    }
    common = Counter(v for v in per_node.values() if v).most_common(1)
    serving = common[0][0] if common else None
    target = choose_target(rows, serving, to)
    if store.module(str(target.context["sha256"])) is None:
        raise ConfigError(f"the module of {function} {target.version} is not in the store")
    base = RolloutSpec.from_json(target.context)
    # The limits spec.overrides gave a node in that rollout come back with its version.
    own_limits = {n.name: n.limits for n in base.nodes}
    spec = RolloutSpec(
        function=function,
        version=target.version,
        commit=latest.commit,
        sha256=base.sha256,
        strategy={"type": "blue-green", "keepBlueEnvironment": False},
        nodes=tuple(
            TargetNode(
                name,
                n["region"],
                n["address"],
                per_node.get(name),
                None,
                limits=own_limits.get(name),
            )
            for name, n in sorted(nodes.items())
        ),
        health=base.health,
        memory_mib=base.memory_mib,
        timeout_ms=base.timeout_ms,
        sticky_header=base.sticky_header,
    )
    engine = Engine(store, client, clock, on_event)
    row = await engine.run(engine.create(spec))
    if row.state == RolloutState.COMPLETED:
        reason = (
            f"rolled back to {target.version} by an operator; held until Git changes "
            f"{function} or `gitopsd resume {function}`"
        )
        hold(
            store, function, clock.now(), reason, f"{latest.version} {latest.context.get('sha256')}"
        )
    return row
