"""Pydantic validation errors as `file:line: message` problems an operator can act on."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gitopsd.errors import ManifestProblem
from gitopsd.manifest.yamltree import Located

Loc = tuple[int | str, ...]


def validation_problems(
    path: str, tree: Located, error: ValidationError, model: type[BaseModel]
) -> list[ManifestProblem]:
    """One problem per pydantic error, on the line of the offending key."""
    return [_problem(path, tree, detail, model) for detail in error.errors()]


_NAMES_A_FIELD = ("missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found")


def _problem(
    path: str, tree: Located, detail: ErrorDetails, model: type[BaseModel]
) -> ManifestProblem:
    loc: Loc = tuple(detail["loc"])
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # Point at the `type:` key itself when there is one, not at `strategy:`.
        loc = (*loc, str(ctx.get("discriminator", "'type'")).strip("'"))
    line, matched = tree.resolve(loc)
    field = loc[-1] if loc else None
    # A missing key is not in the YAML, so name it after the part that exists.
    if kind in _NAMES_A_FIELD and field is not None and matched[-1:] != (field,):
        matched = (*matched, field)

    if kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        message = "unknown field" + _suggestion(model, loc)
    elif kind == "union_tag_invalid":
        message = f"unknown {field} {ctx.get('tag')!r}: expected one of {ctx.get('expected_tags')}"
    elif kind == "union_tag_not_found":
        message = f"required field is missing{_choices(model, loc)}"
    elif kind in ("value_error", "assertion_error") and "error" in ctx:
        message = str(ctx["error"])
    else:
        message = detail["msg"] + _got(detail.get("input"))
    label = _label(matched)
    return ManifestProblem(path, line, f"{label}: {message}" if label else message)


def _label(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _got(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value)
        if len(text) <= 40:
            return f", got {text}"
    return ""


def _suggestion(model: type[BaseModel], loc: Loc) -> str:
    parent = _model_at(model, loc[:-1])
    if parent is None or not isinstance(loc[-1], str):
        return ""
    names = [f.alias or n for n, f in parent.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(names)})"


def _choices(model: type[BaseModel], loc: Loc) -> str:
    """For a tagged union missing its tag: ` (one of: rolling, canary, ...)`."""
    parent = _annotation_at(model, loc[:-1])
    tags = [t for m in _union_models(parent) if (t := _tag_of(m)) is not None]
    return f" (one of: {', '.join(tags)})" if tags else ""


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    found = _annotation_at(model, loc)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _annotation_at(model: type[BaseModel], loc: Loc) -> Any:
    """The type that the value at `loc` is validated against, or None when unsure."""
    current: Any = model
    for part in loc:
        current = _strip(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or n: f for n, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[part].annotation
            continue
        members = _union_models(current)
        if members:  # the tag pydantic puts in loc picks the union member
            current = next((m for m in members if _tag_of(m) == part), None)
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin in (list, tuple) and isinstance(part, int) and args:
            current = args[0]
        elif origin is dict and len(args) == 2:
            current = args[1]
        else:
            return None
    return _strip(current)


def _strip(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` to X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _union_models(annotation: Any) -> list[type[BaseModel]]:
    annotation = _strip(annotation)
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    members = [_strip(a) for a in typing.get_args(annotation)]  # tagged: Annotated[X, Tag]
    return [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]


def _tag_of(model: type[BaseModel]) -> str | None:
    for name in ("type", "kind"):
        field = model.model_fields.get(name)
        if field is not None and isinstance(field.default, str):
            return field.default
    return None
