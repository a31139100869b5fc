"""Invalid manifests: every problem, at once, as `file:line: message`."""

from __future__ import annotations

from tests.manifest.support import docs, function, load, node, problems, snapshot, yaml

BAD = yaml(
    """
    apiVersion: gitopsd/v1
    kind: EdgeNode
    metadata:
      name: Edge_1
      labels: {tier: prod}
    spec:
      address: ftp://x
      region: us-east
      zone: a
    ---
    apiVersion: gitopsd/v1
    kind: EdgeFunction
    metadata: {name: api}
    spec:
      version: 1.10
      module: modules/hello.wat
      healthCheck:
        timeout: 5 minutes
        failureThreshold: 0
      limits: {memoryMiB: 100000}
      strategy:
        type: canary
        stages: [10, 50]
      autoRollback:
        triggers:
          - {metric: error_rate, threshold: 5}
          - {metric: cpu, threshold: 1}
      approval: maybe
      selfHeal: "no"
      stickyHeader: X-User-Id
    ---
    apiVersion: apps/v1
    kind: Deployment
    ---
    apiVersion: gitopsd/v1
    kind: EdgeRouter
    ---
    kind: EdgeNode
    ---
    apiVersion: gitopsd/v1
    kind: EdgeFunction
    metadata: {name: api}
    spec: {version: "2", module: modules/hello.wat, helthCheck: {}}
    """
)

MORE = yaml(
    """
    apiVersion: gitopsd/v1
    kind: EdgeFunction
    metadata: {name: web}
    spec:
      version: "1.0.0"
      module: modules/hello.wat
      module: modules/hello.wat
      dependsOn:
        - api
        - ghost
    """
)


def test_every_problem_is_reported_at_once_with_file_and_line() -> None:
    found = problems(snapshot({"bad.yaml": BAD, "more.yaml": MORE}))
    metrics = (
        "'error_rate', 'crash_rate', 'timeout_rate', 'avg_latency_ms', 'p95_latency_ms', "
        "'p99_latency_ms' or 'memory_mib'"
    )
    assert found == [
        "bad.yaml:4: metadata.name: invalid name 'Edge_1': use a lowercase DNS label "
        "(a-z, 0-9 and '-', at most 63 characters, starting and ending with a letter or digit)",
        "bad.yaml:7: spec.address: invalid address 'ftp://x': use an http:// or https:// URL "
        "with a host",
        "bad.yaml:9: spec.zone: unknown field (expected one of: address, connect, region)",
        'bad.yaml:15: spec.version: version must be a string: quote it, as in "1.1"',
        "bad.yaml:18: spec.healthCheck.timeout: invalid duration '5 minutes': use ISO 8601 like "
        "'PT5M', 'PT30S', 'PT1H30M', 'P1D' (or '500ms', '30s', '5m', '1h', '1d')",
        "bad.yaml:19: spec.healthCheck.failureThreshold: Input should be greater than or equal "
        "to 1, got 0",
        "bad.yaml:20: spec.limits.memoryMiB: Input should be less than or equal to 4096, "
        "got 100000",
        "bad.yaml:21: spec.strategy: the last stage must be 100",
        f"bad.yaml:27: spec.autoRollback.triggers[1].metric: Input should be {metrics}, got 'cpu'",
        "bad.yaml:28: spec.approval: Input should be 'auto' or 'manual', got 'maybe'",
        "bad.yaml:29: spec.selfHeal: Input should be a valid boolean, got 'no'",
        "bad.yaml:32: unknown apiVersion 'apps/v1': expected 'gitopsd/v1'",
        "bad.yaml:36: unknown kind 'EdgeRouter': expected EdgeNode, EdgeFunction or DeployPolicy",
        "bad.yaml:38: missing apiVersion: expected 'gitopsd/v1'",
        "bad.yaml:42: duplicate EdgeFunction name 'api': first defined at bad.yaml:13",
        "bad.yaml:43: spec.helthCheck: unknown field (did you mean 'healthCheck'?)",
        "more.yaml:7: duplicate key 'module' (first at line 6)",
        "more.yaml:10: dependsOn names unknown function 'ghost'",
    ]


def test_missing_fields_point_at_the_parent_key_or_document_start() -> None:
    text = docs(
        "apiVersion: gitopsd/v1\nkind: EdgeNode\n",
        yaml(
            """
            apiVersion: gitopsd/v1
            kind: EdgeFunction
            metadata: {name: f}
            spec:
              module: modules/hello.wat
            """
        ),
        "kind: EdgeNode\napiVersion: gitopsd/v1\nmetadata: {}\nspec: {region: x}\n",
        "apiVersion: gitopsd/v1\n",
    )
    assert problems(snapshot({"m.yaml": text})) == [
        "m.yaml:1: metadata: required field is missing",
        "m.yaml:1: spec: required field is missing",
        "m.yaml:7: spec.version: required field is missing",
        "m.yaml:12: metadata.name: required field is missing",
        "m.yaml:13: spec: missing address: give the agent's address, or connect: dial-out "
        "for an agent that connects to the controller",
        "m.yaml:15: missing kind: expected EdgeNode, EdgeFunction or DeployPolicy",
    ]


def test_a_document_that_is_not_a_mapping() -> None:
    assert problems(snapshot({"list.yaml": "# header\n- a\n- b\n"})) == [
        "list.yaml:2: a manifest must be a mapping with apiVersion, kind, metadata and spec",
    ]


def test_strategy_type_errors_point_at_the_type_key() -> None:
    text = docs(
        function("a", "strategy:", "  batchSize: 2", "  type: rolling-update"),
        function("b", "strategy: {batchSize: 2}"),
        function("c", "strategy: {type: rolling, batch_size: 2}"),
    )
    assert problems(snapshot({"s.yaml": text})) == [
        "s.yaml:9: spec.strategy.type: unknown type 'rolling-update': expected one of 'rolling', "
        "'blue-green', 'canary', 'regional', 'ab-test', 'feature-flag'",
        "s.yaml:17: spec.strategy.type: required field is missing (one of: rolling, blue-green, "
        "canary, regional, ab-test, feature-flag)",
        # YAML takes the camelCase names only; snake_case is Python's.
        "s.yaml:25: spec.strategy.batch_size: unknown field (did you mean 'batchSize'?)",
    ]


def test_yaml_typing_traps_are_errors_not_coercions() -> None:
    text = function(
        "f",
        "limits: {memoryMiB: true, timeoutMs: '100'}",
        "targets: {selector: {tier: 1}}",
    )
    assert problems(snapshot({"t.yaml": text})) == [
        "t.yaml:7: spec.limits.memoryMiB: Input should be a valid integer, got True",
        "t.yaml:7: spec.limits.timeoutMs: Input should be a valid integer, got '100'",
        "t.yaml:8: spec.targets.selector.tier: Input should be a valid string, got 1",
    ]


def test_duplicate_names_across_files_name_the_first_occurrence() -> None:
    snap = snapshot(
        {
            "a/nodes.yaml": docs(node("edge-a"), node("edge-b", port=9102)),
            "b/nodes.yml": "# dup\n" + node("edge-a", port=9103),
            "fns.yaml": docs(function("f"), function("f")),
        }
    )
    assert problems(snap) == [
        "b/nodes.yml:4: duplicate EdgeNode name 'edge-a': first defined at a/nodes.yaml:3",
        "fns.yaml:10: duplicate EdgeFunction name 'f': first defined at fns.yaml:3",
    ]


def test_a_node_and_a_function_may_share_a_name() -> None:
    state = load(snapshot({"x.yaml": docs(node("same"), function("same"))}))
    assert list(state.nodes) == list(state.functions) == ["same"]


def test_two_nodes_with_one_address_are_refused() -> None:
    snap = snapshot({"n.yaml": docs(node("edge-a"), node("edge-b"))})
    assert problems(snap) == [
        "n.yaml:9: address 'http://127.0.0.1:9101' is already the address of node 'edge-a' "
        "(n.yaml:1)",
    ]


def test_dependency_cycles_are_reported_once_each() -> None:
    text = docs(
        function("a", "dependsOn: [c, b]"),
        function("b", "dependsOn: [a]"),
        function("c"),
        function("d", "dependsOn:", "  - c", "  - d"),
        function("e", "dependsOn: [a]"),
    )
    assert problems(snapshot({"d.yaml": text})) == [
        "d.yaml:7: dependency cycle: a -> b -> a",
        "d.yaml:32: dependency cycle: d -> d",
    ]


def test_unknown_dependencies_are_not_guessed_at_when_a_file_is_unreadable() -> None:
    snap = snapshot({"a.yaml": function("a", "dependsOn: [b]"), "b.yaml": "kind: [\n"})
    assert problems(snap) == [
        "b.yaml:1: invalid YAML: expected the node content, but found '<stream end>' "
        "(while parsing a flow node)",
    ]


def test_malformed_yaml_reports_the_parser_line_and_keeps_earlier_documents() -> None:
    text = docs(function("f", "limits: {memoryMiB: 0}"), "a: b\n  c: d\n  - e\n")
    assert problems(snapshot({"y.yaml": text})) == [
        "y.yaml:7: spec.limits.memoryMiB: Input should be greater than or equal to 1, got 0",
        "y.yaml:10: invalid YAML: mapping values are not allowed here",
    ]


def test_module_and_export_problems_point_at_the_right_keys() -> None:
    wat_no_health = '(module (func (export "_start")))'
    wat_no_start = '(module (func (export "health_check")))'
    snap = snapshot(
        {
            "f.yaml": docs(
                function("a", module="modules/no-health.wat"),
                function("b", "healthCheck: {function: ping}"),
                function("c", module="modules/no-start.wat"),
            ),
            "modules/no-health.wat": wat_no_health,
            "modules/no-start.wat": wat_no_start,
        }
    )
    assert problems(snap) == [
        "f.yaml:6: module 'modules/no-health.wat' exports no function 'health_check' "
        "(spec.healthCheck.function)",
        "f.yaml:14: module 'modules/hello.wat' exports no function 'ping' "
        "(spec.healthCheck.function)",
        "f.yaml:21: module 'modules/no-start.wat' exports no function '_start' "
        "(the request handler)",
    ]
