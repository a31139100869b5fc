"""Problems name the line an editor shows (issue 14, finding 13).

PyYAML counts U+0085 (NEL), U+2028 and U+2029 as line breaks; editors, `cat -n`, `wc -l` and
YAML 1.2 count only `\\n`, `\\r\\n` and a lone `\\r`. The expected lines here come from
`bytes.splitlines()`, which splits on exactly those, never from the code under test.
"""

from __future__ import annotations

import pytest
import yaml

from gitopsd.errors import InvalidManifests
from gitopsd.manifest.lines import LineIndex, line_of_byte
from gitopsd.manifest.loader import load_snapshot
from tests.manifest.support import function, node, snapshot

BREAKS_PYYAML_ADDS = {"NEL": "\u0085", "LS": "\u2028", "PS": "\u2029"}


def editor_line(data: bytes, needle: bytes, nth: int = 0) -> int:
    """1-based line of the `nth` line of `data` that contains `needle`, as an editor numbers."""
    hits = [i for i, text in enumerate(data.splitlines(), 1) if needle in text]
    return hits[nth]


def load_problems(data: bytes, name: str = "f.yaml") -> list[tuple[str, int, str]]:
    with pytest.raises(InvalidManifests) as caught:
        load_snapshot(snapshot({name: data}))
    return [(p.path, p.line, p.message) for p in caught.value.problems]


@pytest.mark.parametrize("char", BREAKS_PYYAML_ADDS.values(), ids=BREAKS_PYYAML_ADDS.keys())
@pytest.mark.parametrize("quote", ["double", "single", "comment", "plain-in-flow"])
def test_a_unicode_line_separator_does_not_shift_later_lines(char: str, quote: str) -> None:
    """Three of `char` above the faulty key: PyYAML's own count was three lines too far."""
    holder = {
        "double": f'labels: {{team: "a{char}b{char}c{char}d"}}',
        "single": f"labels: {{team: 'a{char}b{char}c{char}d'}}",
        "comment": f"labels: {{}}  # a{char}b{char}c{char}d",
        "plain-in-flow": f"labels: {{team: [a{char}b{char}c{char}d]}}",
    }[quote]
    text = (
        node("edge-a")
        + "---\n"
        + function("f", "limits: {timeoutMs: 0}").replace(
            "metadata: {name: f}", f"metadata:\n  name: f\n  {holder}"
        )
        + "  colour: blue\n"
    )
    data = text.encode()
    if quote == "comment":  # YAML 1.1 ends the comment at the separator: what follows is YAML
        ((_, line, message),) = load_problems(data)
        assert line == editor_line(data, b"labels: {}  #")
        assert f"U+{ord(char):04X}, which YAML 1.1 reads as a line break" in message
        return
    found = {message.split(":")[0]: line for _, line, message in load_problems(data)}
    assert found["spec.limits.timeoutMs"] == editor_line(data, b"timeoutMs: 0")
    assert found["spec.colour"] == editor_line(data, b"colour: blue")
    assert found["spec.colour"] == len(data.splitlines())  # the last line, not past it


@pytest.mark.parametrize("char", BREAKS_PYYAML_ADDS.values(), ids=BREAKS_PYYAML_ADDS.keys())
def test_syntax_errors_after_a_unicode_separator_name_the_editor_line(char: str) -> None:
    data = f'apiVersion: "gitopsd/v1{char}{char}"\nkind: EdgeNode\nmetadata: [\n'.encode()
    ((_, line, message),) = load_problems(data)
    assert "invalid YAML" in message
    assert line == 3 == len(data.splitlines())


@pytest.mark.parametrize("char", BREAKS_PYYAML_ADDS.values(), ids=BREAKS_PYYAML_ADDS.keys())
def test_reader_and_utf8_errors_after_a_unicode_separator(char: str) -> None:
    control = f"a: '{char}{char}'\nb: 1\nc: \x07\n".encode()
    assert [line for _, line, _ in load_problems(control)] == [3]
    broken = f"a: '{char}{char}'\nb: 1\nc: ".encode() + b"\xff\n"
    assert [line for _, line, _ in load_problems(broken)] == [3]


def test_crlf_and_lone_cr_are_line_breaks() -> None:
    text = function("f", "limits: {timeoutMs: 0}")
    for newline in ("\r\n", "\r"):
        data = text.replace("\n", newline).encode()
        ((_, line, message),) = load_problems(data)
        assert message.startswith("spec.limits.timeoutMs") and line == 7 == len(data.splitlines())


def test_the_fuzz_example_that_pointed_past_the_end_of_its_file() -> None:
    """Regression (issue 14, finding 13): `make faults` found a generated manifest with U+0085
    inside a quoted value and a problem at `fuzz.yaml:70` in a 69-line file. The same shape:
    three functions dumped by PyYAML (which writes NEL raw inside a quoted scalar), a NEL in
    the first, a U+2028 in the last, and problems at the very end."""
    base = {
        "apiVersion": "gitopsd/v1",
        "kind": "EdgeFunction",
        "spec": {
            "version": "1.0.0",
            "module": "modules/hello.wat",
            "healthCheck": {"timeout": "PT5S"},
            "limits": {"memoryMiB": 64, "timeoutMs": 100},
            "strategy": {"type": "canary", "stages": [10, 100], "evaluationPeriod": "PT1M"},
        },
    }
    docs = [base | {"metadata": {"name": name, "labels": {"team": "edge"}}} for name in "abc"]
    docs[0] = docs[0] | {"metadata": {"name": "a", "labels": {"team": "x\u0085y"}}}
    docs[2] = docs[2] | {"spec": docs[2]["spec"] | {"zz": None, "version": "1\u2028"}}
    data = yaml.safe_dump_all(docs, allow_unicode=True).encode()
    assert "\u0085".encode() in data and "\u2028".encode() in data  # written raw
    lines = len(data.splitlines())
    found = load_problems(data, "fuzz.yaml")
    assert all(1 <= line <= lines for _, line, _ in found), (lines, found)
    by_field = {message.split(":")[0]: line for _, line, message in found}
    assert by_field["metadata.labels.team"] == editor_line(data, b"team: ")
    assert by_field["spec.zz"] == editor_line(data, b"zz: null")
    assert by_field["spec.version"] == editor_line(data, b"version: ", 2)
    assert by_field["spec.zz"] == lines  # PyYAML's own count put it past the end


def test_line_index_counts_what_an_editor_counts() -> None:
    text = "a\r\nb\rc\u0085d\u2028e\u2029f\nlast\n"
    index = LineIndex(text)
    lines = text.encode().splitlines()
    assert index.last == len(lines) == 4
    for offset, char in enumerate(text):
        # the lines that text up to and including this character spans
        expected = len(text[: offset + 1].encode().splitlines())
        assert index.line(offset) == expected, (offset, char)
    assert index.line(len(text)) == 4  # the end of a file that ends with a newline
    assert LineIndex("").last == 1 and LineIndex("x").line(1) == 1
    data = text.encode()
    assert [line_of_byte(data, data.index(c)) for c in (b"b", b"c", b"f", b"last")] == [2, 3, 3, 4]
