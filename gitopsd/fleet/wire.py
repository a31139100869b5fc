"""What agents answer, validated on the way in (docs/agent-api.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gitopsd.fleet.tokens import excerpt


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class WireWeight(_Wire):
    version: str
    percent: float


class WireLimits(_Wire):
    memory_mib: float = Field(alias="memoryMiB")
    timeout_ms: int = Field(alias="timeoutMs")


class WireVersion(_Wire):
    sha256: str
    # The limits the version is loaded with; absent from an agent that does not say, which the
    # diff then cannot compare (it compares what it is told).
    limits: WireLimits | None = None


class WireFunction(_Wire):
    versions: dict[str, WireVersion] = Field(default_factory=dict)
    traffic: list[WireWeight] = Field(default_factory=list)
    sticky_header: str | None = Field(None, alias="stickyHeader")


class WireInventory(_Wire):
    node: str
    region: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    generation: int = 0
    memory_budget_mib: float | None = Field(None, alias="memoryBudgetMiB")
    memory_used_mib: float | None = Field(None, alias="memoryUsedMiB")
    functions: dict[str, WireFunction] = Field(default_factory=dict)


class WireHealth(_Wire):
    healthy: bool
    output: str = ""
    error: str | None = None
    duration_ms: float = Field(0.0, alias="durationMs")

    @field_validator("output", "error")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        # Shown in step messages, notes and logs; the healthy verdict is the agent's.
        return None if value is None else excerpt(value)
