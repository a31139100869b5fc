"""A valid fleet loads, with every default filled in."""

from __future__ import annotations

import hashlib

import pytest
import wasmtime

from gitopsd.manifest.desired import DesiredState
from gitopsd.manifest.strategy_options import CanaryOptions, RollingOptions
from tests.manifest.support import (
    COMMIT,
    EXAMPLE,
    WAT,
    docs,
    function,
    load,
    node,
    snapshot,
    yaml,
)

EXAMPLE_FILES = {"fleet.yaml": EXAMPLE, "modules/image-processor.wat": WAT}


def test_design_example_loads() -> None:
    state = load(snapshot(EXAMPLE_FILES, module=False))

    assert state.commit == COMMIT
    assert list(state.nodes) == ["edge-us-east-1"]
    edge = state.nodes["edge-us-east-1"]
    assert (edge.address, edge.region, dict(edge.labels)) == (
        "http://127.0.0.1:9101",
        "us-east",
        {"tier": "prod"},
    )
    assert edge.source == "fleet.yaml:1"

    fn = state.functions["image-processor"]
    assert fn.source == "fleet.yaml:6"
    spec = fn.spec
    assert spec.version == "1.2.0"
    assert spec.sha256 is None
    assert spec.targets.regions == ("us-east", "eu-central")
    assert spec.targets.selector == {"tier": "prod"}
    assert spec.health_check.timeout == 5.0
    assert isinstance(spec.strategy, CanaryOptions)
    assert spec.strategy.stages == [10, 25, 50, 100]
    assert spec.strategy.evaluation_period == 300.0
    assert [(t.metric, t.threshold) for t in spec.auto_rollback.triggers] == [
        ("error_rate", 5.0),
        ("avg_latency_ms", 100.0),
    ]
    wasm = bytes(wasmtime.wat2wasm(WAT))
    assert fn.module.path == "modules/image-processor.wat"
    assert fn.module.wasm == wasm
    assert fn.module.sha256 == hashlib.sha256(wasm).hexdigest()
    assert {"_start", "health_check"} <= fn.module.exports
    # eu-central is listed but has no node: worth a warning, not an error.
    assert state.warnings == (
        "fleet.yaml:6: function 'image-processor' targets regions with no node: eu-central",
    )


def test_defaults_are_filled() -> None:
    state = load(snapshot({"fleet.yaml": docs(node("edge-a"), function("hello"))}))
    spec = state.functions["hello"].spec

    assert spec.targets.regions is None and spec.targets.selector is None
    hc = spec.health_check
    assert (hc.function, hc.expect, hc.timeout) == ("health_check", "OK", 5.0)
    assert (hc.success_threshold, hc.failure_threshold) == (1, 3)
    assert (spec.limits.memory_mib, spec.limits.timeout_ms) == (64, 100)
    assert spec.strategy == RollingOptions()
    assert spec.auto_rollback.triggers == ()
    assert spec.approval == "auto"
    assert spec.self_heal is True
    assert spec.sticky_header == "X-User-Id"
    assert spec.depends_on == ()
    assert state.targets_of("hello") == ("edge-a",)
    assert state.warnings == ()


def _fleet(*functions: str) -> DesiredState:
    nodes = [
        node("edge-b", "us-east", 9102, "{tier: prod}"),
        node("edge-a", "us-east", 9101, "{tier: prod}"),
        node("edge-c", "eu-central", 9103, "{tier: canary}"),
    ]
    return load(snapshot({"nodes.yaml": docs(*nodes), "fns.yaml": docs(*functions)}))


def test_targets_match_regions_and_selector_sorted_by_region_then_name() -> None:
    state = _fleet(
        function("everywhere"),
        function("east", "targets: {regions: [us-east]}"),
        function("prod", "targets: {selector: {tier: prod}}"),
        function("both", "targets: {regions: [eu-central, us-east], selector: {tier: canary}}"),
    )
    assert state.targets_of("everywhere") == ("edge-c", "edge-a", "edge-b")
    assert state.targets_of("east") == ("edge-a", "edge-b")
    assert state.targets_of("prod") == ("edge-a", "edge-b")
    assert state.targets_of("both") == ("edge-c",)
    with pytest.raises(KeyError):
        state.targets_of("nope")


def test_target_matching_no_node_is_a_warning() -> None:
    state = _fleet(function("lonely", "targets: {regions: [ap-south], selector: {tier: gpu}}"))
    assert state.targets_of("lonely") == ()
    assert state.warnings == (
        "fns.yaml:1: function 'lonely' matches no node (regions ap-south; selector tier=gpu)",
    )


def test_fingerprint_changes_with_what_needs_a_rollout_only() -> None:
    base = _fleet(function("f"))
    same = _fleet(function("f", "strategy: {type: canary}", "approval: manual", "selfHeal: false"))
    assert base.fingerprint("f") == same.fingerprint("f")
    assert len(base.fingerprint("f")) == 64
    for change in (
        'version: "1.0.1"',
        "limits: {memoryMiB: 128}",
        "healthCheck: {timeout: PT6S}",
        "stickyHeader: X-Session",
        "targets: {regions: [us-east]}",
    ):
        if change.startswith("version"):
            other = _fleet(function("f").replace('version: "1.0.0"', change))
        else:
            other = _fleet(function("f", change))
        assert other.fingerprint("f") != base.fingerprint("f"), change


def test_dependency_order_puts_dependencies_first() -> None:
    state = _fleet(
        function("web", "dependsOn: [auth, db]"),
        function("auth", "dependsOn: [db]"),
        function("db"),
        function("batch"),
    )
    assert state.dependency_order() == ("batch", "db", "auth", "web")
    assert state.functions["web"].spec.depends_on == ("auth", "db")


def test_empty_documents_comments_and_hidden_directories_are_skipped() -> None:
    text = "---\n# only a comment\n---\n" + node("edge-a") + "---\n---\nnull\n...\n"
    state = load(
        snapshot(
            {
                "a.yaml": text,
                "empty.yml": "",
                ".github/workflows/ci.yml": "on: push\n",
                "README.md": "not yaml: [",
            }
        )
    )
    assert list(state.nodes) == ["edge-a"]
    assert state.nodes["edge-a"].source == "a.yaml:4"


def test_no_manifests_is_valid_with_a_warning() -> None:
    state = load(snapshot({}))
    assert state.nodes == {} and state.functions == {}
    assert state.warnings == ("no manifests (*.yaml, *.yml) in the snapshot",)


def test_anchors_and_merge_keys_work_and_keep_lines() -> None:
    text = yaml(
        """
        apiVersion: gitopsd/v1
        kind: EdgeFunction
        metadata: {name: a}
        spec: &spec
          version: "1.0.0"
          module: modules/hello.wat
          limits: &limits {memoryMiB: 32}
        ---
        apiVersion: gitopsd/v1
        kind: EdgeFunction
        metadata: {name: b}
        spec:
          <<: &base {version: "2.0.0", module: modules/hello.wat}
          limits: {memoryMiB: 16}
        """
    )
    state = load(snapshot({"f.yaml": text}))
    assert state.functions["a"].spec.limits.memory_mib == 32
    assert state.functions["b"].spec.version == "2.0.0"
    assert state.functions["b"].spec.limits.memory_mib == 16


def test_strategy_options_and_durations_in_both_forms() -> None:
    state = _fleet(
        function("r", "strategy: {type: rolling, batchSize: 2, batchDelay: 30s}"),
        function("c", "strategy: {type: canary, stages: [50, 100], evaluationPeriod: PT1H30M}"),
        function("g", "healthCheck: {timeout: 1.5}"),
    )
    assert state.functions["r"].spec.strategy == RollingOptions(batch_size=2, batch_delay=30)
    strategy = state.functions["c"].spec.strategy
    assert isinstance(strategy, CanaryOptions) and strategy.evaluation_period == 5400.0
    assert state.functions["g"].spec.health_check.timeout == 1.5


def test_wasm_modules_and_sha256_pins_load() -> None:
    wasm = bytes(wasmtime.wat2wasm(WAT))
    digest = hashlib.sha256(wasm).hexdigest()
    fns = docs(
        function("bin", module="hello.wasm"),
        function("pinned", f"sha256: {digest.upper()}", module="../modules/hello.wat"),
    )
    state = load(snapshot({"fns/f.yaml": fns, "fns/hello.wasm": wasm, "modules/hello.wat": WAT}))
    assert state.functions["bin"].module.sha256 == digest
    assert state.functions["pinned"].spec.sha256 == digest  # normalised to lowercase
