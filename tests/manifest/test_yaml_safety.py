"""Hostile or broken files: refused quickly, with a line, never with a crash."""

from __future__ import annotations

import time

from gitopsd.manifest.yamltree import MAX_ALIASES
from tests.manifest.support import docs, function, node, problems, snapshot


def _billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly() -> None:
    started = time.perf_counter()
    found = problems(snapshot({"bomb.yaml": _billion_laughs()}))
    assert time.perf_counter() - started < 1.0
    assert found == ["bomb.yaml:5: YAML aliases expand to more than 10000 nodes: refused"]


def test_too_many_aliases_are_refused() -> None:
    text = "a: &x 1\nb: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n"
    assert problems(snapshot({"many.yaml": text})) == [
        f"many.yaml:2: more than {MAX_ALIASES} YAML aliases in one document: refused"
    ]


def test_recursive_alias_and_deep_nesting_are_refused() -> None:
    snap = snapshot({"loop.yaml": "a: &x [1, *x]\n", "deep.yaml": "\n" + "[" * 5000})
    assert problems(snap) == [
        "deep.yaml:2: YAML nested deeper than 64 levels",
        "loop.yaml:1: YAML nested deeper than 64 levels (recursive alias?)",
    ]


def test_oversized_manifest_is_refused_without_parsing() -> None:
    text = node("edge-a") + "# " + "x" * 200 + "\n"
    found = problems(
        snapshot({"big.yaml": text, "ok.yaml": node("edge-b")}), max_manifest_bytes=200
    )
    assert found == [f"big.yaml:1: file is {len(text)} bytes, over the limit of 200 for a manifest"]


def test_too_many_documents() -> None:
    snap = snapshot({"a.yaml": docs(node("n1"), node("n2", port=2)), "b.yaml": node("n3", port=3)})
    assert problems(snap, max_documents=2) == [
        "b.yaml:1: too many documents: the snapshot holds more than 2"
    ]


def test_invalid_utf8_names_the_line() -> None:
    data = node("edge-a").encode() + b"# caf\xe9\n"
    assert problems(snapshot({"latin1.yaml": data})) == [
        f"latin1.yaml:5: invalid UTF-8 at byte {len(data) - 2}: manifests must be UTF-8"
    ]


def test_utf8_byte_order_mark_is_fine() -> None:
    from tests.manifest.support import load

    state = load(snapshot({"bom.yaml": "\ufeff" + node("edge-a")}))
    assert list(state.nodes) == ["edge-a"]


def test_control_characters_and_custom_tags_are_refused() -> None:
    snap = snapshot(
        {
            "ctl.yaml": "a: 1\nb: \x07\n",
            "tag.yaml": "a: !!python/object:os.system echo\n",
            "set.yaml": "a: !!set {x}\n",
            "key.yaml": "? [a, b]\n: 1\n",
        }
    )
    assert problems(snap) == [
        "ctl.yaml:2: invalid character U+0007 in YAML: special characters are not allowed",
        "key.yaml:1: mapping keys must be plain scalars",
        "set.yaml:1: unsupported YAML tag !!set",
        "tag.yaml:1: unsupported YAML tag !!python/object:os.system",
    ]


def test_symlinked_manifest_is_refused() -> None:
    snap = snapshot({"real.yaml": node("edge-a")}, symlinks={"link.yaml": "real.yaml"})
    assert problems(snap) == [
        "link.yaml:1: manifest is a symlink: symlinks are refused, commit the file"
    ]


def test_unreadable_documents_do_not_hide_problems_elsewhere() -> None:
    snap = snapshot(
        {
            "a.yaml": "a: [\n",
            "b.yaml": function("f", "limits: {timeoutMs: 0}"),
        }
    )
    assert problems(snap) == [
        "a.yaml:1: invalid YAML: expected the node content, but found '<stream end>' "
        "(while parsing a flow node)",
        "b.yaml:7: spec.limits.timeoutMs: Input should be greater than or equal to 1, got 0",
    ]
