"""Strategies from plugins in manifests: `spec.strategy: {type: <plugin name>, ...}`.

A plugin registers under the entry-point group `gitopsd.strategies` (docs/strategies.md):
a class with `name` and `options_model` (a pydantic model of its options) whose instances
are plan generators. Manifests can use the plugins that declare an options model: the
options under `spec.strategy` (all keys but `type`) are validated with that model when the
manifests load, so a wrong option is a `file:line` problem like any other, and the engine
builds the strategy from the same options (journaled with the rollout, so a resumed rollout
rebuilds the same plan). A plugin without an options model is usable from Python only.

This module only discovers the plugins' option models; building and running strategies is
the rollout layer's job (gitopsd/rollout/strategies).
"""

from __future__ import annotations

import importlib.metadata
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails
from pydantic_core import ValidationError as CoreValidationError

from gitopsd.log import get_logger
from gitopsd.manifest.strategy_options import (
    OPTION_MODELS,
    AbTestOptions,
    BlueGreenOptions,
    CanaryOptions,
    FeatureFlagOptions,
    RegionalOptions,
    RollingOptions,
    normalize_strategy_name,
)

ENTRY_POINT_GROUP = "gitopsd.strategies"
PLUGIN_TAG = "plugin"

_models: dict[str, type[BaseModel]] | None = None


def plugin_option_models(*, refresh: bool = False) -> dict[str, type[BaseModel]]:
    """Normalized plugin name -> its options model, for every installed plugin that has one
    (built-in names cannot be taken: such a plugin is left to the registry, which logs it)."""
    global _models
    if _models is not None and not refresh:
        return _models
    found: dict[str, type[BaseModel]] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken plugin must not make every manifest invalid
            get_logger(component="strategies").warning(
                "strategy plugin failed to load", entry_point=entry.value, error=str(exc)
            )
            continue
        model = getattr(loaded, "options_model", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        declared = getattr(loaded, "name", None)
        name = normalize_strategy_name(declared if isinstance(declared, str) else entry.name)
        if name not in OPTION_MODELS and name not in found:
            found[name] = model
    _models = found
    return found


def _known() -> str:
    return ", ".join(repr(n) for n in [*OPTION_MODELS, *sorted(plugin_option_models())])


class PluginStrategyOptions(BaseModel):
    """Options of a strategy plugin: `type` is the plugin's name, the other keys are checked
    by the plugin's own options model (see strategies.md, "Strategy plugins")."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="Name of an installed strategy plugin.")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The installed plugins' option schemas, `type` fixed to each name (nothing matches
        when none is installed, so that a built-in's options match exactly one branch)."""
        variants = [
            plugin_json_schema(name, model) for name, model in plugin_option_models().items()
        ]
        if not variants:
            return {  # matches nothing: `type` must be one of no names
                "type": "object",
                "properties": {"type": {"enum": []}},
                "required": ["type"],
                "description": "No strategy plugin is installed here.",
            }
        return variants[0] if len(variants) == 1 else {"oneOf": variants}

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_options(cls, data: Any, handler: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return handler(data)  # pydantic says what is wrong with it
        name = normalize_strategy_name(data["type"])
        model = plugin_option_models().get(name)
        if model is None:
            raise CoreValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type="union_tag_invalid",
                        loc=(),
                        input=data,
                        ctx={"discriminator": "'type'", "tag": name, "expected_tags": _known()},
                    )
                ],
            )
        options = {k: v for k, v in data.items() if k != "type"}
        try:
            model.model_validate(options)
        except ValidationError as exc:  # the plugin's own problems, at their own keys
            raise CoreValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=e["type"],
                        loc=tuple(e["loc"]),
                        input=e.get("input"),
                        ctx=e.get("ctx", {}),
                    )
                    for e in exc.errors()
                ],
            ) from None
        return handler({"type": name, **options})

    def options(self) -> dict[str, Any]:
        """The options as written (without `type`), for the plugin's factory."""
        return dict(self.model_extra or {})


def _strategy_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind is None:
        return None
    if not isinstance(kind, str):  # a list or a mapping: the plugin model says "a string"
        return PLUGIN_TAG
    return kind if kind in OPTION_MODELS else PLUGIN_TAG


StrategySpec = Annotated[
    Annotated[RollingOptions, Tag("rolling")]
    | Annotated[BlueGreenOptions, Tag("blue-green")]
    | Annotated[CanaryOptions, Tag("canary")]
    | Annotated[RegionalOptions, Tag("regional")]
    | Annotated[AbTestOptions, Tag("ab-test")]
    | Annotated[FeatureFlagOptions, Tag("feature-flag")]
    | Annotated[PluginStrategyOptions, Tag(PLUGIN_TAG)],
    Discriminator(
        _strategy_tag,
        custom_error_type="union_tag_not_found",
        custom_error_context={"discriminator": "'type'"},
    ),
]
"""`spec.strategy`: a built-in strategy's options, or a plugin's (validated by its model)."""


def plugin_json_schema(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """One plugin's options as a JSON Schema, `type` fixed to its name. Its own `$id` makes
    the `$defs` it carries resolve inside it."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema["properties"] = {
        "type": {"const": name, "description": f"Strategy plugin `{name}`."},
        **schema.get("properties", {}),
    }
    schema["required"] = ["type", *schema.get("required", [])]
    return {"$id": f"urn:gitopsd:strategy-plugin:{name}", **schema}
