"""DesiredState: what one commit asks the fleet to run. Immutable, and the diff's left side."""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gitopsd.manifest.models import EdgeFunctionSpec, Limits
from gitopsd.manifest.modules import CompiledModule
from gitopsd.manifest.overrides import effective_limits

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class DesiredNode:
    """An EdgeNode manifest: where its agent listens. `source` is `file:line`."""

    name: str
    address: str
    region: str
    labels: Mapping[str, str]
    source: str


@dataclass(frozen=True)
class DesiredFunction:
    """An EdgeFunction manifest with its compiled module. `source` is `file:line`."""

    name: str
    spec: EdgeFunctionSpec
    module: CompiledModule
    source: str
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class DesiredState:
    """Nodes and functions of one commit (`commit` is "" outside Git), plus loader warnings."""

    commit: str
    nodes: Mapping[str, DesiredNode]
    functions: Mapping[str, DesiredFunction]
    warnings: tuple[str, ...] = ()
    # targets_of's answers by (regions, selector): functions with the same targeting share
    # one scan of the nodes (10k functions x 1k nodes would otherwise be 10M label checks).
    _targets: dict[object, tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def targets_of(self, function_name: str) -> tuple[str, ...]:
        """Names of the nodes `function_name` should run on, sorted by (region, name).

        A node matches when its region is in `targets.regions` (if given) and its labels
        contain every `targets.selector` pair (if given). Raises KeyError for an unknown function.
        """
        targets = self.functions[function_name].spec.targets
        key = (
            tuple(targets.regions) if targets.regions is not None else None,
            tuple(sorted((targets.selector or {}).items())),
        )
        found = self._targets.get(key)
        if found is not None:
            return found
        regions = set(targets.regions) if targets.regions is not None else None
        selector = targets.selector or {}
        chosen = [
            node
            for node in self.nodes.values()
            if (regions is None or node.region in regions)
            and all(node.labels.get(k) == v for k, v in selector.items())
        ]
        found = tuple(n.name for n in sorted(chosen, key=lambda n: (n.region, n.name)))
        self._targets[key] = found
        return found

    def limits_on(self, function_name: str, node_name: str) -> Limits:
        """The limits `function_name` runs under on `node_name`: `spec.limits` with the
        function's matching `overrides` applied (gitopsd/manifest/overrides.py)."""
        spec = self.functions[function_name].spec
        if not spec.overrides:
            return spec.limits
        node = self.nodes[node_name]
        return effective_limits(spec, node.region, node.labels)

    def fingerprint(self, function_name: str) -> str:
        """Hex digest of everything whose change needs a rollout of `function_name`.

        Covers version, module sha256, limits (per node where overrides change them),
        healthCheck, stickyHeader and the target node set; not the strategy, approval,
        selfHeal, autoRollback or dependsOn, which only change how a rollout runs. Stable
        across processes and versions of this code.
        """
        function = self.functions[function_name]
        spec = function.spec
        payload = {
            "fingerprint": 1,  # bump when the payload changes meaning
            "version": spec.version,
            "module": function.module.sha256,
            "limits": spec.limits.model_dump(mode="json", by_alias=True),
            "healthCheck": spec.health_check.model_dump(mode="json", by_alias=True),
            "stickyHeader": spec.sticky_header,
            "targets": sorted(self.targets_of(function_name)),
        }
        if spec.overrides:  # absent otherwise: fingerprints without overrides stay as they were
            targets = self.targets_of(function_name)
            payload["nodeLimits"] = {
                n: self.limits_on(function_name, n).model_dump(mode="json", by_alias=True)
                for n in targets
            }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def dependency_order(self) -> tuple[str, ...]:
        """Function names with every `dependsOn` entry before its dependents, ties by name.

        The loader refuses cycles and unknown names, so every function appears exactly once.
        """
        waiting = {
            name: {d for d in f.spec.depends_on if d in self.functions}
            for name, f in self.functions.items()
        }
        ready = [name for name, deps in waiting.items() if not deps]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            name = heapq.heappop(ready)
            order.append(name)
            for other, deps in waiting.items():
                if name in deps:
                    deps.discard(name)
                    if not deps:
                        heapq.heappush(ready, other)
        return tuple(order)
