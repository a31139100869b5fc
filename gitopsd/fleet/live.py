"""LiveState: what every agent says it runs, frozen for the diff."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

from gitopsd.fleet.wire import WireInventory

VersionLimits = tuple[float, int]
"""(memoryMiB, timeoutMs) a version is loaded with."""


@dataclass(frozen=True, slots=True, weakref_slot=True)
class LiveFunction:
    """One function on one node: loaded versions (version → sha256), traffic weights, and the
    limits of the versions whose agent reported them (version → (memoryMiB, timeoutMs))."""

    versions: Mapping[str, str]
    traffic: tuple[tuple[str, float], ...]
    limits: Mapping[str, VersionLimits] = field(default_factory=dict)

    @property
    def serving(self) -> str | None:
        """The version with the largest share of traffic (the node's 'current' version)."""
        weighted = [(pct, v) for v, pct in self.traffic if pct > 0]
        return max(weighted)[1] if weighted else None

    def percent(self, version: str) -> float:
        return sum(pct for v, pct in self.traffic if v == version)


@dataclass(frozen=True)
class LiveNode:
    """One agent's inventory."""

    name: str
    region: str
    generation: int
    memory_budget_mib: float | None
    memory_used_mib: float | None
    functions: Mapping[str, LiveFunction]

    @property
    def memory_free_mib(self) -> float | None:
        if self.memory_budget_mib is None or self.memory_used_mib is None:
            return None
        return self.memory_budget_mib - self.memory_used_mib

    @classmethod
    def from_wire(cls, name: str, inv: WireInventory) -> LiveNode:
        return cls(
            name=name,
            region=inv.region,
            generation=inv.generation,
            memory_budget_mib=inv.memory_budget_mib,
            memory_used_mib=inv.memory_used_mib,
            functions=_shared_table(
                {
                    sys.intern(fn): _shared(
                        tuple((v, info.sha256) for v, info in wf.versions.items()),
                        tuple((w.version, w.percent) for w in wf.traffic),
                        tuple(
                            (v, (info.limits.memory_mib, info.limits.timeout_ms))
                            for v, info in wf.versions.items()
                            if info.limits is not None
                        ),
                    )
                    for fn, wf in inv.functions.items()
                }
            ),
        )


class FunctionTable(dict[str, LiveFunction]):
    """A node's functions; nodes that run exactly the same share one table (read-only by
    convention), so `diff` can judge a whole region of identical nodes once."""


_TABLES: weakref.WeakValueDictionary[tuple[tuple[str, int], ...], FunctionTable] = (
    weakref.WeakValueDictionary()
)


def _shared_table(functions: dict[str, LiveFunction]) -> FunctionTable:
    # ids are stable keys: every LiveFunction named here is kept alive by the table itself.
    key = tuple((name, id(lf)) for name, lf in functions.items())
    found = _TABLES.get(key)
    if found is None:
        found = FunctionTable(functions)
        _TABLES[key] = found
    return found


# One LiveFunction per distinct (versions, traffic), shared by every node that runs exactly
# that: a function on 50 nodes is one object, not 50 (2,000 functions x 500 nodes would
# otherwise hold 100k of them, ~60 MB, and walk them all in every diff). They are frozen.
_SHARED: weakref.WeakValueDictionary[
    tuple[
        tuple[tuple[str, str], ...],
        tuple[tuple[str, float], ...],
        tuple[tuple[str, VersionLimits], ...],
    ],
    LiveFunction,
] = weakref.WeakValueDictionary()


def settled_function(
    version: str, sha256: str, limits: VersionLimits | None = None
) -> LiveFunction:
    """The shared LiveFunction of a node that runs `version` alone at 100 % (with `limits`,
    or with none reported): the state Git asks for once a rollout is over, so `diff` can
    test most pairs by identity (`is`)."""
    reported = ((version, limits),) if limits is not None else ()
    return _shared(((version, sha256),), ((version, 100.0),), reported)


def _shared(
    versions: tuple[tuple[str, str], ...],
    traffic: tuple[tuple[str, float], ...],
    limits: tuple[tuple[str, VersionLimits], ...] = (),
) -> LiveFunction:
    key = (versions, traffic, limits)
    found = _SHARED.get(key)
    if found is None:
        found = LiveFunction(versions=dict(versions), traffic=traffic, limits=dict(limits))
        _SHARED[key] = found
    return found


@dataclass(frozen=True)
class LiveState:
    """Inventories of every node asked; `errors` names the nodes that did not answer and why."""

    nodes: Mapping[str, LiveNode] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)

    def generations(self) -> tuple[tuple[str, int], ...]:
        """(node, generation) pairs: equal tuples mean nothing changed on any agent."""
        return tuple(sorted((n, node.generation) for n, node in self.nodes.items()))
