"""The `--output json` documents of the CLI: one style (camelCase keys) and a JSON Schema for
each, published by `gitopsd schema --output-docs` so that scripts can validate what they read.

The models below describe the documents; they are not used to build them (the commands
build plain dicts), and tests/cli/test_json_documents.py validates the real output of every
command against the published schemas, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

from gitopsd.manifest.schema import DIALECT
from gitopsd.rollout.steps import STEP_TYPES, Step, step_to_json

_SNAKE = re.compile(r"_([a-z0-9])")


def camel(name: str) -> str:
    """`success_threshold` -> `successThreshold`."""
    return _SNAKE.sub(lambda m: m[1].upper(), name)


def camel_keys(value: Any) -> Any:
    """`value` with every mapping key camelCased, recursively (values untouched)."""
    if isinstance(value, Mapping):
        return {camel(str(k)): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [camel_keys(v) for v in value]
    return value


def plan_step_json(step: Step) -> dict[str, Any]:
    """A step as `diff --plan --output json` prints it (the journal keeps its own form)."""
    out: dict[str, Any] = camel_keys(step_to_json(step))
    return out


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


def _step_model(kind: str, cls: type[Any]) -> type[BaseModel]:
    hints = get_type_hints(cls)
    fields: dict[str, Any] = {"kind": (Literal[kind], ...)}
    for f in dataclasses.fields(cls):
        default: Any = ... if f.default is dataclasses.MISSING else f.default
        fields[f.name] = (hints[f.name], default)
    return create_model(f"{cls.__name__}Step", __base__=_Doc, **fields)


class NodeChange(_Doc):
    """What the diff found on one node."""

    node: str
    action: str
    live_version: str | None
    detail: str


class Change(_Doc):
    """One function the diff would change."""

    function: str
    action: Literal["deploy", "update", "prune", "unknown"]
    version: str | None
    live_versions: list[str]
    reason: str
    nodes: list[NodeChange]


class DiffSummary(_Doc):
    """Counts of the changes."""

    deploy: int
    update: int
    prune: int
    unknown: int = Field(description="functions on no target node that answered")
    unchanged: int


class DiffStart(_Doc):
    """When a pending rollout of a function with deploy windows would start."""

    now: bool = Field(description="true: its windows are open now")
    at: str | None = Field(description="ISO 8601 UTC time it would start; null: none in 400 days")
    message: str


class DiffDocument(_Doc):
    """`gitopsd diff --output json` (`plans` with `--plan`: each rollout's steps)."""

    commit: str
    summary: DiffSummary
    changes: list[Change]
    unchanged: list[str]
    unreachable: dict[str, str] = Field(description="node -> why it did not answer")
    plans: dict[str, list[Any]] | None = None
    dial_out: DialOut | None = None
    starts: dict[str, DiffStart] | None = Field(
        None, description="with --plan: functions with deploy windows -> when they would start"
    )
    what_if: dict[str, Any] | None = Field(
        None, description="with --what-if: each rollout's path under the injected outcomes"
    )


class DialOutNode(_Doc):
    """Whether a dial-out node is connected to the controller, since when, from where."""

    connected: bool
    since: str | None = None
    from_: str | None = Field(None, alias="from")


class UnknownAgent(_Doc):
    """An agent Git does not name, kept waiting at the controller's listener."""

    name: str
    since: str
    from_: str = Field(alias="from")


class DialOut(_Doc):
    """Dial-out nodes as the controller's listener sees them (fleet/presence.py)."""

    nodes: dict[str, DialOutNode]
    unknown_agents: list[UnknownAgent]
    error: str | None


class Traffic(_Doc):
    """A version's share of a node's requests."""

    version: str
    percent: float


class NodeStatus(_Doc):
    """What one node serves of the function (or why it did not answer)."""

    node: str
    region: str
    reachable: bool
    error: str | None = None
    traffic: list[Traffic]


class RolloutStatus(_Doc):
    """The function's latest rollout."""

    id: str
    version: str
    commit: str
    strategy: str
    state: str
    step: str | None
    message: str
    updated_at: str


class FunctionStatus(_Doc):
    """One function in `gitopsd status --output json`."""

    function: str
    desired_version: str | None
    live_versions: list[str]
    nodes: list[NodeStatus]
    rollout: RolloutStatus | None
    waiting: str | None
    held: bool
    paused: bool


class ShardLeader(_Doc):
    """Who leads a shard: the holder of its lease in the shared PostgreSQL (times UTC)."""

    shard: int
    holder: str
    host: str
    since: str
    term: int


class StatusDocument(_Doc):
    """`gitopsd status --output json`. With a PostgreSQL [state] url: `leader` (null when
    no controller holds the lease) and, with `[ha] shards` > 1, `shards`."""

    functions: list[FunctionStatus]
    note: str
    leader: ShardLeader | None = None
    shards: list[ShardLeader | None] | None = None
    dial_out: DialOut | None = None


class HistoryRow(_Doc):
    """One rollout in `gitopsd history --output json`."""

    id: str
    function: str
    version: str
    commit: str
    strategy: str
    state: str
    message: str
    started_at: str
    finished_at: str
    duration_seconds: float | None


class HistoryDocument(_Doc):
    """`gitopsd history --output json`."""

    rollouts: list[HistoryRow]


DOCUMENTS: dict[str, type[BaseModel]] = {
    "diff": DiffDocument,
    "status": StatusDocument,
    "history": HistoryDocument,
}


def output_json_schemas() -> dict[str, Any]:
    """Command name -> draft 2020-12 JSON Schema of its `--output json` document."""
    steps = [_step_model(kind, cls) for kind, cls in STEP_TYPES.items()]
    out: dict[str, Any] = {}
    for name, model in DOCUMENTS.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        if model is DiffDocument:
            step_defs = {m.__name__: m.model_json_schema(by_alias=True) for m in steps}
            defs = schema.setdefault("$defs", {})
            for step_name, step_schema in step_defs.items():
                defs.update(step_schema.pop("$defs", {}))
                defs[step_name] = step_schema
            schema["properties"]["plans"] = {
                "description": "function -> the steps its rollout takes if all is healthy",
                "anyOf": [
                    {
                        "type": "object",
                        "additionalProperties": {
                            "type": "array",
                            "items": {"oneOf": [{"$ref": f"#/$defs/{n}"} for n in step_defs]},
                        },
                    },
                    {"type": "null"},
                ],
            }
        out[name] = {
            "$schema": DIALECT,
            "title": f"gitopsd {name} --output json",
            **schema,
        }
    return out
