"""spec.overrides: per-node limits by region or labels, their order, and their problems."""

from __future__ import annotations

from tests.manifest.support import docs, function, load, node, problems, snapshot

NODES = docs(
    node("us-1", "us-east", 9101, "{tier: prod}"),
    node("ap-1", "ap-south", 9102, "{tier: prod}"),
    node("ap-2", "ap-south", 9103, "{tier: canary}"),
)


def test_later_overrides_win_field_by_field() -> None:
    state = load(
        snapshot(
            {
                "s.yaml": docs(
                    NODES,
                    function(
                        "api",
                        "limits: {memoryMiB: 64, timeoutMs: 100}",
                        "overrides:",
                        "  - {regions: [ap-south], limits: {memoryMiB: 128, timeoutMs: 200}}",
                        "  - {selector: {tier: canary}, limits: {memoryMiB: 256}}",
                    ),
                )
            }
        )
    )
    got = {
        n: (state.limits_on("api", n).memory_mib, state.limits_on("api", n).timeout_ms)
        for n in ("us-1", "ap-1", "ap-2")
    }
    # ap-2 matches both: memoryMiB from the later one, timeoutMs kept from the first.
    assert got == {"us-1": (64, 100), "ap-1": (128, 200), "ap-2": (256, 200)}
    assert state.warnings == ()


def test_an_override_change_changes_the_fingerprint_and_none_keeps_it() -> None:
    def fingerprint(*lines: str) -> str:
        state = load(snapshot({"s.yaml": docs(NODES, function("api", *lines))}))
        return state.fingerprint("api")

    plain = fingerprint()
    small = fingerprint("overrides: [{regions: [ap-south], limits: {memoryMiB: 128}}]")
    large = fingerprint("overrides: [{regions: [ap-south], limits: {memoryMiB: 256}}]")
    assert len({plain, small, large}) == 3


def test_problems_are_reported_at_their_line() -> None:
    text = docs(
        NODES,
        function(
            "api",
            "targets: {regions: [us-east, ap-south], selector: {tier: prod}}",
            "overrides:",
            "  - limits: {memoryMiB: 128}",  # line 24: neither regions nor selector
            "  - regions: [ap-south]",  # line 25
            "    strategy: {type: canary}",
            "    limits: {memoryMiB: 128}",
            "  - {regions: [ap-south], limits: {}}",  # line 28
            "  - {regions: [ap-south], limits: {memoryMiB: 9999, cpu: 2}}",  # line 29
        ),
    )
    assert problems(snapshot({"s.yaml": text})) == [
        "s.yaml:24: spec.overrides[0]: an override needs regions or a non-empty selector: "
        "for every node, change spec.limits instead",
        "s.yaml:25: spec.overrides[1]: strategy applies to the function as a whole and cannot "
        "be overridden per node: an override sets only limits",
        "s.yaml:28: spec.overrides[2].limits: an override's limits must set memoryMiB, "
        "timeoutMs or both",
        "s.yaml:29: spec.overrides[3].limits.cpu: unknown field (expected one of: memoryMiB, "
        "timeoutMs)",
        "s.yaml:29: spec.overrides[3].limits.memoryMiB: Input should be less than or equal "
        "to 4096, got 9999",
    ]


def test_an_override_that_can_never_apply_is_a_problem() -> None:
    text = docs(
        NODES,
        function(
            "api",
            "targets: {regions: [us-east, ap-south], selector: {tier: prod}}",
            "overrides:",
            "  - regions: [ap-south, eu-west]",
            "    selector: {tier: canary}",
            "    limits: {memoryMiB: 128}",
        ),
    )
    assert problems(snapshot({"s.yaml": text})) == [
        "s.yaml:24: region 'eu-west' is outside targets.regions (us-east, ap-south): no "
        "target node can be in it",
        "s.yaml:25: selector tier=canary contradicts targets.selector tier=prod: no target "
        "node can match it",
    ]


def test_an_override_that_matches_no_node_today_is_a_warning() -> None:
    state = load(
        snapshot(
            {
                "s.yaml": docs(
                    NODES,
                    function(
                        "api",
                        "overrides:",
                        "  - {regions: [ap-south], limits: {memoryMiB: 128}}",
                        "  - {selector: {tier: gpu}, limits: {memoryMiB: 512}}",
                    ),
                )
            }
        )
    )
    assert state.warnings == (
        "s.yaml:24: override 2 of function 'api' matches none of its target nodes",
    )
    assert state.limits_on("api", "ap-1").memory_mib == 128
