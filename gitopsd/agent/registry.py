"""What the agent has loaded: functions, versions, traffic, generation. In memory, no I/O.

Every mutation validates first and changes nothing when it refuses, returns whether the
state changed, and bumps `generation` when it did, so a controller can tell "nothing
changed" from one integer.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gitopsd.agent import router
from gitopsd.agent.api import (
    BUCKET_KEY_RE,
    DEFAULT_STICKY_HEADER,
    HEADER_RE,
    NAME_RE,
    SHA256_RE,
    HealthCheck,
    Limits,
    RuleBody,
    StoredFunction,
    StoredState,
    StoredVersion,
    WeightBody,
)
from gitopsd.agent.errors import AgentRequestError, Conflict, NotFound
from gitopsd.agent.metrics import Series, VersionMetrics
from gitopsd.agent.runtime import Prepared


@dataclass(eq=False)
class Version:
    """One loaded version of a function."""

    name: str
    sha256: str
    limits: Limits
    health_check: HealthCheck
    loaded_at: float
    prepared: Prepared
    metrics: VersionMetrics = field(default_factory=VersionMetrics)

    def to_json(self) -> dict[str, Any]:
        """The version's entry in the inventory and in state.json."""
        return StoredVersion(
            sha256=self.sha256,
            limits=self.limits,
            health_check=self.health_check,
            loaded_at=self.loaded_at,
        ).model_dump(by_alias=True)


@dataclass(eq=False)
class Function:
    """A function: its versions and how traffic is split between them."""

    name: str
    versions: dict[str, Version] = field(default_factory=dict)
    traffic: tuple[router.Weight, ...] = ()
    rules: tuple[router.Rule, ...] = ()
    sticky_header: str = DEFAULT_STICKY_HEADER
    # Keys the sticky buckets (router.sticky_bucket): random until the controller sends the
    # function's own with its traffic; persisted, never shown in the inventory or metrics.
    bucket_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def percent(self, version: str) -> float:
        """The traffic weight of `version` (0 when it has none)."""
        return sum(w.percent for w in self.traffic if w.version == version)

    def to_json(self) -> dict[str, Any]:
        """The function's entry in the inventory and in state.json."""
        return {
            "versions": {name: v.to_json() for name, v in self.versions.items()},
            "traffic": [{"version": w.version, "percent": _plain(w.percent)} for w in self.traffic],
            "rules": [
                {"header": r.header, "equals": r.equals, "version": r.version} for r in self.rules
            ],
            "stickyHeader": self.sticky_header,
        }

    def to_state(self) -> dict[str, Any]:
        """The function's entry in state.json: the inventory's, plus its bucket key."""
        return {**self.to_json(), "bucketKey": self.bucket_key.hex()}


def traffic_problem(
    function: str,
    versions: Iterable[str],
    weights: Sequence[WeightBody],
    rules: Sequence[RuleBody],
) -> str | None:
    """Why these weights and rules cannot be the traffic of `function` with `versions`
    loaded (None when they can)."""
    total = math.fsum(w.percent for w in weights)
    if not math.isclose(total, 100.0, abs_tol=1e-6):
        return f"weights sum to {_plain(total)} %, they must sum to 100"
    known = set(versions)
    named = [w.version for w in weights] + [r.version for r in rules]
    missing = sorted({v for v in named if v not in known})
    if missing:
        return (
            f"function {function!r} has no loaded version {', '.join(map(repr, missing))}: "
            "load it with PUT /functions/{fn}/versions/{version} first"
        )
    if len({w.version for w in weights}) != len(weights):
        return "weights name a version twice: list each version once"
    return None


def stored_function_problem(name: str, stored: StoredFunction) -> str | None:
    """Why a function read from state.json must not be restored (None when it may): the
    checks a control request would have passed, since the file may have been edited."""
    if not NAME_RE.match(name):
        return f"function name {name!r} is not one the agent accepts"
    if not HEADER_RE.match(stored.sticky_header) or len(stored.sticky_header) > 256:
        return f"sticky header {stored.sticky_header!r} is not a header name"
    if stored.bucket_key is not None and not BUCKET_KEY_RE.match(stored.bucket_key):
        return "bucket key is not 64 lowercase hex digits"
    return traffic_problem(name, stored.versions, stored.traffic, stored.rules)


def stored_version_problem(name: str, stored: StoredVersion) -> str | None:
    """Why a version read from state.json must not be restored (None when it may); its
    module is checked against its digest when it is loaded."""
    if not NAME_RE.match(name):
        return f"version name {name!r} is not one the agent accepts"
    if not SHA256_RE.match(stored.sha256):
        return f"sha256 {stored.sha256!r} is not 64 lowercase hex digits"
    return None


def fits_budget(after_mib: int, budget_mib: int) -> bool:
    """The agent's memory rule for loading a version, at a request and at restore alike: the
    memory limits of the loaded versions after the load (`after_mib`) stay within
    `--memory-mib`. Since restore obeys it too, what is loaded never exceeds the budget, so
    loading the same version again or with a smaller limit always fits."""
    return after_mib <= budget_mib


def _plain(number: float) -> float | int:
    """100.0 → 100, so the JSON reads as the controller wrote it."""
    return int(number) if float(number).is_integer() else number


class Registry:
    """The functions of one agent and its generation counter."""

    def __init__(self, generation: int = 0) -> None:
        self.generation = generation
        self.functions: dict[str, Function] = {}
        self.on_change: Callable[[], None] | None = None  # told after every bump

    def _changed(self) -> None:
        self.generation += 1
        if self.on_change is not None:
            self.on_change()

    def function(self, name: str) -> Function:
        """The function called `name`, or NotFound."""
        found = self.functions.get(name)
        if found is None:
            raise NotFound(f"unknown function {name!r}: load a version of it first")
        return found

    def version(self, function: str, version: str) -> Version:
        """The loaded `version` of `function`, or NotFound."""
        found = self.function(function).versions.get(version)
        if found is None:
            raise NotFound(f"function {function!r} has no loaded version {version!r}")
        return found

    def load(
        self,
        function: str,
        version: Version,
        sticky_header: str | None = None,
    ) -> bool:
        """Add or replace a version. The first version of a function gets 100 % of traffic.

        The same sha256 and settings again is a no-op; the same sha256 with other limits or
        health check updates them in place (metrics kept); another sha256 replaces the
        version (metrics restart).
        """
        fn = self.functions.get(function)
        created = fn is None
        if fn is None:
            fn = Function(function)
        changed = created
        old = fn.versions.get(version.name)
        if old is None or old.sha256 != version.sha256:
            fn.versions[version.name] = version
            changed = True
        elif (old.limits, old.health_check) != (version.limits, version.health_check):
            old.limits, old.health_check = version.limits, version.health_check
            changed = True
        if sticky_header is not None and sticky_header != fn.sticky_header:
            fn.sticky_header = sticky_header
            changed = True
        if created:
            fn.traffic = (router.Weight(version.name, 100.0),)
            self.functions[function] = fn
        if changed:
            self._changed()
        return changed

    def delete_version(self, function: str, version: str) -> None:
        """Unload a version; the last one takes its function with it.

        Refused (409) while the version has a traffic weight and other versions are loaded:
        the controller moves traffic first. Rules naming the version are dropped.
        """
        fn = self.function(function)
        self.version(function, version)
        if len(fn.versions) > 1 and fn.percent(version) > 0:
            raise Conflict(
                f"version {version!r} of {function!r} still has {_plain(fn.percent(version))} % "
                "of traffic: move it to other versions with PUT .../traffic first"
            )
        if len(fn.versions) == 1:
            del self.functions[function]
        else:
            del fn.versions[version]
            fn.traffic = tuple(w for w in fn.traffic if w.version != version)
            fn.rules = tuple(r for r in fn.rules if r.version != version)
        self._changed()

    def delete_function(self, function: str) -> None:
        """Unload a function and all its versions."""
        self.function(function)
        del self.functions[function]
        self._changed()

    def set_traffic(
        self,
        function: str,
        weights: Sequence[WeightBody],
        rules: Sequence[RuleBody],
        sticky_header: str | None,
        bucket_key: bytes | None = None,
    ) -> bool:
        """Replace the weights and rules; keep the sticky header and the bucket key unless
        one is given."""
        fn = self.function(function)
        problem = traffic_problem(function, fn.versions, weights, rules)
        if problem is not None:
            raise AgentRequestError(problem)
        traffic = tuple(router.Weight(w.version, w.percent) for w in weights)
        new_rules = tuple(router.Rule(r.header, r.equals, r.version) for r in rules)
        header = sticky_header or fn.sticky_header
        key = bucket_key or fn.bucket_key
        now = (fn.traffic, fn.rules, fn.sticky_header, fn.bucket_key)
        if (traffic, new_rules, header, key) == now:
            return False
        fn.traffic, fn.rules, fn.sticky_header, fn.bucket_key = traffic, new_rules, header, key
        self._changed()
        return True

    def route(
        self, function: str, headers: Mapping[str, str], rng: random.Random | None = None
    ) -> Version | None:
        """The version serving a request to `function` (NotFound if unknown; None if no
        traffic weight covers the request)."""
        fn = self.function(function)
        name = router.route(
            fn.name, fn.traffic, fn.rules, fn.sticky_header, headers, fn.bucket_key, rng
        )
        return fn.versions.get(name) if name is not None else None

    def memory_used_mib(self) -> int:
        """Sum of the memory limits of every loaded version."""
        return sum(
            v.limits.memory_mib for fn in self.functions.values() for v in fn.versions.values()
        )

    def memory_after_load(self, function: str, version: str, memory_mib: int) -> int:
        """`memory_used_mib()` once `version` of `function` is loaded with `memory_mib`
        (replacing a loaded version of that name frees its own limit)."""
        old = self.functions.get(function)
        replaced = old.versions.get(version) if old is not None else None
        freed = replaced.limits.memory_mib if replaced is not None else 0
        return self.memory_used_mib() - freed + memory_mib

    def functions_json(self) -> dict[str, Any]:
        """The `functions` object of the inventory (state.json adds each bucket key)."""
        return {name: fn.to_json() for name, fn in sorted(self.functions.items())}

    def state(self) -> StoredState:
        """Everything that must survive a restart."""
        functions = {name: fn.to_state() for name, fn in sorted(self.functions.items())}
        return StoredState.model_validate(
            {"format": 1, "generation": self.generation, "functions": functions}
        )

    def series(self) -> Iterator[Series]:
        """Metrics of every loaded version, for Prometheus."""
        for fname, fn in sorted(self.functions.items()):
            for vname, version in sorted(fn.versions.items()):
                yield Series(fname, vname, version.metrics, fn.percent(vname))

    def restore(self, function: str, stored: StoredFunction, versions: dict[str, Version]) -> None:
        """Put back a function read from state.json, with the versions that could be loaded.

        Traffic and rules naming a version that could not be loaded are dropped; the caller
        bumps the generation when anything was dropped.
        """
        fn = Function(function, dict(versions), sticky_header=stored.sticky_header)
        if stored.bucket_key is not None:  # else a random one, until the controller's
            fn.bucket_key = bytes.fromhex(stored.bucket_key)
        fn.traffic = tuple(
            router.Weight(w.version, w.percent) for w in stored.traffic if w.version in versions
        )
        fn.rules = tuple(
            router.Rule(r.header, r.equals, r.version)
            for r in stored.rules
            if r.version in versions
        )
        if fn.versions:
            self.functions[function] = fn
