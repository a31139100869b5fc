"""Whatever bytes a commit holds, the loader returns a DesiredState or raises InvalidManifests."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitopsd.errors import InvalidManifests
from gitopsd.manifest.desired import DesiredState
from gitopsd.manifest.loader import load_snapshot
from tests.manifest.support import EXAMPLE, WAT, snapshot

_TOKENS = [
    "apiVersion: gitopsd/v1\n", "kind: EdgeNode\n", "kind: EdgeFunction\n", "metadata:", "spec:",
    " {name: a}", "name: ", "version: ", "module: ", "modules/image-processor.wat", "\n", "  ",
    "- ", "---\n", "...\n", "&a ", "*a", "<<: ", "{", "}", "[", "]", ", ", ": ", "? ", "'", '"',
    "#", "\t", "!!str ", "!!binary ", "!x ", "|\n", ">-\n", "1.5", "true", "null", "~", "-1",
    "PT5M", "0x1F", "2020-01-01", "é", "\ufeff", "\x00", "dependsOn: [a]", "strategy: ",
    "type: canary", "stages: [100]", "sha256: ", "a" * 64,
]  # fmt: skip

_yamlish = st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join).map(str.encode)


@st.composite
def _mutated_example(draw: st.DrawFn) -> bytes:
    text = EXAMPLE
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text)))
        length = draw(st.integers(0, 12))
        insert = draw(st.sampled_from(_TOKENS) | st.text(max_size=6))
        text = text[:start] + insert + text[start + length :]
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), _yamlish, _mutated_example()))
def test_loader_returns_state_or_invalid_manifests(data: bytes) -> None:
    snap = snapshot({"fuzz.yaml": data, "modules/image-processor.wat": WAT})
    try:
        state = load_snapshot(snap)
    except InvalidManifests as exc:
        assert exc.problems
        assert all(p.path == "fuzz.yaml" and p.line >= 1 for p in exc.problems)
    else:
        assert isinstance(state, DesiredState)
        for name in state.functions:
            state.fingerprint(name)
