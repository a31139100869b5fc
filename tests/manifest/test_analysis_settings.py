"""`autoRollback.analysis`: defaults, valid values, and every bad value at its file:line."""

from __future__ import annotations

import json

from gitopsd.manifest.schema import manifest_json_schema
from tests.manifest.support import docs, function, load, node, problems, snapshot


def test_defaults_are_the_concurrent_judge() -> None:
    desired = load(snapshot({"all.yaml": docs(node("edge-1"), function("api"))}))
    analysis = desired.functions["api"].spec.auto_rollback.analysis
    assert (analysis.baseline, analysis.confidence, analysis.minimum_samples) == (
        "concurrent",
        0.99,
        200,
    )
    assert analysis.max_extension == 1800.0


def test_every_setting_is_read() -> None:
    text = docs(
        node("edge-1"),
        function(
            "api",
            "autoRollback:",
            "  triggers: [{metric: error_rate, threshold: 5}]",
            "  analysis: {baseline: thresholds, confidence: 0.995, minimumSamples: 50,"
            " maxExtension: PT10M}",
        ),
    )
    analysis = load(snapshot({"all.yaml": text})).functions["api"].spec.auto_rollback.analysis
    assert analysis.baseline == "thresholds"
    assert analysis.confidence == 0.995
    assert analysis.minimum_samples == 50
    assert analysis.max_extension == 600.0


def test_bad_settings_are_refused_at_their_line() -> None:
    text = docs(
        node("edge-1"),
        function(
            "api",
            "autoRollback:",
            "  analysis:",
            "    baseline: yesterday",
            "    confidence: 1.5",
            "    minimumSamples: 0",
            "    maxExtension: 2 days",
            "    patience: PT1H",
        ),
    )
    found = problems(snapshot({"all.yaml": text}))
    assert found[0].startswith(
        "all.yaml:14: spec.autoRollback.analysis.baseline: Input should be 'concurrent' or "
        "'thresholds'"
    ), found
    assert found[1].startswith("all.yaml:15: spec.autoRollback.analysis.confidence: "), found
    assert found[2].startswith("all.yaml:16: spec.autoRollback.analysis.minimumSamples: "), found
    assert found[3].startswith(
        "all.yaml:17: spec.autoRollback.analysis.maxExtension: invalid duration '2 days'"
    ), found
    assert found[4].startswith("all.yaml:18: spec.autoRollback.analysis.patience: unknown field"), (
        found
    )
    assert len(found) == 5


def test_the_schema_names_the_settings() -> None:
    schema = json.dumps(manifest_json_schema())
    for name in ("minimumSamples", "maxExtension", "confidence", "thresholds"):
        assert name in schema
