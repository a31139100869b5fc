"""Per-node overrides of an EdgeFunction (`spec.overrides`): which apply to a node, and the
limits a node gets once they have.

Every override whose `regions` and `selector` match a node applies to it, in the order they
are written; a later override wins field by field (an override that sets only `timeoutMs`
keeps the `memoryMiB` an earlier one set). Overrides only ever narrow within the function's
targets: they never add or remove a node.
"""

from __future__ import annotations

from collections.abc import Mapping

from gitopsd.manifest.models import EdgeFunctionSpec, Limits, Override


def override_matches(override: Override, region: str, labels: Mapping[str, str]) -> bool:
    """True when a node in `region` with `labels` is one `override` is for."""
    if override.regions is not None and region not in override.regions:
        return False
    return all(labels.get(k) == v for k, v in (override.selector or {}).items())


def effective_limits(spec: EdgeFunctionSpec, region: str, labels: Mapping[str, str]) -> Limits:
    """`spec.limits` with every matching override applied in order, field by field."""
    limits = spec.limits
    for override in spec.overrides:
        if override_matches(override, region, labels):
            # model_copy does not validate: the values were validated by LimitsOverride,
            # whose bounds are those of Limits.
            update = override.limits.model_dump(by_alias=False, exclude_none=True)
            limits = limits.model_copy(update=update)
    return limits


def dead_parts(
    spec: EdgeFunctionSpec, override: Override
) -> list[tuple[tuple[str | int, ...], str]]:
    """The parts of `override` that can match none of the function's targets whatever the
    nodes are, as (location inside the override, why): a region outside `targets.regions`,
    a selector label that `targets.selector` fixes to another value."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    targets = spec.targets
    if targets.regions is not None:
        for index, region in enumerate(override.regions or ()):
            if region not in targets.regions:
                found.append(
                    (
                        ("regions", index),
                        f"region {region!r} is outside targets.regions "
                        f"({', '.join(targets.regions)}): no target node can be in it",
                    )
                )
    for key, value in (override.selector or {}).items():
        wanted = (targets.selector or {}).get(key)
        if wanted is not None and wanted != value:
            found.append(
                (
                    ("selector", key),
                    f"selector {key}={value} contradicts targets.selector {key}={wanted}: "
                    "no target node can match it",
                )
            )
    return found
