"""Manifest side of the data flow: Snapshot → DesiredState.

Public API (import from the submodules; this package imports nothing eagerly, so that the
strategies' `strategy_options` import stays cheap):

- `loader.load_snapshot(snapshot, *, max_manifest_bytes, max_module_bytes, max_documents)`
  → `desired.DesiredState`, or `errors.InvalidManifests` with every `file:line: message`
- `desired`: `DesiredState` (`targets_of`, `limits_on`, `fingerprint`, `dependency_order`),
  `DesiredNode`, `DesiredFunction`
- `overrides`: which `spec.overrides` apply to a node, and the limits it gets
- `models`: the pydantic models of `apiVersion: gitopsd/v1` (`EdgeNodeManifest`,
  `EdgeFunctionManifest`, `EdgeFunctionSpec`, ...)
- `modules`: `CompiledModule`, `resolve_module_path`, `ModuleRefused`
- `schema.manifest_json_schema()`: the JSON Schema `gitopsd schema` prints
- `durations`, `strategy_options`: shared with the config and the rollout strategies
"""
