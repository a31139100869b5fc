"""docs/manifest-reference.md, generated from the pydantic models.

Every field of both kinds and of every strategy's options, by its YAML name, with its type,
default and description. `tests/manifest/test_reference.py` keeps the file equal to this
output and refuses a field without a description, so the reference cannot fall behind.

    python -m gitopsd.manifest.reference > docs/manifest-reference.md
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gitopsd.manifest.durations import ACCEPTED_FORMS, Duration, format_duration
from gitopsd.manifest.models import API_VERSION, MANIFEST_MODELS
from gitopsd.manifest.strategy_options import OPTION_MODELS
from gitopsd.manifest.strategy_plugins import PluginStrategyOptions
from gitopsd.source.bounded import limits_markdown

REGENERATE = "python -m gitopsd.manifest.reference > docs/manifest-reference.md"

_DURATION_MARKS = typing.get_args(Duration)[1:]
# Validators that give a plain `str` a meaning worth naming in the Type column.
_CHECKED_STRINGS = {
    "_check_name": "name",
    "_check_header": "header name",
    "_check_sha256": "sha256 (hex)",
    "_check_address": "URL",
}
_KIND_TITLES = {
    "EdgeNode": "EdgeNode",
    "EdgeFunction": "EdgeFunction",
    "DeployPolicy": "DeployPolicy",
}


def documented_models() -> list[type[BaseModel]]:
    """Every model the reference documents: both kinds, every strategy's options, and every
    model nested in them, in the order the reference shows them."""
    found: dict[type[BaseModel], None] = {}
    for root in (*MANIFEST_MODELS.values(), *OPTION_MODELS.values()):
        for model in _walk(root):
            found.setdefault(model, None)
    return list(found)


def field_name(name: str, field: FieldInfo) -> str:
    """The name a field has in YAML (its alias)."""
    return field.alias or name


def manifest_reference_markdown() -> str:
    """The whole of docs/manifest-reference.md."""
    out: list[str] = [
        "# Manifest reference",
        "",
        f"<!-- Generated from the pydantic models: `{REGENERATE}`. "
        "Do not edit by hand; tests/manifest/test_reference.py compares this file with the "
        "models. -->",
        "",
        f"Every YAML document (`*.yaml`, `*.yml`, multi-document allowed) under the synced "
        f"path is one object with `apiVersion: {API_VERSION}` and a `kind`: "
        + " or ".join(f"[{k}](#{k.lower()})" for k in MANIFEST_MODELS)
        + ". Field names are the camelCase names below. Unknown kinds, unknown fields and "
        "duplicate names are errors, reported as `file:line: message` by `gitopsd validate`. "
        'Values are strict: `"2"` is not a number and `true` is not 1.',
        "",
        "Types used below:",
        "",
        "- *name*: a lowercase DNS label (a-z, 0-9 and `-`, at most 63 characters, starting "
        "and ending with a letter or digit).",
        "- Default *absent*: the field may be left out or written as `null`.",
        f"- *duration*: {ACCEPTED_FORMS}, or a number of seconds. Defaults are shown in ISO 8601.",
        "- *map of string to string*: labels; keys and values use letters, digits, `-`, `_` "
        "and `.` (keys also `/`), at most 63 characters.",
        "",
        "The strategies' behaviour step by step is in [strategies.md](strategies.md). "
        "`gitopsd schema` prints the same models as a JSON Schema for editors.",
        "",
    ]
    shown: set[type[BaseModel]] = set()
    for kind, model in MANIFEST_MODELS.items():
        out += [f"## {_KIND_TITLES[kind]}", "", _doc(model), ""]
        out += _table(model)
        shown.add(model)
        for nested in _walk(model, into_options=False):
            if nested in shown or _is_options(nested):
                continue
            shown.add(nested)
            out += _section(nested)
    out += [
        "## Strategies",
        "",
        "`spec.strategy.type` picks the strategy; the other keys of `spec.strategy` are that "
        "strategy's options, and each strategy accepts only its own. Without `spec.strategy` "
        "a function rolls out with `rolling` and its defaults. Any other `type` names a "
        "strategy plugin (see [strategies.md](strategies.md#strategy-plugins)): its options "
        "are checked by the plugin's own options model, and `gitopsd schema` includes the "
        "options of the plugins installed where it runs.",
        "",
    ]
    for name, options in OPTION_MODELS.items():
        out += [f"### {name}", "", _doc(options), ""]
        out += _table(options)
        shown.add(options)
    for rest in documented_models():
        if rest not in shown:
            shown.add(rest)
            out += _section(rest)
    out += limits_markdown()
    return "\n".join(out).rstrip("\n") + "\n"


# -- walking the models -------------------------------------------------------------------------


def _walk(model: type[BaseModel], *, into_options: bool = True) -> Iterator[type[BaseModel]]:
    """`model` and the models its fields use, depth first in field order; without
    `into_options`, strategy options models are yielded but not entered."""
    seen: set[type[BaseModel]] = set()

    def visit(current: type[BaseModel]) -> Iterator[type[BaseModel]]:
        if current in seen:
            return
        seen.add(current)
        yield current
        if current is not model and _is_options(current) and not into_options:
            return
        for field in current.model_fields.values():
            for nested in _models_in(field.annotation):
                yield from visit(nested)

    yield from visit(model)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _is_options(model: type[BaseModel]) -> bool:
    return model in OPTION_MODELS.values() or model is PluginStrategyOptions


# -- rendering ----------------------------------------------------------------------------------


def _section(model: type[BaseModel]) -> list[str]:
    return [f"### {model.__name__}", "", _doc(model), "", *_table(model)]


def _doc(model: type[BaseModel]) -> str:
    return " ".join((inspect.getdoc(model) or "").split())


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        cells = (
            f"`{field_name(name, field)}`",
            _type(field.annotation, field.metadata),
            _default(field),
            " ".join((field.description or "").split()),
        )
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*rows, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    """Human type of a field: `integer (at least 1)`, `list of name`, `[Limits](#limits)`..."""
    marks = list(metadata)
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *more = typing.get_args(annotation)
        marks += more
    flat: list[Any] = []
    for mark in marks:
        flat += mark.metadata if isinstance(mark, FieldInfo) else [mark]
    base, bounds = _base_type(annotation, flat), _bounds(flat)
    return f"{base}, {bounds}" if bounds else base


def _base_type(annotation: Any, marks: Sequence[Any]) -> str:
    if any(mark in _DURATION_MARKS for mark in marks):
        return "duration"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        # `X | None`: the Default column says "absent", and null is accepted (intro).
        members = [a for a in args if a is not type(None)]
        tagged = [
            typing.get_args(m)[0] if typing.get_origin(m) is typing.Annotated else m
            for m in members
        ]
        if tagged and all(isinstance(m, type) and _is_options(m) for m in tagged):
            return "[strategy options](#strategies), chosen by `type`"
        return " or ".join(_type(m) for m in members)
    if origin is typing.Literal:
        values = [f"`{v}`" for v in args]
        return " or ".join(values) if len(values) <= 2 else "one of " + ", ".join(values)
    if origin in (list, tuple):
        item = _type(args[0])
        base, _, bounds = item.partition(", ")
        return f"list of {base} ({bounds})" if bounds else f"list of {item}"
    if origin is dict:
        return f"map of {_type(args[0])} to {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is str:
        for mark in marks:
            name = getattr(getattr(mark, "func", None), "__name__", "")
            if name in _CHECKED_STRINGS:
                return _CHECKED_STRINGS[name]
        return "string"
    simple = {int: "integer", float: "number", bool: "boolean"}
    if annotation in simple:
        return simple[annotation]
    return str(annotation)


def _bounds(marks: Sequence[Any]) -> str:
    low = high = None
    above = None
    nonempty = False
    for mark in marks:
        if isinstance(mark, annotated_types.Ge):
            low = mark.ge
        elif isinstance(mark, annotated_types.Le):
            high = mark.le
        elif isinstance(mark, annotated_types.Gt):
            above = mark.gt
        elif isinstance(mark, annotated_types.MinLen) and mark.min_length > 0:
            nonempty = True
    if low is not None and high is not None:
        return f"{_number(low)} to {_number(high)}"
    if low is not None:
        return f"at least {_number(low)}"
    if above is not None:
        return f"above {_number(above)}"
    if high is not None:
        return f"at most {_number(high)}"
    return "not empty" if nonempty else ""


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if any(mark in _DURATION_MARKS for mark in field.metadata) or _is_duration(field.annotation):
        return "absent" if value is None else f"`{format_duration(float(value))}`"
    return _value(value)


def _is_duration(annotation: Any) -> bool:
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated and any(
            mark in _DURATION_MARKS for mark in typing.get_args(arg)[1:]
        ):
            return True
    return False


def _value(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, BaseModel):
        data = value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        tag = getattr(value, "type", None)
        return f"`{{type: {tag}}}`" if isinstance(tag, str) and not data else "`{}`"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


if __name__ == "__main__":
    print(manifest_reference_markdown(), end="")
