"""A corpus of bad manifest commits: every case must be refused as a whole, with file:line.

Each case is a complete snapshot: the valid base (two nodes, function `good` at 2.0.0 and its
module) plus what the case adds or replaces. Nothing of a case may load, so a DesiredState
from `load_snapshot` is a missed rejection, and anything but InvalidManifests is a crash.
`expect` is a fragment (lowercase) that one of the problems must contain, when the right
message is clear; `blame` is the file one problem must name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import wasmtime

from tests.manifest.support import WAT

NODES = """\
apiVersion: gitopsd/v1
kind: EdgeNode
metadata: {name: edge-a, labels: {tier: prod}}
spec: {address: "http://127.0.0.1:9101", region: us-east}
---
apiVersion: gitopsd/v1
kind: EdgeNode
metadata: {name: edge-b, labels: {tier: prod}}
spec: {address: "http://127.0.0.1:9102", region: eu-central}
"""

WASM = bytes(wasmtime.wat2wasm(WAT))
WASM_SHA = hashlib.sha256(WASM).hexdigest()


def fn_doc(
    name: str = "bad",
    *spec_lines: str,
    version: str = '"1.0.0"',
    module: str = "modules/good.wat",
    metadata: str | None = None,
    head: str = "apiVersion: gitopsd/v1\nkind: EdgeFunction\n",
) -> str:
    """An EdgeFunction document; `spec_lines` are added under spec (indented by two)."""
    meta = metadata if metadata is not None else f"{{name: {name}}}"
    extra = "".join(f"  {line}\n" for line in spec_lines)
    return f"{head}metadata: {meta}\nspec:\n  version: {version}\n  module: {module}\n{extra}"


GOOD = fn_doc("good", version='"2.0.0"', module="../modules/good.wat")
BASE: dict[str, bytes] = {
    "nodes.yaml": NODES.encode(),
    "functions/good.yaml": GOOD.encode(),
    "modules/good.wat": WAT.encode(),
}


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    files: dict[str, bytes] = field(default_factory=dict)  # added to (or replacing) BASE
    symlinks: dict[str, str] = field(default_factory=dict)  # path -> link target
    blame: str = "zbad.yaml"
    expect: str | None = None
    limits: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


def _case(category: str, name: str, text: str | bytes, **kw: object) -> Case:
    data = text.encode() if isinstance(text, str) else text
    return Case(category, name, {"zbad.yaml": data}, **kw)  # type: ignore[arg-type]


# -- malformed YAML ------------------------------------------------------------------------

_BROKEN = {
    "unclosed-flow-map": "spec: {version: 1",
    "unclosed-flow-seq": "spec: [a, b",
    "unterminated-single": "key: 'unterminated",
    "unterminated-double": 'key: "unterminated',
    "bad-indent": "a:\n    b: 1\n  c: 2",
    "tab-indent": "a:\n\tb: 1",
    "value-colon": "key: value: other",
    "seq-then-map": "- a\nb: c",
    "stray-bracket": "]",
    "stray-brace": "}",
    "undefined-alias": "key: *nope",
    "bare-alias-doc": "*undefined",
    "double-directive": "%YAML 1.1\n%YAML 1.1\n---\na: 1",
    "python-object": "a: !!python/object/apply:os.system ['true']",
    "python-name": "a: !!python/name:os.system",
    "binary-tag": "a: !!binary aGVsbG8=",
    "custom-tag": "a: !custom x",
    "set-tag": "a: !!set {x, y}",
    "omap-tag": "a: !!omap [{x: 1}]",
    "complex-key": "? [complex]\n: key",
    "nul-char": "a: 1\x00",
    "bell-char": "a: \x07bell",
    "extra-close-map": "{a: 1}}",
    "extra-close-seq": "a: [1, 2]]",
    "mapping-in-plain": "a: b\n  c: d",
    "long-implicit-key": "k" * 1100 + ": v",
    "backtick": "a: `cmd`",
    "at-sign": "a: @x",
    "bad-timestamp": "a: 2001-02-30",
    "merge-scalar": "<<: 5",
    "merge-seq-of-scalars": "<<: [1, 2]",
    "quoted-then-text": "'a': 'b' 'c'",
    "anchor-alone": "a: & b",
    "dash-in-map": "a: 1\n- b",
    "bom-in-middle": "a: 1\n\ufeffb: 2",
    "non-printable": "a: \x1b[31mred",
    "unpaired-surrogate-escape": 'a: "\\ud800"',
    "huge-int-key": "999999999999999999999999999999: x",
    "list-doc": "- just\n- a list",
    "scalar-doc": "just a scalar",
    "number-doc": "42",
}


def malformed() -> list[Case]:
    cases = []
    for name, snippet in _BROKEN.items():
        # alone, after a valid document in the same file, and appended inside a document
        cases.append(_case("malformed-yaml", f"{name}/alone", snippet + "\n"))
        cases.append(_case("malformed-yaml", f"{name}/second-doc", fn_doc() + "---\n" + snippet))
        cases.append(_case("malformed-yaml", f"{name}/in-doc", fn_doc() + snippet + "\n"))
    return cases


# -- alias bombs and nesting -----------------------------------------------------------------


def _laughs(width: int, depth: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, depth):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def alias_bombs() -> list[Case]:
    cases = []
    for width, depth in [(9, 10), (10, 5), (4, 8), (3, 10), (2, 20), (20, 4), (100, 3), (7, 6)]:
        bomb = _laughs(width, depth)
        cases.append(_case("alias-bomb", f"laughs-{width}x{depth}", bomb, expect="yaml alias"))
        labels = f"a{depth - 1}"
        inside = fn_doc(metadata=f"{{name: bad, labels: *{labels}}}")
        cases.append(_case("alias-bomb", f"laughs-{width}x{depth}/in-labels", bomb + inside))
    merge = "b0: &b0 {x: 1, y: 2}\n"
    for level in range(1, 8):
        refs = ", ".join([f"*b{level - 1}"] * 8)
        merge += f"b{level}: &b{level} {{<<: [{refs}], k{level}: {{<<: [{refs}]}}}}\n"
    cases += [
        _case("alias-bomb", "merge-key-bomb", merge, expect="yaml alias"),
        _case("alias-bomb", "recursive-seq", "a: &x [1, *x]\n", expect="recursive alias"),
        _case("alias-bomb", "recursive-map", "a: &x {b: *x}\n", expect="recursive alias"),
        _case("alias-bomb", "recursive-merge", "a: &x {<<: *x}\n"),
        _case("alias-bomb", "101-aliases", "a: &x 1\nb: [" + ", ".join(["*x"] * 101) + "]\n"),
        _case("alias-bomb", "deep-flow-seq", "a: " + "[" * 200 + "]" * 200 + "\n"),
        _case("alias-bomb", "deep-flow-map", "a: " + "{a: " * 200 + "1" + "}" * 200 + "\n"),
        _case("alias-bomb", "unclosed-deep", "[" * 5000, expect="nested deeper"),
        _case(
            "alias-bomb",
            "deep-block",
            "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "x\n",
            expect="nested deeper",
        ),
        _case("alias-bomb", "deep-block-seq", "".join("  " * i + "-\n" for i in range(100))),
    ]
    # Nesting the size of a whole manifest (1 MiB): PyYAML's composer recurses per level, so
    # each must end at the depth limit with a line, never in a RecursionError (finding 11).
    mib = (1 << 20) - 16
    deep = {
        "1mib-flow-seq": "[" * mib,
        "1mib-flow-map": "{a: " * (mib // 4),
        "1mib-flow-mixed": "[{a: " * (mib // 5),
        "1mib-quoted-keys": '{"a": ' * (mib // 6),
        "1mib-inline-dashes": "- " * (mib // 2) + "x\n",
        "1mib-explicit-keys": "? " * (mib // 2) + "x\n",
        "alias-chain": "a0: &a0 x\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 99)),
        "merge-chain": "b0: &b0 {x: 1}\n"
        + "".join(f"b{i}: &b{i} {{<<: *b{i - 1}}}\n" for i in range(1, 99)),
    }
    cases += [
        _case("alias-bomb", name, text, expect="nested deeper") for name, text in deep.items()
    ]
    return cases


# -- duplicate keys ----------------------------------------------------------------------------


def duplicate_keys() -> list[Case]:
    cases = []
    doc = fn_doc()
    for key in ("apiVersion", "kind", "metadata", "spec"):
        line = next(line for line in doc.splitlines() if line.startswith(key + ":"))
        cases.append(
            _case("duplicate-key", f"top-{key}", doc + line + "\n", expect="duplicate key")
        )
    for key, value in [
        ("version", '"1.0.1"'),
        ("module", "modules/good.wat"),
        ("limits", "{memoryMiB: 8}"),
        ("strategy", "{type: canary}"),
        ("targets", "{}"),
        ("healthCheck", "{}"),
        ("sha256", "null"),
        ("approval", "auto"),
    ]:
        extra = [f"{key}: {value}", f"{key}: {value}"]
        if key in ("version", "module"):
            extra = [f"{key}: {value}"]
        cases.append(_case("duplicate-key", f"spec-{key}", fn_doc("bad", *extra), expect="dup"))
    variants = {
        "flow-name": fn_doc(metadata="{name: bad, name: bad2}"),
        "flow-labels": fn_doc(metadata="{name: bad, labels: {a: b, a: c}}"),
        "limits-flow": fn_doc("bad", "limits: {memoryMiB: 8, memoryMiB: 16}"),
        "strategy-type": fn_doc("bad", "strategy: {type: canary, type: rolling}"),
        "quoted-vs-plain": fn_doc("bad", '"version": "1.0.1"'),
        "single-quoted": fn_doc("bad", "'module': modules/good.wat"),
        "bool-keys": "yes: 1\ntrue: 2\n",
        "int-keys": "1: a\n0x1: b\n",
        "null-keys": "~: a\nnull: b\n",
        "node-spec": NODES + "---\n" + NODES.split("---\n")[0] + "metadata: {name: x}\n",
        "stages-map": fn_doc(
            "bad", "strategy:", "  type: canary", "  stages: [10]", "  stages: [20]"
        ),
        "explicit-key": fn_doc("bad", "? version", ': "3.0.0"'),
    }
    for name, text in variants.items():
        cases.append(_case("duplicate-key", name, text, expect="duplicate key"))
    return cases


# -- bad UTF-8 -----------------------------------------------------------------------------------

_BAD_BYTES = {
    "ff": b"\xff",
    "fe-ff": b"\xfe\xff",
    "truncated-2byte": b"\xc3",
    "overlong-slash": b"\xc0\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above-max": b"\xf4\x90\x80\x80",
    "stray-continuation": b"\x80",
    "latin1-e-acute": b"\xe9",
}


def bad_utf8() -> list[Case]:
    cases = []
    doc = fn_doc().encode()
    for name, raw in _BAD_BYTES.items():
        cases.append(_case("bad-utf8", f"{name}/start", raw + doc, expect="invalid utf-8"))
        cases.append(_case("bad-utf8", f"{name}/comment", doc + b"# caf" + raw + b"\n"))
        cases.append(
            _case("bad-utf8", f"{name}/name", doc.replace(b"name: bad", b"name: b" + raw + b"d"))
        )
    cases += [
        _case("bad-utf8", "utf16-bom", fn_doc().encode("utf-16"), expect="invalid utf-8"),
        _case("bad-utf8", "utf32", fn_doc().encode("utf-32"), expect="invalid utf-8"),
        _case("bad-utf8", "cp1252-quotes", doc + b"# \x93quoted\x94\n", expect="invalid utf-8"),
        Case(
            "bad-utf8",
            "module-not-utf8",
            {
                "zbad.yaml": fn_doc(module="modules/latin.wat").encode(),
                "modules/latin.wat": b"\xff",
            },
            expect="not utf-8",
        ),
    ]
    return cases


# -- schema violations ---------------------------------------------------------------------------


def schema() -> list[Case]:
    head = "apiVersion: gitopsd/v1\nkind: EdgeFunction\n"
    node_head = "apiVersion: gitopsd/v1\nkind: EdgeNode\n"
    texts: dict[str, str] = {
        # documents that are not manifests
        "missing-apiversion": fn_doc(head="kind: EdgeFunction\n"),
        "missing-kind": fn_doc(head="apiVersion: gitopsd/v1\n"),
        "apiversion-v2": fn_doc(head="apiVersion: gitopsd/v2\nkind: EdgeFunction\n"),
        "apiversion-beta": fn_doc(head="apiVersion: gitopsd/v1beta1\nkind: EdgeFunction\n"),
        "apiversion-case": fn_doc(head="apiVersion: GitOpsD/v1\nkind: EdgeFunction\n"),
        "apiversion-int": fn_doc(head="apiVersion: 1\nkind: EdgeFunction\n"),
        "kind-unknown": fn_doc(head="apiVersion: gitopsd/v1\nkind: Deployment\n"),
        "kind-lowercase": fn_doc(head="apiVersion: gitopsd/v1\nkind: edgefunction\n"),
        "kind-list": fn_doc(head="apiVersion: gitopsd/v1\nkind: [EdgeFunction]\n"),
        "kind-null": fn_doc(head="apiVersion: gitopsd/v1\nkind:\n"),
        "key-case-kind": fn_doc(head="apiVersion: gitopsd/v1\nKind: EdgeFunction\n"),
        "missing-metadata": head + "spec: {version: '1', module: modules/good.wat}\n",
        "missing-spec": head + "metadata: {name: bad}\n",
        "spec-null": head + "metadata: {name: bad}\nspec:\n",
        "spec-list": head + "metadata: {name: bad}\nspec: [version]\n",
        "metadata-string": head + "metadata: bad\nspec: {version: '1', module: modules/good.wat}\n",
        "unknown-top-field": fn_doc() + "status: {}\n",
        "missing-name": fn_doc(metadata="{labels: {}}"),
        "missing-version": head + "metadata: {name: bad}\nspec: {module: modules/good.wat}\n",
        "missing-module": head + "metadata: {name: bad}\nspec: {version: '1'}\n",
        # names
        "name-upper": fn_doc("Bad"),
        "name-all-caps": fn_doc("BAD"),
        "name-underscore": fn_doc("bad_fn"),
        "name-leading-dash": fn_doc(metadata="{name: -bad}"),
        "name-trailing-dash": fn_doc("bad-"),
        "name-64": fn_doc("b" * 64),
        "name-empty": fn_doc(metadata='{name: ""}'),
        "name-dot": fn_doc("bad.fn"),
        "name-space": fn_doc(metadata='{name: "bad fn"}'),
        "name-homoglyph": fn_doc("b\u0430d"),
        "name-int": fn_doc(metadata="{name: 42}"),
        "name-bool": fn_doc(metadata="{name: yes}"),
        "name-traversal": fn_doc(metadata='{name: "../../etc"}'),
        "metadata-unknown": fn_doc(metadata="{name: bad, annotations: {a: b}}"),
        "label-key-bad": fn_doc(metadata='{name: bad, labels: {"-x": y}}'),
        "label-value-bad": fn_doc(metadata='{name: bad, labels: {x: "a b"}}'),
        "label-value-int": fn_doc(metadata="{name: bad, labels: {x: 1}}"),
        "label-value-long": fn_doc(metadata=f"{{name: bad, labels: {{x: {'v' * 64}}}}}"),
        "labels-list": fn_doc(metadata="{name: bad, labels: [a, b]}"),
        # versions
        "version-float": fn_doc(version="1.10"),
        "version-int": fn_doc(version="2"),
        "version-empty": fn_doc(version='""'),
        "version-space": fn_doc(version='"1.0 beta"'),
        "version-slash": fn_doc(version='"1.0/../x"'),
        "version-newline": fn_doc(version='"1.0\\nX-Injected: yes"'),
        "version-long": fn_doc(version='"' + "1" * 129 + '"'),
        "version-null": fn_doc(version="null"),
        "version-list": fn_doc(version="[1, 0]"),
        # module field types
        "module-int": fn_doc(module="42"),
        "module-null": fn_doc(module="null"),
        "module-list": fn_doc(module="[modules/good.wat]"),
        "module-empty": fn_doc(module='""'),
        "module-not-wasm": fn_doc(module="nodes.yaml"),
        "module-missing-file": fn_doc(module="modules/missing.wat"),
        "module-directory": fn_doc(module="modules"),
        # limits, health, strategy, triggers
        "memory-zero": fn_doc("bad", "limits: {memoryMiB: 0}"),
        "memory-huge": fn_doc("bad", "limits: {memoryMiB: 5000}"),
        "memory-string": fn_doc("bad", 'limits: {memoryMiB: "64"}'),
        "memory-float": fn_doc("bad", "limits: {memoryMiB: 1.5}"),
        "memory-bool": fn_doc("bad", "limits: {memoryMiB: true}"),
        "memory-snake": fn_doc("bad", "limits: {memory_mib: 64}"),
        "timeout-negative": fn_doc("bad", "limits: {timeoutMs: -1}"),
        "timeout-huge": fn_doc("bad", "limits: {timeoutMs: 600000}"),
        "timeout-bigint": fn_doc("bad", "limits: {timeoutMs: " + "9" * 40 + "}"),
        "limits-cpu": fn_doc("bad", "limits: {cpu: 1}"),
        "health-unknown": fn_doc("bad", "healthCheck: {path: /healthz}"),
        "health-threshold-0": fn_doc("bad", "healthCheck: {successThreshold: 0}"),
        "health-threshold-big": fn_doc("bad", "healthCheck: {failureThreshold: 1000}"),
        "health-no-export": fn_doc("bad", "healthCheck: {function: nope}"),
        "health-expect-long": fn_doc("bad", "healthCheck: {expect: " + "x" * 5000 + "}"),
        "strategy-unknown": fn_doc("bad", "strategy: {type: big-bang}"),
        "strategy-string": fn_doc("bad", "strategy: canary"),
        "strategy-no-type": fn_doc("bad", "strategy: {stages: [10]}"),
        "strategy-snake": fn_doc("bad", "strategy: {type: rolling, batch_size: 2}"),
        "strategy-foreign-option": fn_doc("bad", "strategy: {type: rolling, stages: [10]}"),
        "canary-over-100": fn_doc("bad", "strategy: {type: canary, stages: [50, 150]}"),
        "canary-negative": fn_doc("bad", "strategy: {type: canary, stages: [-10, 100]}"),
        "canary-nan": fn_doc("bad", "strategy: {type: canary, stages: [.nan]}"),
        "canary-inf": fn_doc("bad", "strategy: {type: canary, stages: [.inf]}"),
        "canary-strings": fn_doc("bad", "strategy: {type: canary, stages: ['10%']}"),
        "rolling-batch-0": fn_doc("bad", "strategy: {type: rolling, batchSize: 0}"),
        "flag-over-100": fn_doc("bad", "strategy: {type: feature-flag, initialRollout: 101}"),
        "ab-bad-comparison": fn_doc(
            "bad", "strategy: {type: ab-test, winnerCriteria: {comparison: bigger}}"
        ),
        "ab-bad-metric": fn_doc("bad", "strategy: {type: ab-test, winnerCriteria: {metric: x}}"),
        "trigger-metric": fn_doc("bad", "autoRollback: {triggers: [{metric: cpu, threshold: 1}]}"),
        "trigger-negative": fn_doc(
            "bad", "autoRollback: {triggers: [{metric: error_rate, threshold: -1}]}"
        ),
        "trigger-missing": fn_doc("bad", "autoRollback: {triggers: [{metric: error_rate}]}"),
        "approval-maybe": fn_doc("bad", "approval: maybe"),
        "selfheal-string": fn_doc("bad", 'selfHeal: "yes"'),
        "sticky-space": fn_doc("bad", 'stickyHeader: "X User"'),
        "sticky-newline": fn_doc("bad", 'stickyHeader: "X\\r\\nSet-Cookie: a"'),
        "targets-empty-regions": fn_doc("bad", "targets: {regions: []}"),
        "targets-bad-region": fn_doc("bad", "targets: {regions: [US_EAST]}"),
        "targets-unknown": fn_doc("bad", "targets: {nodes: [edge-a]}"),
        "depends-unknown": fn_doc("bad", "dependsOn: [nothing]"),
        "depends-self": fn_doc("bad", "dependsOn: [bad]"),
        "depends-cycle": fn_doc("bad", "dependsOn: [bad2]")
        + "---\n"
        + fn_doc("bad2", "dependsOn: [bad]"),
        "depends-string": fn_doc("bad", "dependsOn: good"),
        "spec-unknown": fn_doc("bad", "replicas: 3"),
        "no-start-export": fn_doc(module="modules/nostart.wat"),
        "invalid-wat": fn_doc(module="modules/broken.wat"),
        "garbage-wasm": fn_doc(module="modules/garbage.wasm"),
        "wat-as-wasm": fn_doc(module="modules/text.wasm"),
        # nodes
        "node-no-address": node_head + "metadata: {name: n}\nspec: {region: r}\n",
        "node-ftp": node_head + 'metadata: {name: n}\nspec: {address: "ftp://h", region: r}\n',
        "node-no-host": node_head + 'metadata: {name: n}\nspec: {address: "http://", region: r}\n',
        "node-creds": node_head
        + 'metadata: {name: n}\nspec: {address: "http://u:p@h:1", region: r}\n',
        "node-query": node_head
        + 'metadata: {name: n}\nspec: {address: "http://h:1/?a=b", region: r}\n',
        "node-port": node_head
        + 'metadata: {name: n}\nspec: {address: "http://h:99999", region: r}\n',
        "node-region-upper": node_head
        + 'metadata: {name: n}\nspec: {address: "http://h:1", region: US}\n',
        "node-extra": node_head
        + 'metadata: {name: n}\nspec: {address: "http://h:1", region: r, zone: a}\n',
        "node-same-address": node_head
        + 'metadata: {name: n}\nspec: {address: "http://127.0.0.1:9101", region: r}\n',
        "node-same-address-slash": node_head
        + 'metadata: {name: n}\nspec: {address: "http://127.0.0.1:9101/", region: r}\n',
    }
    extra_files = {
        "modules/nostart.wat": b'(module (func (export "health_check")))',
        "modules/broken.wat": b'(module (func (export "_start")',
        "modules/garbage.wasm": b"\0asm\x01\0\0\0\xff\xff\xff",
        "modules/text.wasm": WAT.encode(),
    }
    cases = []
    for name, text in texts.items():
        files = {"zbad.yaml": text.encode()}
        files.update({k: v for k, v in extra_files.items() if k in text})
        cases.append(Case("schema", name, files))
    return cases


# -- oversized ---------------------------------------------------------------------------------


def oversized() -> list[Case]:
    mib = 1 << 20
    big_comment = fn_doc() + "# " + "x" * mib + "\n"
    return [
        _case("oversized", "manifest-1mib+", big_comment, expect="over the limit"),
        _case("oversized", "manifest-one-line", "a: " + "x" * (2 * mib), expect="over the limit"),
        _case(
            "oversized",
            "manifest-4k-limit",
            fn_doc() + "#" * 5000,
            limits={"max_manifest_bytes": 4096},
        ),
        _case(
            "oversized",
            "many-documents",
            "---\n".join(["{a: 1}\n"] * 20_001),
            expect="too many documents",
        ),
        _case(
            "oversized",
            "many-documents-limit",
            "---\n".join([fn_doc(f"f{i}") for i in range(11)]),
            limits={"max_documents": 10},
            expect="too many documents",
        ),
        Case(
            "oversized",
            "module-8mib+",
            {
                "zbad.yaml": fn_doc(module="modules/big.wasm").encode(),
                "modules/big.wasm": b"\0asm" + b"\0" * (8 * mib),
            },
            expect="over the limit",
        ),
        Case(
            "oversized",
            "module-wat-8mib+",
            {
                "zbad.yaml": fn_doc(module="modules/big.wat").encode(),
                "modules/big.wat": b";;" + b"x" * (8 * mib),
            },
            expect="over the limit",
        ),
        Case(
            "oversized",
            "module-limit",
            {"zbad.yaml": fn_doc(module="modules/good.wat").encode()},
            limits={"max_module_bytes": 64},
            expect="over the limit",
        ),
    ]


# -- symlinks ------------------------------------------------------------------------------------


def symlinks() -> list[Case]:
    cases = []
    for name, target in [
        ("etc-passwd", "/etc/passwd"),
        ("up-and-out", "../../../etc/shadow"),
        ("sibling", "functions/good.yaml"),
        ("proc-self", "/proc/self/environ"),
    ]:
        cases.append(
            Case(
                "symlink",
                f"manifest-{name}",
                symlinks={"linked.yaml": target},
                blame="linked.yaml",
                expect="symlink",
            )
        )
        cases.append(
            Case(
                "symlink",
                f"module-{name}",
                {"zbad.yaml": fn_doc(module="modules/linked.wasm").encode()},
                symlinks={"modules/linked.wasm": target},
                expect="symlink",
            )
        )
    for name, link, target, module in [
        ("dir-root", "rootlink", "/", "rootlink/etc/passwd.wasm"),
        ("dir-up", "uplink", "../..", "uplink/secret.wasm"),
        ("dir-sibling", "modlink", "modules", "modlink/good.wat"),
        ("dir-nested", "a/b/tmplink", "/tmp", "a/b/tmplink/x.wasm"),
    ]:
        cases.append(
            Case(
                "symlink",
                f"module-via-{name}",
                {"zbad.yaml": fn_doc(module=module).encode()},
                symlinks={link: target},
                expect="symlink",
            )
        )
    return cases


# -- path traversal ---------------------------------------------------------------------------

_TRAVERSALS = [
    "../good.wat",
    "../../etc/passwd.wasm",
    "modules/../../x.wat",
    "./../x.wat",
    "modules/./../../../x.wat",
    "../" * 20 + "etc/passwd",
    "..",
    ".",
    "modules/",
    "/etc/passwd",
    "/modules/good.wat",
    "//etc/passwd",
    "~/x.wat",
    "~root/x.wat",
    "C:/x.wat",
    "c:x.wat",
    "..\\\\..\\\\x.wat",
    "modules\\\\good.wat",
    "%2e%2e/x.wat",
    "%2E%2E%2Fx.wat",
    "..%2fx.wat",
    "%252e%252e/x.wat",
    "modules%2fgood.wat",
    "file:///etc/passwd",
    "http://evil.example/x.wasm",
    "modules/good.wat\\0.png",
    "modules/good.wat\\x00",
    "modules/\\x1b[2Jgood.wat",
    "\\u002e\\u002e/\\u002e\\u002e/x.wat",
    "\\uff0e\\uff0e/x.wat",
    "....//x.wat",
    " ",
]


def traversal() -> list[Case]:
    cases = []
    for index, reference in enumerate(_TRAVERSALS):
        quoted = '"' + reference + '"'
        text = fn_doc(module=quoted)
        cases.append(_case("path-traversal", f"{index:02d}-top:{reference}", text))
        cases.append(
            Case(
                "path-traversal",
                f"{index:02d}-nested:{reference}",
                {"deep/dir/bad.yaml": text.encode()},
                blame="deep/dir/bad.yaml",
            )
        )
    return cases


# -- duplicate names ------------------------------------------------------------------------


def duplicate_names() -> list[Case]:
    node_b = NODES.split("---\n")[1]
    other_node = node_b.replace("9102", "9109")
    return [
        _case(
            "duplicate-name",
            "same-file",
            fn_doc("bad") + "---\n" + fn_doc("bad"),
            expect="duplicate",
        ),
        _case("duplicate-name", "good-again", fn_doc("good"), expect="duplicate"),
        Case(
            "duplicate-name",
            "other-dir",
            {"x/y/bad.yaml": fn_doc("good", version='"9.9.9"').encode()},
            blame="x/y/bad.yaml",
            expect="duplicate",
        ),
        Case(
            "duplicate-name",
            "yml-vs-yaml",
            {"functions/good.yml": GOOD.encode()},
            blame="functions/good.yml",
            expect="duplicate",
        ),
        Case(
            "duplicate-name",
            "upper-file-name",
            {"functions/GOOD.yaml": GOOD.encode()},
            blame="functions/good.yaml",  # sorts after GOOD.yaml: the repeat is blamed
            expect="duplicate",
        ),
        _case("duplicate-name", "node-again", other_node, expect="duplicate"),
        _case(
            "duplicate-name", "quoted-name", fn_doc(metadata='{name: "good"}'), expect="duplicate"
        ),
        _case(
            "duplicate-name",
            "tagged-name",
            fn_doc(metadata="{name: !!str good}"),
            expect="duplicate",
        ),
        _case("duplicate-name", "case-upper", fn_doc("GOOD")),
        _case("duplicate-name", "case-title", fn_doc("Good")),
        _case(
            "duplicate-name",
            "case-node",
            node_b.replace("edge-b", "EDGE-B").replace("9102", "9108"),
        ),
        _case("duplicate-name", "trailing-space", fn_doc(metadata='{name: "good "}')),
        _case("duplicate-name", "leading-space", fn_doc(metadata='{name: " good"}')),
        _case("duplicate-name", "homoglyph", fn_doc("g\u043e\u043ed")),
        _case("duplicate-name", "zero-width", fn_doc(metadata='{name: "go\\u200bod"}')),
        _case("duplicate-name", "fullwidth", fn_doc("\uff47ood")),
        _case("duplicate-name", "nfd", fn_doc(metadata='{name: "goo\\u0064\\u0301"}')),
        _case(
            "duplicate-name", "three-times", "---\n".join([fn_doc("bad")] * 3), expect="duplicate"
        ),
        _case(
            "duplicate-name",
            "node-twice-in-file",
            other_node + "---\n" + other_node.replace("9109", "9110"),
            expect="duplicate",
        ),
    ]


# -- durations ------------------------------------------------------------------------------

_BAD_DURATIONS = [
    "PT", "P", "-PT5S", "PT-5S", "5 m", "5min", "1y", "P2Y", "PT5M30",
    "P1DT", "PT1e3S", "PT9999999H", "yes", "[]", "{}", ".inf", ".nan", "-1", "1.0e400",
    "PT5M5M", "\"\"", "P400D", "10mm", "ms", "PT0.5.5S", "0x10s", "\"PT5S \\u0000\"",
]  # fmt: skip

_DURATION_FIELDS = [
    "healthCheck: {{timeout: {}}}",
    "strategy: {{type: canary, evaluationPeriod: {}}}",
    "strategy: {{type: rolling, batchDelay: {}}}",
    "strategy: {{type: ab-test, experimentDuration: {}}}",
    "strategy: {{type: regional, interRegionDelay: {}}}",
    "strategy: {{type: blue-green, blueRetentionPeriod: {}}}",
]


def durations() -> list[Case]:
    cases = []
    for index, value in enumerate(_BAD_DURATIONS):
        template = _DURATION_FIELDS[index % len(_DURATION_FIELDS)]
        cases.append(
            _case("bad-duration", f"{value}/{index % 6}", fn_doc("bad", template.format(value)))
        )
        if index % 2 == 0:
            other = _DURATION_FIELDS[(index + 3) % len(_DURATION_FIELDS)]
            cases.append(
                _case(
                    "bad-duration", f"{value}/{(index + 3) % 6}", fn_doc("bad", other.format(value))
                )
            )
    cases.append(
        _case("bad-duration", "zero-health-timeout", fn_doc("bad", "healthCheck: {timeout: PT0S}"))
    )
    return cases


# -- digests ----------------------------------------------------------------------------------


def digests() -> list[Case]:
    wat_text_sha = hashlib.sha256(WAT.encode()).hexdigest()
    pins = {
        "zeros": "0" * 64,
        "of-wat-text": wat_text_sha,
        "other-module": hashlib.sha256(b"other").hexdigest(),
        "off-by-one": WASM_SHA[:-1] + ("0" if WASM_SHA[-1] != "0" else "1"),
        "63-hex": WASM_SHA[:63],
        "65-hex": WASM_SHA + "a",
        "prefixed": "sha256:" + WASM_SHA,
        "non-hex": "g" * 64,
        "int": "12345",
        "sha1": hashlib.sha1(WASM).hexdigest(),
        "base64": "q" * 43 + "=",
        "spaces": " " + WASM_SHA,
    }
    cases = []
    for name, pin in pins.items():
        cases.append(_case("digest", name, fn_doc("bad", f'sha256: "{pin}"')))
    cases.append(_case("digest", "upper-other", fn_doc("bad", f'sha256: "{"AB" * 32}"')))
    cases.append(
        _case(
            "digest",
            "good-module-wrong-pin",
            fn_doc("good2", f'sha256: "{"1" * 64}"'),
            expect="mismatch",
        )
    )
    return cases


def line_separators() -> list[Case]:
    """U+0085, U+2028 and U+2029 inside quoted values: PyYAML counts each as a line break, an
    editor does not, so the unknown field on the last line was reported past the end of the
    file (issue 14, finding 13; `_line_count` in test_bad_manifests.py is the editor's count)."""
    cases = []
    for name, char in {"nel": "\u0085", "ls": "\u2028", "ps": "\u2029"}.items():
        for style, quote in {"double": '"', "single": "'"}.items():
            text = fn_doc(
                "bad", f"healthCheck: {{expect: {quote}O{char}{char}K{quote}}}", "colour: blue"
            )
            cases.append(
                _case("schema", f"last-line-after-{name}-{style}-quoted", text, expect="colour")
            )
    return cases


def all_cases() -> list[Case]:
    return [
        *line_separators(),
        *malformed(),
        *alias_bombs(),
        *duplicate_keys(),
        *bad_utf8(),
        *schema(),
        *oversized(),
        *symlinks(),
        *traversal(),
        *duplicate_names(),
        *durations(),
        *digests(),
    ]
