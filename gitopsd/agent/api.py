"""Request bodies of the control API and the persisted state, as pydantic models.

Field names follow docs/agent-api.md (camelCase on the wire). Request bodies forbid unknown
fields, so a typo ("timeoutMS") is a 400 naming the field instead of a silent default.
The persisted state ignores unknown fields, so a newer agent's state file still loads.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A function's bucket key on the wire and in state.json: 32 bytes, hex.
BUCKET_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
# Function and version names travel in URL paths and metric labels: keep them plain.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
HEADER_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

DEFAULT_STICKY_HEADER = "X-User-Id"

HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=HEADER_RE.pattern)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Limits(_Body):
    """Per-call limits of a version."""

    memory_mib: int = Field(64, alias="memoryMiB", ge=1, le=4096)
    timeout_ms: int = Field(100, alias="timeoutMs", ge=1, le=600_000)


class HealthCheck(_Body):
    """Which export answers the health check and what it must write."""

    function: str = Field("health_check", min_length=1, max_length=256)
    expect: str = "OK"


class LoadVersion(_Body):
    """Body of `PUT /functions/{fn}/versions/{version}`."""

    sha256: str
    limits: Limits = Field(default_factory=lambda: Limits())
    health_check: HealthCheck = Field(default_factory=lambda: HealthCheck(), alias="healthCheck")
    sticky_header: HeaderName | None = Field(None, alias="stickyHeader")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        value = value.lower()
        if not SHA256_RE.match(value):
            raise ValueError("must be 64 hex digits (the sha256 of the module bytes)")
        return value


class WeightBody(_Body):
    """One entry of `weights`."""

    version: str
    percent: float = Field(ge=0, le=100)


class RuleBody(_Body):
    """One entry of `rules`."""

    header: HeaderName
    equals: str
    version: str


class SetTraffic(_Body):
    """Body of `PUT /functions/{fn}/traffic`."""

    weights: list[WeightBody] = Field(min_length=1)
    rules: list[RuleBody] = Field(default_factory=list)
    sticky_header: HeaderName | None = Field(None, alias="stickyHeader")
    # Secret: never logged, never in the inventory or metrics (router.sticky_bucket).
    bucket_key: str | None = Field(
        None, alias="bucketKey", pattern=BUCKET_KEY_RE.pattern, repr=False
    )


class RunHealth(_Body):
    """Body of `POST /functions/{fn}/versions/{version}/health` (optional)."""

    timeout_ms: int = Field(5000, alias="timeoutMs", ge=1, le=600_000)


class _Stored(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class StoredVersion(_Stored):
    """A loaded version in state.json."""

    sha256: str
    limits: Limits
    health_check: HealthCheck = Field(alias="healthCheck")
    loaded_at: float = Field(alias="loadedAt")


class StoredFunction(_Stored):
    """A function in state.json (the same shape as in the inventory)."""

    versions: dict[str, StoredVersion]
    traffic: list[WeightBody]
    rules: list[RuleBody] = Field(default_factory=list)
    sticky_header: str = Field(DEFAULT_STICKY_HEADER, alias="stickyHeader")
    # Absent in the state of an agent from before bucket keys (checked on restore).
    bucket_key: str | None = Field(None, alias="bucketKey", repr=False)


class StoredState(_Stored):
    """state.json."""

    format: int = 1
    generation: int = 0
    functions: dict[str, StoredFunction] = Field(default_factory=dict)


def explain(error: ValidationError) -> str:
    """One sentence per problem, `field.path: message`, for a 400 answer."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
