"""The pydantic base of every manifest model: strict, frozen, camelCase aliases (the seeds'
names), unknown fields refused, no NaN or infinity."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ManifestModel(BaseModel):
    """Base of the models read from manifests."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
