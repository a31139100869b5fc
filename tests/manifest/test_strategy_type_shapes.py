"""`strategy.type` that is not a string is a file:line problem, never a crash (found by the
loader fuzz of `make faults`: a list there raised TypeError in the plugin tag lookup)."""

from __future__ import annotations

import pytest

from tests.manifest.support import problems, snapshot


@pytest.mark.parametrize("shape", ["[]", "[canary]", "{a: 1}", "3", "true"])
def test_a_strategy_type_that_is_not_a_string_is_a_problem(shape: str) -> None:
    manifest = (
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\nmetadata:\n  name: a\nspec:\n"
        "  module: modules/hello.wat\n  strategy:\n"
        f"    type: {shape}\n"
        "  version: 1.0.0\n"
    )
    found = problems(snapshot({"fuzz.yaml": manifest}))
    assert any(p.startswith("fuzz.yaml:8: spec.strategy.type") for p in found), found
