"""JSON Schema of the manifests, generated from the models (what `gitopsd schema` prints)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from gitopsd.manifest.models import API_VERSION, Manifest

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def manifest_json_schema() -> dict[str, Any]:
    """A draft 2020-12 JSON Schema of one manifest document (`oneOf` EdgeNode, EdgeFunction).

    Property names are the YAML (camelCase) names; editors can use it for completion via
    `# yaml-language-server: $schema=...`.
    """
    body = TypeAdapter(Manifest).json_schema(by_alias=True, mode="validation")
    return {
        "$schema": DIALECT,
        "title": f"gitopsd manifest ({API_VERSION})",
        "description": "One YAML document of a gitopsd repository: an EdgeNode or an "
        "EdgeFunction. Durations are ISO 8601 ('PT5M') or short ('5m', '30s').",
        **body,
    }
