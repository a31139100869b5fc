"""docs/manifest-reference.md stays generated from the models, and every field is documented."""

from __future__ import annotations

from pathlib import Path

from gitopsd.manifest.models import MANIFEST_MODELS
from gitopsd.manifest.reference import (
    REGENERATE,
    documented_models,
    field_name,
    manifest_reference_markdown,
)
from gitopsd.manifest.strategy_options import OPTION_MODELS, WinnerCriteria

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "manifest-reference.md"


def test_reference_file_is_up_to_date() -> None:
    written = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert written == manifest_reference_markdown(), (
        f"docs/manifest-reference.md is stale: run `{REGENERATE}`"
    )


def test_every_field_has_a_description() -> None:
    undocumented = [
        f"{model.__name__}.{name}"
        for model in documented_models()
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not undocumented, (
        "fields without description= (the manifest reference shows it): " + ", ".join(undocumented)
    )


def test_every_model_and_field_is_in_the_reference() -> None:
    text = manifest_reference_markdown()
    models = documented_models()
    assert set(MANIFEST_MODELS.values()) | set(OPTION_MODELS.values()) <= set(models)
    assert WinnerCriteria in models  # nested models are found too
    for kind in MANIFEST_MODELS:
        assert f"## {kind}\n" in text
    for strategy in OPTION_MODELS:
        assert f"### {strategy}\n" in text
    for model in models:
        for name, field in model.model_fields.items():
            assert f"| `{field_name(name, field)}` |" in text, (model.__name__, name)


def test_reference_uses_yaml_names_and_readable_defaults() -> None:
    text = manifest_reference_markdown()
    assert "| `memoryMiB` | integer, 1 to 4096 | `64` |" in text
    assert "| `evaluationPeriod` | duration | `PT5M` |" in text
    assert "| `stages` | list of number (0 to 100), not empty | `[10, 25, 50, 100]` |" in text
    assert (
        "| `strategy` | [strategy options](#strategies), chosen by `type` | `{type: rolling}` |"
        in (text)
    )
    assert "| `sha256` | sha256 (hex) | absent |" in text
    assert "health_check_timeout" not in text


def test_the_limits_section_states_the_limits_in_force() -> None:
    """The synced path's limits come from source/bounded.py; the sentence on the per-file and
    YAML limits is written by hand, so it is checked against the constants here."""
    from gitopsd.manifest.loader import DEFAULT_MAX_MANIFEST_BYTES, DEFAULT_MAX_MODULE_BYTES
    from gitopsd.manifest.yamltree import MAX_ALIAS_EXPANSION
    from gitopsd.manifest.yamltree import MAX_DEPTH as YAML_DEPTH
    from gitopsd.source.bounded import MAX_BYTES, MAX_DEPTH, MAX_ENTRIES, limits_markdown

    text = "\n".join(limits_markdown())
    assert text in manifest_reference_markdown()
    assert f"| {MAX_DEPTH} |" in text and f"| {MAX_ENTRIES:,} |" in text
    assert f"| {MAX_BYTES >> 20} MiB |" in text
    assert f"manifest file may hold at most {DEFAULT_MAX_MANIFEST_BYTES >> 20} MiB" in text
    assert f"a module {DEFAULT_MAX_MODULE_BYTES >> 20} MiB" in text
    assert f"YAML may nest {YAML_DEPTH} levels" in text
    assert f"expand at most {MAX_ALIAS_EXPANSION:,} nodes" in text
