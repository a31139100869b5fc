"""Options of each rollout strategy, as written under `spec.strategy` (the seeds' camelCase names).

Defaults follow the seeds. Every model is strict: an unknown option is an error, and a YAML
`true` is not the number 1. Python callers may use the snake_case field names
(`RollingOptions(batch_size=2)`); the manifest loader accepts only the camelCase aliases.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gitopsd.manifest.durations import Duration

Percent = Annotated[float, Field(ge=0, le=100)]
MetricName = Literal[
    "error_rate",
    "crash_rate",
    "timeout_rate",
    "avg_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "memory_mib",
]


class _Options(BaseModel):
    # strict: YAML already typed every scalar, so coercion ("2" -> 2, true -> 1) only hides typos.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class RollingOptions(_Options):
    """Update nodes in batches; on a failed batch roll back, or pause when pauseOnFailure."""

    type: Literal["rolling"] = Field(
        "rolling", description="Rolling update (the strategy when `spec.strategy` is absent)."
    )
    batch_size: int = Field(1, ge=1, alias="batchSize", description="Nodes per batch.")
    batch_delay: Duration = Field(
        5.0, alias="batchDelay", description="Wait after every batch but the last."
    )
    health_check_timeout: Duration | None = Field(
        None,
        alias="healthCheckTimeout",
        description="Time limit of each health-check call; absent: `healthCheck.timeout`.",
    )
    pause_on_failure: bool = Field(
        False,
        alias="pauseOnFailure",
        description="On a failed batch, `false` rolls back every node updated so far; `true` "
        "rolls back only that batch and leaves the rollout PAUSED.",
    )


class BlueGreenOptions(_Options):
    """Load the new version beside the old on every node, check all, then flip traffic at once."""

    type: Literal["blue-green"] = Field(
        "blue-green", description="Blue-green: both versions side by side, one traffic flip."
    )
    health_check_timeout: Duration = Field(
        30.0,
        alias="healthCheckTimeout",
        description="Time limit of each health-check call on green (replaces "
        "`healthCheck.timeout`).",
    )
    keep_blue_environment: bool = Field(
        True,
        alias="keepBlueEnvironment",
        description="Keep the old (blue) version loaded for `blueRetentionPeriod` after the "
        "flip; `false` unloads it right after the flip.",
    )
    blue_retention_period: Duration = Field(
        3600.0,
        alias="blueRetentionPeriod",
        description="How long blue stays loaded after the flip when `keepBlueEnvironment`.",
    )
    switch_delay: Duration = Field(
        0.0,
        alias="switchDelay",
        description="Wait between the green health checks and the traffic flip.",
    )


class CanaryOptions(_Options):
    """Grow the share of nodes on the new version stage by stage, judging each stage."""

    type: Literal["canary"] = Field(
        "canary", description="Canary: a growing share of nodes, judged stage by stage."
    )
    stages: list[Percent] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 100.0],
        min_length=1,
        strict=False,
        description="% of the target nodes on the new version at each stage: above 0, never "
        "decreasing, last 100. A stage covers ceil(nodes * % / 100) nodes, at least one.",
    )
    evaluation_period: Duration = Field(
        300.0,
        alias="evaluationPeriod",
        description="Wait before the analysis of every stage but the last.",
    )
    success_threshold: int = Field(
        1,
        ge=1,
        alias="successThreshold",
        description="Passing health-check calls in a row needed on each new canary node "
        "(replaces `healthCheck.successThreshold`).",
    )
    failure_threshold: int = Field(
        3,
        ge=1,
        alias="failureThreshold",
        description="Failed health-check calls after which a canary node fails (replaces "
        "`healthCheck.failureThreshold`).",
    )
    auto_promote: bool = Field(
        True,
        alias="autoPromote",
        description="`false`: before every stage after the first, wait for `gitopsd promote` "
        "(or `gitopsd abort`).",
    )
    traffic_weights: list[Percent] | None = Field(
        None,
        alias="trafficWeights",
        strict=False,
        description="Per stage, the new version's share of traffic on the canary nodes "
        "(default 100: canary nodes serve only the new version).",
    )

    @model_validator(mode="after")
    def _stages_grow(self) -> CanaryOptions:
        if any(b < a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise ValueError("stages must not decrease")
        if self.stages[-1] != 100:
            raise ValueError("the last stage must be 100")
        if self.stages[0] <= 0:
            raise ValueError("the first stage must be above 0")
        if self.traffic_weights is not None and len(self.traffic_weights) != len(self.stages):
            raise ValueError("trafficWeights needs one value per stage")
        return self


class RegionalOptions(_Options):
    """One region at a time, in regionOrder (default: alphabetical), waiting between regions."""

    type: Literal["regional"] = Field("regional", description="Regional: one region at a time.")
    region_order: list[str] | None = Field(
        None,
        alias="regionOrder",
        strict=False,
        description="Regions to go first, in this order; the other regions follow "
        "alphabetically. Absent: all regions alphabetically.",
    )
    inter_region_delay: Duration = Field(
        600.0,
        alias="interRegionDelay",
        description="Watch time of every region but the last, before its analysis.",
    )
    abort_on_region_failure: bool = Field(
        False,
        alias="abortOnRegionFailure",
        description="`true`: stop at the first failing region; `false`: roll that region "
        "back and go on with the next.",
    )


class WinnerCriteria(_Options):
    """How variant B beats variant A: relative improvement of `metric` of at least `threshold` %."""

    metric: MetricName = Field("avg_latency_ms", description="Metric compared between A and B.")
    threshold: float = Field(
        10.0,
        ge=0,
        description="Relative difference, in % of A's value, that declares a winner; "
        "anything closer is inconclusive.",
    )
    comparison: Literal["lower_is_better", "higher_is_better"] = Field(
        "lower_is_better", description="Whether a lower or a higher value of `metric` wins."
    )


class AbTestOptions(_Options):
    """Run B on a share of nodes for experimentDuration, then keep the winner."""

    type: Literal["ab-test"] = Field(
        "ab-test", description="A/B test: B on some nodes, compared with A, the winner stays."
    )
    variant_b_percentage: Percent = Field(
        20.0,
        alias="variantBPercentage",
        description="% of the target nodes that run B: ceil(nodes * % / 100), at least one.",
    )
    experiment_duration: Duration = Field(
        7200.0, alias="experimentDuration", description="How long B runs before the comparison."
    )
    winner_criteria: WinnerCriteria = Field(
        default_factory=WinnerCriteria,
        alias="winnerCriteria",
        description="How B beats A.",
    )
    minimum_sample_size: int = Field(
        1000,
        ge=1,
        alias="minimumSampleSize",
        description="Requests needed on each side; fewer makes the verdict inconclusive, "
        "which rolls B back.",
    )


class FeatureFlagOptions(_Options):
    """Load the new version everywhere and send initialRollout % of users to it (sticky)."""

    type: Literal["feature-flag"] = Field(
        "feature-flag", description="Feature flag: everywhere, behind a share of users."
    )
    flag_name: str | None = Field(
        None,
        alias="flagName",
        description="Name of the flag in messages; absent: `ff_{function}_{version}`.",
    )
    initial_rollout: Percent = Field(
        0.0,
        alias="initialRollout",
        description="% of requests, bucketed by `stickyHeader`, sent to the new version on "
        "nodes that run an older one (a node with no older version serves the new one).",
    )


StrategyOptions = Annotated[
    RollingOptions
    | BlueGreenOptions
    | CanaryOptions
    | RegionalOptions
    | AbTestOptions
    | FeatureFlagOptions,
    Field(discriminator="type"),
]

OPTION_MODELS: dict[str, type[_Options]] = {
    "rolling": RollingOptions,
    "blue-green": BlueGreenOptions,
    "canary": CanaryOptions,
    "regional": RegionalOptions,
    "ab-test": AbTestOptions,
    "feature-flag": FeatureFlagOptions,
}


def normalize_strategy_name(name: str) -> str:
    """`blue_green`, `BlueGreen`, `ABTesting` and friends to the manifest's `blue-green` form."""
    key = name.strip().lower().replace("_", "-")
    aliases = {
        "bluegreen": "blue-green",
        "abtesting": "ab-test",
        "ab-testing": "ab-test",
        "a/b": "ab-test",
        "featureflag": "feature-flag",
    }
    return aliases.get(key, key)
