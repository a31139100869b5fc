"""Helpers for manifest tests: in-memory snapshots with a tiny real WAT module."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import pytest

from gitopsd.errors import InvalidManifests
from gitopsd.manifest.desired import DesiredState
from gitopsd.manifest.loader import load_snapshot
from gitopsd.source.snapshot import GIT_MODE_SYMLINK, Snapshot, SnapshotFile

WAT = (
    '(module (import "wasi_snapshot_preview1" "fd_write" '
    "(func (param i32 i32 i32 i32) (result i32))) "
    '(memory (export "memory") 1) (func (export "_start")) (func (export "health_check")))'
)
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# design.md's example, verbatim (module path aside, which points at WAT above).
EXAMPLE = """\
apiVersion: gitopsd/v1
kind: EdgeNode
metadata: {name: edge-us-east-1, labels: {tier: prod}}
spec: {address: "http://127.0.0.1:9101", region: us-east}
---
apiVersion: gitopsd/v1
kind: EdgeFunction
metadata: {name: image-processor}
spec:
  version: "1.2.0"
  module: modules/image-processor.wat   # .wasm or .wat, relative to this file
  sha256: null                          # optional pin of the compiled module bytes
  targets: {regions: [us-east, eu-central], selector: {tier: prod}}   # default: all nodes
  healthCheck: {function: health_check, expect: "OK", timeout: PT5S, successThreshold: 1, failureThreshold: 3}
  limits: {memoryMiB: 64, timeoutMs: 100}
  strategy:
    type: canary            # rolling | blue-green | canary | regional | ab-test | feature-flag
    stages: [10, 25, 50, 100]
    evaluationPeriod: PT5M
  autoRollback:
    triggers: [{metric: error_rate, threshold: 5}, {metric: avg_latency_ms, threshold: 100}]
  approval: auto            # manual: the rollout waits (DRAFT) until `gitopsd approve`
  selfHeal: true            # false: drift is reported, not corrected
  stickyHeader: X-User-Id   # request header that keeps one user on one version
"""  # noqa: E501


def yaml(text: str) -> str:
    """Dedented YAML, so tests can indent it and still count lines from 1."""
    return textwrap.dedent(text).lstrip("\n")


def snapshot(
    files: Mapping[str, str | bytes],
    *,
    symlinks: Mapping[str, str] | None = None,
    module: bool = True,
) -> Snapshot:
    """A snapshot of `files` (text or bytes), plus `modules/hello.wat` unless module=False.

    `symlinks` maps a path to its link target, stored as Git stores links (mode 120000).
    """
    entries: dict[str, SnapshotFile] = {}
    if module:
        entries["modules/hello.wat"] = SnapshotFile("modules/hello.wat", WAT.encode())
    for path, data in files.items():
        raw = data.encode() if isinstance(data, str) else data
        entries[path] = SnapshotFile(path, raw)
    for path, target in (symlinks or {}).items():
        entries[path] = SnapshotFile(path, target.encode(), mode=GIT_MODE_SYMLINK)
    return Snapshot(commit=COMMIT, root="", files=entries)


def node(name: str, region: str = "us-east", port: int = 9101, labels: str = "{}") -> str:
    """One EdgeNode document (4 lines)."""
    return yaml(
        f"""
        apiVersion: gitopsd/v1
        kind: EdgeNode
        metadata: {{name: {name}, labels: {labels}}}
        spec: {{address: "http://127.0.0.1:{port}", region: {region}}}
        """
    )


def function(name: str, *spec_lines: str, module: str = "modules/hello.wat") -> str:
    """One EdgeFunction document: 6 lines, then `spec_lines` (indented under spec)."""
    extra = "".join(f"  {line}\n" for line in spec_lines)
    return (
        yaml(
            f"""
        apiVersion: gitopsd/v1
        kind: EdgeFunction
        metadata: {{name: {name}}}
        spec:
          version: "1.0.0"
          module: {module}
        """
        )
        + extra
    )


def docs(*documents: str) -> str:
    """Documents joined with `---` lines."""
    return "---\n".join(documents)


def problems(snap: Snapshot, **limits: int) -> list[str]:
    """Every `file:line: message` the loader reports for `snap` (which must be invalid)."""
    with pytest.raises(InvalidManifests) as caught:
        load_snapshot(snap, **limits)
    return [str(p) for p in caught.value.problems]


def load(snap: Snapshot, **limits: int) -> DesiredState:
    """The snapshot's desired state (which must be valid)."""
    return load_snapshot(snap, **limits)
