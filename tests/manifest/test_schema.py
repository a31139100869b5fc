"""The JSON Schema accepts the design's example and refuses what the loader refuses.

A small hand-rolled walk over the keywords the generated schema uses keeps `jsonschema`
out of the dependencies.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from gitopsd.manifest.schema import DIALECT, manifest_json_schema
from tests.manifest.support import EXAMPLE

Schema = dict[str, Any]
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def errors(schema: Schema, value: Any, root: Schema, at: str = "$") -> list[str]:
    """Where `value` breaks `schema` (only the keywords pydantic emits for our models)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return errors(root["$defs"][name], value, root, at)
    out: list[str] = []
    if "type" in schema:
        expected = _TYPES[schema["type"]]
        is_bool = isinstance(value, bool)
        if not isinstance(value, expected) or (is_bool and schema["type"] != "boolean"):
            return [f"{at}: not {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{at}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: not in {schema['enum']}")
    for branch_key, needed in (("oneOf", 1), ("anyOf", None)):
        if branch_key in schema:
            ok = [b for b in schema[branch_key] if not errors(b, value, root, at)]
            if (needed is None and not ok) or (needed == 1 and len(ok) != 1):
                out.append(f"{at}: {len(ok)} of {branch_key} match")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{at}: does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1e9):
            out.append(f"{at}: bad length")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < schema.get("minimum", -1e309) or value > schema.get("maximum", 1e309):
            out.append(f"{at}: out of range")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{at}: out of range")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{at}: too few items")
        for i, item in enumerate(value):
            out += errors(schema.get("items", {}), item, root, f"{at}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{at}: missing {k}" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in props:
                out += errors(props[key], item, root, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{at}: unknown {key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(schema["additionalProperties"], item, root, f"{at}.{key}")
    return out


def _example() -> list[Any]:
    return list(yaml.safe_load_all(EXAMPLE))


def test_schema_is_draft_2020_12_and_json() -> None:
    schema = manifest_json_schema()
    assert schema["$schema"] == DIALECT
    assert json.loads(json.dumps(schema)) == schema
    kinds = {errors_free for errors_free in schema["discriminator"]["mapping"]}
    assert kinds == {"EdgeNode", "EdgeFunction", "DeployPolicy"}
    assert len(schema["oneOf"]) == 3


def test_schema_uses_the_yaml_names() -> None:
    defs = manifest_json_schema()["$defs"]
    spec = defs["EdgeFunctionSpec"]["properties"]
    assert {"healthCheck", "autoRollback", "selfHeal", "stickyHeader", "dependsOn"} <= set(spec)
    assert set(defs["Limits"]["properties"]) == {"memoryMiB", "timeoutMs"}
    assert defs["EdgeFunctionSpec"]["required"] == ["version", "module"]
    assert defs["Metadata"]["properties"]["name"]["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def test_design_example_validates() -> None:
    schema = manifest_json_schema()
    for document in _example():
        assert errors(schema, document, schema) == []


def test_schema_refuses_what_the_loader_refuses() -> None:
    schema = manifest_json_schema()
    node, function = _example()
    bad = [
        {**node, "kind": "EdgeRouter"},
        {**node, "apiVersion": "gitopsd/v2"},
        {**node, "spec": {**node["spec"], "zone": "a"}},
        {**function, "spec": {**function["spec"], "limits": {"memoryMiB": 0}}},
        {**function, "spec": {**function["spec"], "strategy": {"type": "canary", "x": 1}}},
        {**function, "spec": {**function["spec"], "healthCheck": {"timeout": "5 minutes"}}},
        {**function, "metadata": {"name": "Not_A_Label"}},
    ]
    for document in bad:
        assert errors(schema, document, schema), document
