"""The manifest kinds of `apiVersion: gitopsd/v1`, as pydantic models.

Field names are snake_case in Python and camelCase in YAML (the aliases); the loader accepts
only the aliases. Every model is strict (no coercion: YAML already typed each scalar), frozen,
and refuses unknown fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    model_validator,
)

from gitopsd.manifest.base import ManifestModel
from gitopsd.manifest.deploy_windows import DeployWindows
from gitopsd.manifest.durations import Duration
from gitopsd.manifest.strategy_options import MetricName, RollingOptions
from gitopsd.manifest.strategy_plugins import StrategySpec

API_VERSION = "gitopsd/v1"
KINDS = ("EdgeNode", "EdgeFunction", "DeployPolicy")

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# The version travels in the X-Gitopsd-Version response header: keep it header-safe.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_HEADER_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _check_name(value: str) -> str:
    if len(value) > 63 or not _NAME.match(value):
        raise ValueError(
            f"invalid name {value!r}: use a lowercase DNS label (a-z, 0-9 and '-', "
            "at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


def _check_label_key(value: str) -> str:
    if len(value) > 63 or not _LABEL_KEY.match(value):
        raise ValueError(
            f"invalid label key {value!r}: use letters, digits, '-', '_', '.', '/' "
            "(at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


def _check_label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"invalid label value {value!r}: use letters, digits, '-', '_', '.' "
            "(at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


def _version_is_text(value: Any) -> Any:
    # YAML reads `version: 1.10` as the float 1.1: say so instead of "not a valid string".
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f'version must be a string: quote it, as in "{value}"')
    return value


def _check_version(value: str) -> str:
    if not _VERSION.match(value):
        raise ValueError(
            f"invalid version {value!r}: use letters, digits, '.', '_', '+' and '-' "
            '(like "1.2.0")'
        )
    return value


def _check_header(value: str) -> str:
    if not _HEADER_TOKEN.match(value):
        raise ValueError(f"invalid HTTP header name {value!r}")
    return value


def _check_sha256(value: str) -> str:
    if not _HEX64.match(value):
        raise ValueError("sha256 must be 64 hexadecimal digits")
    return value.lower()


def _check_address(value: str) -> str:
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ValueError(f"invalid address {value!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid address {value!r}: use an http:// or https:// URL with a host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(
            f"invalid address {value!r}: no credentials, query or fragment "
            "(the agent token comes from the fleet config)"
        )
    del port
    return value.rstrip("/")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def agent_identity(address: str) -> str:
    """The agent an address reaches, written one way: scheme and host are case-insensitive
    and a scheme's default port may be left out, so `HTTP://Edge-1:80` is `http://edge-1`."""
    parts = urlsplit(address)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}{parts.path.rstrip('/')}"


Name = Annotated[
    str,
    AfterValidator(_check_name),
    Field(json_schema_extra={"pattern": NAME_PATTERN, "maxLength": 63}),
]
"""A lowercase DNS label, the form of every node, function and region name."""

LabelKey = Annotated[
    str, AfterValidator(_check_label_key), Field(json_schema_extra={"maxLength": 63})
]
LabelValue = Annotated[
    str, AfterValidator(_check_label_value), Field(json_schema_extra={"maxLength": 63})
]
Labels = dict[LabelKey, LabelValue]


class Metadata(ManifestModel):
    """`metadata`: the object's name (unique per kind) and free-form labels."""

    name: Name = Field(
        description="Unique among the objects of its kind: a lowercase DNS label "
        "(a-z, 0-9 and '-', at most 63 characters)."
    )
    labels: Labels = Field(
        default_factory=dict,
        description="Free-form key/value labels; an EdgeFunction's `targets.selector` matches "
        "the labels of EdgeNodes.",
    )


DIAL_OUT_SCHEME = "dial-out://"


def dial_out_address(name: str) -> str:
    """The address a dial-out node is known by inside gitopsd (the fleet client sends its
    requests through the controller's tunnel listener, fleet/tunnel.py)."""
    return f"{DIAL_OUT_SCHEME}{name}"


def is_dial_out(address: str) -> bool:
    """True for the address of a dial-out node (`dial_out_address`)."""
    return address.startswith(DIAL_OUT_SCHEME)


class EdgeNodeSpec(ManifestModel):
    """`spec` of an EdgeNode: where its agent listens (or that it dials out to the
    controller) and which region it serves."""

    address: Annotated[str, AfterValidator(_check_address)] | None = Field(
        None,
        description="Base URL of the node's agent, http:// or https://, with no credentials, "
        "query or fragment; two nodes may not share an address. Give either this or "
        "`connect: dial-out`.",
    )
    connect: Literal["dial-out"] | None = Field(
        None,
        description="`dial-out`: the node's agent connects to the controller's "
        "`[fleet] listen` (`gitopsd agent --controller URL`), for nodes behind NAT or a "
        "firewall; the node then has no `address`.",
    )
    region: Name = Field(
        description="Region the node serves; matched by `targets.regions` and ordered by the "
        "regional strategy."
    )

    @model_validator(mode="after")
    def _address_or_dial_out(self) -> EdgeNodeSpec:
        if self.address is not None and self.connect is not None:
            raise ValueError(
                "give either address (the controller connects to the agent) or "
                "connect: dial-out (the agent connects to the controller), not both"
            )
        if self.address is None and self.connect is None:
            raise ValueError(
                "missing address: give the agent's address, or connect: dial-out for an agent "
                "that connects to the controller"
            )
        return self

    def agent_address(self, name: str) -> str:
        """The address the fleet client uses for node `name` (see `dial_out_address`)."""
        return self.address if self.address is not None else dial_out_address(name)


class Targets(ManifestModel):
    """Which nodes run the function: those in `regions` whose labels match `selector`.

    Both absent: every node.
    """

    regions: Annotated[tuple[Name, ...], Field(min_length=1, strict=False)] | None = Field(
        None, description="Only nodes in one of these regions. Absent: any region."
    )
    selector: Labels | None = Field(
        None,
        description="Only nodes whose labels include every key/value pair given. "
        "Absent: any labels.",
    )


class HealthCheck(ManifestModel):
    """How a deployed version is judged healthy: call `function`, expect `expect` on stdout."""

    function: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        "health_check",
        description="Exported function the agent calls to check a version; the module must "
        "export it.",
    )
    expect: Annotated[str, Field(max_length=4096)] = Field(
        "OK",
        description="What the health function must write to stdout (compared after stripping "
        "surrounding whitespace).",
    )
    timeout: Annotated[Duration, Field(gt=0)] = Field(
        5.0,
        description="Time limit of one health-check call (the rolling and blue-green "
        "`healthCheckTimeout` options replace it).",
    )
    success_threshold: Annotated[int, Field(ge=1, le=100)] = Field(
        1,
        description="Passing calls in a row needed before a node counts as healthy (the "
        "canary's `successThreshold` replaces it).",
    )
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = Field(
        3,
        description="Failed calls after which the node fails its health check (the canary's "
        "`failureThreshold` replaces it).",
    )


class Limits(ManifestModel):
    """Per-call resource limits enforced by the agent."""

    memory_mib: Annotated[int, Field(ge=1, le=4096)] = Field(
        64,
        alias="memoryMiB",
        description="Cap on the linear memory of one call, in MiB; also what the blue-green "
        "capacity check needs free on every node.",
    )
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = Field(
        100,
        description="Wall-clock limit of one call in milliseconds; a call over it is stopped "
        "and answers 504.",
    )


class LimitsOverride(ManifestModel):
    """Some fields of `limits` for the nodes an override matches; the others keep their value."""

    memory_mib: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        None,
        alias="memoryMiB",
        description="`limits.memoryMiB` on the matching nodes (also what the blue-green "
        "capacity check needs free on them).",
    )
    timeout_ms: Annotated[int, Field(ge=1, le=60_000)] | None = Field(
        None, description="`limits.timeoutMs` on the matching nodes."
    )

    @model_validator(mode="after")
    def _something(self) -> LimitsOverride:
        if self.memory_mib is None and self.timeout_ms is None:
            raise ValueError("an override's limits must set memoryMiB, timeoutMs or both")
        return self


# Fields of spec that describe the function as a whole: a per-node value would make no sense
# (a strategy orders all the target nodes of one rollout; one version, one module).
_NOT_PER_NODE = (
    "strategy",
    "version",
    "module",
    "sha256",
    "targets",
    "healthCheck",
    "autoRollback",
    "deployWindows",
    "approval",
    "selfHeal",
    "stickyHeader",
    "dependsOn",
    "overrides",
)


class Override(ManifestModel):
    """Other `limits` for the target nodes in `regions` whose labels match `selector` (give
    at least one of the two). Every override that matches a node applies, in the order
    written, a later one winning field by field. Only `limits` can be overridden: the
    strategy, version, module, health check and the other fields describe the function as a
    whole and are refused here. An override that can never match (a region outside
    `targets.regions`, a label that `targets.selector` sets to another value) is a problem;
    one that matches no target node today is a warning, since such nodes may join later.
    Overrides never add or remove target nodes."""

    regions: Annotated[tuple[Name, ...], Field(min_length=1, strict=False)] | None = Field(
        None, description="Only target nodes in one of these regions. Absent: any region."
    )
    selector: Labels | None = Field(
        None,
        description="Only target nodes whose labels include every key/value pair given. "
        "Absent: any labels.",
    )
    limits: LimitsOverride = Field(
        description="The limits these nodes get instead of `spec.limits`, field by field."
    )

    @model_validator(mode="before")
    @classmethod
    def _per_node_fields_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _NOT_PER_NODE:
                if key in data:
                    raise ValueError(
                        f"{key} applies to the function as a whole and cannot be overridden "
                        "per node: an override sets only limits"
                    )
        return data

    @model_validator(mode="after")
    def _narrows(self) -> Override:
        if not self.regions and not self.selector:
            raise ValueError(
                "an override needs regions or a non-empty selector: for every node, "
                "change spec.limits instead"
            )
        return self


class RollbackTrigger(ManifestModel):
    """Roll back when `metric` of the new version goes above `threshold`."""

    metric: MetricName = Field(
        description="Metric of the new version from the agents: error_rate, crash_rate and "
        "timeout_rate in % of requests, avg/p95/p99_latency_ms, memory_mib (peak)."
    )
    threshold: Annotated[float, Field(ge=0)] = Field(
        description="The analysis fails when the metric is above this value (% for the rates, "
        "milliseconds for latencies, MiB for memory_mib)."
    )


class Analysis(ManifestModel):
    """How an analysis step judges the new version (docs/strategies.md, "How a version is
    judged")."""

    baseline: Literal["concurrent", "thresholds"] = Field(
        "concurrent",
        description="`concurrent`: compare the new version with the old one serving at the "
        "same time on the same nodes (where a canary or feature flag splits a node's "
        "traffic), with sequential tests of latency ranks, latency tail and error rate; the "
        "triggers stay hard limits. `thresholds`: the triggers alone, on every look.",
    )
    confidence: Annotated[float, Field(ge=0.8, le=0.9999)] = Field(
        0.99,
        description="How sure the concurrent judge must be before it rolls back: 1 - "
        "confidence bounds the share of healthy versions rolled back over all looks of a "
        "rollout.",
    )
    minimum_samples: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        200,
        description="Requests needed on each side (new and old) before the comparison, or a "
        "latency trigger, gives a verdict; fewer make the analysis inconclusive.",
    )
    max_extension: Annotated[Duration, Field(ge=0, le=86_400)] = Field(
        1800.0,
        description="How much longer, in all, a rollout may wait when an analysis is "
        "inconclusive (too few requests, or a difference not yet proven); spent in up to ten "
        "extra looks. Once spent, an inconclusive analysis passes on the hard limits. "
        "Extensions are taken by the canary strategy.",
    )


class AutoRollback(ManifestModel):
    """Metric gates checked while a rollout runs; any trigger rolls the function back."""

    triggers: Annotated[tuple[RollbackTrigger, ...], Field(strict=False)] = Field(
        (),
        description="Checked at every analysis step of a rollout; a breach fails the "
        "analysis and the strategy rolls back. Empty: no metric gate.",
    )
    analysis: Analysis = Field(
        default_factory=Analysis,
        description="How the analysis judges the new version: against the old one serving "
        "beside it (default) or by the triggers alone.",
    )


class EdgeFunctionSpec(ManifestModel):
    """`spec` of an EdgeFunction: the module, where it runs and how a new version rolls out."""

    version: Annotated[
        str,
        BeforeValidator(_version_is_text),
        Field(min_length=1, max_length=128),
        AfterValidator(_check_version),
    ] = Field(
        description="Version of this release (quote it: \"1.10\"); letters, digits, '.', "
        "'_', '+' and '-'. A new version (or module, limits, overrides, healthCheck, "
        "stickyHeader, targets) starts a rollout."
    )
    module: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="Path of the .wasm or .wat file, relative to this manifest file; "
        "must stay inside the synced path."
    )
    sha256: (
        Annotated[
            str, AfterValidator(_check_sha256), Field(json_schema_extra={"pattern": _HEX64.pattern})
        ]
        | None
    ) = Field(None, description="Optional pin: hex sha256 of the compiled module bytes.")
    targets: Targets = Field(
        default_factory=Targets, description="Which nodes run the function. Default: every node."
    )
    health_check: HealthCheck = Field(
        default_factory=HealthCheck,
        description="How a newly deployed version is judged healthy before it gets traffic.",
    )
    limits: Limits = Field(
        default_factory=Limits, description="Per-call resource limits enforced by the agent."
    )
    overrides: Annotated[tuple[Override, ...], Field(max_length=100, strict=False)] = Field(
        (),
        description="Other `limits` for some target nodes (by region or labels), as Fleet's "
        "targetCustomizations: every override that matches a node applies, in order, a later "
        "one winning field by field. A change to an override rolls out to the nodes whose "
        "limits it changes, and only to them.",
    )
    strategy: StrategySpec = Field(
        default_factory=RollingOptions,
        description="How a new version rolls out: `type` picks the strategy, the other keys "
        "are that strategy's options.",
    )
    auto_rollback: AutoRollback = Field(
        default_factory=AutoRollback,
        description="Metric gates judged at every analysis step of a rollout.",
    )
    deploy_windows: DeployWindows | None = Field(
        None,
        description="When rollouts of this function may start and run (cron windows with a "
        "duration and a time zone). Absent: any time. Rollbacks always run.",
    )
    approval: Literal["auto", "manual"] = Field(
        "auto",
        description="`manual`: a new rollout waits in DRAFT until `gitopsd approve FUNCTION`.",
    )
    self_heal: bool = Field(
        True,
        description="Correct drift (`true`) or only report it (`false`), in the daemon: a node "
        "that lost or changed the version Git names is put back. `gitopsd sync` always "
        "applies Git.",
    )
    sticky_header: Annotated[str, AfterValidator(_check_header), Field(max_length=128)] = Field(
        "X-User-Id",
        description="Request header whose value keeps one user on one version while traffic "
        "is split between versions.",
    )
    depends_on: Annotated[tuple[Name, ...], Field(strict=False)] = Field(
        (),
        description="Functions rolled out before this one in the same pass; if one of them "
        "does not end COMPLETED, this one is BLOCKED.",
    )


class EdgeNodeManifest(ManifestModel):
    """A `kind: EdgeNode` document."""

    api_version: Literal["gitopsd/v1"] = Field(description="Always `gitopsd/v1`.")
    kind: Literal["EdgeNode"] = Field(description="`EdgeNode`: an edge agent of the fleet.")
    metadata: Metadata = Field(description="The node's name and labels.")
    spec: EdgeNodeSpec = Field(description="Where the node's agent listens and its region.")


class EdgeFunctionManifest(ManifestModel):
    """A `kind: EdgeFunction` document."""

    api_version: Literal["gitopsd/v1"] = Field(description="Always `gitopsd/v1`.")
    kind: Literal["EdgeFunction"] = Field(
        description="`EdgeFunction`: a WebAssembly function and how its versions roll out."
    )
    metadata: Metadata = Field(description="The function's name and labels.")
    spec: EdgeFunctionSpec = Field(
        description="The module, where it runs and how a new version rolls out."
    )


class DeployPolicySpec(ManifestModel):
    """`spec` of a DeployPolicy: defaults for every EdgeFunction of the repository."""

    deploy_windows: DeployWindows = Field(
        description="The deploy windows of every function without `spec.deployWindows` of "
        "its own (a function's own windows replace these entirely)."
    )


class DeployPolicyManifest(ManifestModel):
    """A `kind: DeployPolicy` document: the fleet-wide defaults (at most one)."""

    api_version: Literal["gitopsd/v1"] = Field(description="Always `gitopsd/v1`.")
    kind: Literal["DeployPolicy"] = Field(
        description="`DeployPolicy`: fleet-wide defaults, such as deploy windows."
    )
    metadata: Metadata = Field(description="The policy's name and labels.")
    spec: DeployPolicySpec = Field(description="The defaults.")


AnyManifest = EdgeNodeManifest | EdgeFunctionManifest | DeployPolicyManifest
Manifest = Annotated[AnyManifest, Field(discriminator="kind")]
"""Any gitopsd/v1 document, told apart by `kind`."""

MANIFEST_MODELS: dict[
    str, type[EdgeNodeManifest] | type[EdgeFunctionManifest] | type[DeployPolicyManifest]
] = {
    "EdgeNode": EdgeNodeManifest,
    "EdgeFunction": EdgeFunctionManifest,
    "DeployPolicy": DeployPolicyManifest,
}
