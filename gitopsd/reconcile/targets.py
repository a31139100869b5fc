"""Target building: the nodes a rollout goes to, with what each serves before it, and the
RolloutSpec of a function of the desired state. The Python API's plans use `target_node`
too, so a node is described the same way wherever a rollout starts."""

from __future__ import annotations

from gitopsd.diff import Action, Change
from gitopsd.fleet.live import LiveFunction, LiveNode, LiveState
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.rollout.judge import JudgeSettings
from gitopsd.rollout.spec import HealthSpec, RolloutSpec, TargetNode


def previous_version(lf: LiveFunction, new: str) -> str | None:
    """The version the rollout starts from on a node: the most-served one other than `new`
    (a feature flag at 60 % still has its old version serving the other 40 %)."""
    others = [(pct, v) for v, pct in lf.traffic if v != new and pct > 0]
    if others:
        return max(others)[1]
    return None


def limits_only_nodes(change: Change | None) -> tuple[str, ...] | None:
    """The nodes that differ when each of them differs only in its limits (a change to
    spec.limits or spec.overrides), else None: such a rollout goes to those nodes only."""
    if change is None:
        return None
    pending = [n for n in change.nodes if n.action is not Action.OK]
    if not pending or not all(n.only_limits for n in pending):
        return None
    return tuple(n.node for n in pending)


def target_node(
    function: str,
    version: str,
    name: str,
    region: str,
    address: str,
    inv: LiveNode | None,
    limits: tuple[float, int] | None = None,
) -> TargetNode:
    """Node `name` as a target of a rollout of `function` `version`, from its inventory
    (`inv` None: it did not answer); `region` empty: the one the agent reports."""
    lf = inv.functions.get(function) if inv else None
    return TargetNode(
        name=name,
        region=region or (inv.region if inv else ""),
        address=address,
        old_version=previous_version(lf, version) if lf else None,
        memory_free_mib=inv.memory_free_mib if inv else None,
        serving_new=lf is not None and lf.percent(version) >= 100,
        unseen=inv is None,
        limits=limits,
    )


def build_spec(
    fn: DesiredFunction, desired: DesiredState, live: LiveState, change: Change | None = None
) -> RolloutSpec:
    """A RolloutSpec for `fn` on its target nodes, with each node's current version and,
    where spec.overrides change them, its own limits. Given the diff's `change`, a change of
    limits alone rolls out to the nodes whose limits differ, and the others are left alone."""
    only = limits_only_nodes(change)
    base = (float(fn.spec.limits.memory_mib), int(fn.spec.limits.timeout_ms))
    nodes = []
    for name in desired.targets_of(fn.name):
        if only is not None and name not in only:
            continue
        node = desired.nodes[name]
        limits = desired.limits_on(fn.name, name)
        own = (float(limits.memory_mib), int(limits.timeout_ms))
        nodes.append(
            target_node(
                fn.name,
                fn.spec.version,
                name,
                node.region,
                node.address,
                live.nodes.get(name),
                own if own != base else None,
            )
        )
    spec = fn.spec
    hc = spec.health_check
    return RolloutSpec(
        function=fn.name,
        version=spec.version,
        commit=desired.commit,
        sha256=fn.module.sha256,
        strategy=spec.strategy.model_dump(mode="json", by_alias=True),
        nodes=tuple(nodes),
        health=HealthSpec(
            hc.function, hc.expect, hc.timeout, hc.success_threshold, hc.failure_threshold
        ),
        memory_mib=float(spec.limits.memory_mib),
        timeout_ms=int(spec.limits.timeout_ms),
        sticky_header=spec.sticky_header,
        triggers=tuple((t.metric, float(t.threshold)) for t in spec.auto_rollback.triggers),
        approval=spec.approval,
        analysis=JudgeSettings(
            baseline=spec.auto_rollback.analysis.baseline,
            confidence=spec.auto_rollback.analysis.confidence,
            minimum_samples=spec.auto_rollback.analysis.minimum_samples,
            max_extension=spec.auto_rollback.analysis.max_extension,
        ),
        deploy_windows=spec.deploy_windows.model_dump(mode="json", by_alias=True)
        if spec.deploy_windows
        else None,
    )
