"""Module references: resolved inside the snapshot only, compiled once, checked and pinned."""

from __future__ import annotations

import hashlib

import pytest
import wasmtime

from gitopsd.manifest import modules
from gitopsd.manifest.modules import ModuleRefused, function_exports, resolve_module_path
from tests.manifest.support import WAT, docs, function, load, problems, snapshot

WASM = bytes(wasmtime.wat2wasm(WAT))
DIGEST = hashlib.sha256(WASM).hexdigest()


@pytest.mark.parametrize(
    ("manifest", "reference", "resolved"),
    [
        ("fleet.yaml", "modules/a.wat", "modules/a.wat"),
        ("fleet.yaml", "./modules//a.wat", "modules/a.wat"),
        ("fns/a.yaml", "a.wasm", "fns/a.wasm"),
        ("fns/a.yaml", "../modules/a.wat", "modules/a.wat"),
        ("fns/deep/a.yaml", "../../m/../modules/a.wat", "modules/a.wat"),
    ],
)
def test_paths_resolve_relative_to_the_manifest(
    manifest: str, reference: str, resolved: str
) -> None:
    assert resolve_module_path(manifest, reference) == resolved


@pytest.mark.parametrize(
    ("manifest", "reference", "reason"),
    [
        ("fleet.yaml", "../a.wat", "escapes the synced path"),
        ("fns/a.yaml", "../../a.wat", "escapes the synced path"),
        ("fleet.yaml", "modules/../../etc/x.wat", "escapes the synced path"),
        ("fleet.yaml", "%2e%2e/a.wat", "percent-escape"),
        ("fleet.yaml", "%2E%2E%2Fa.wat", "percent-escape"),
        ("fleet.yaml", "..%2fa.wat", "percent-escape"),
        ("fleet.yaml", "..\\a.wat", "backslash"),
        ("fleet.yaml", "modules\\a.wat", "backslash"),
        ("fleet.yaml", "/etc/passwd", "is absolute"),
        ("fleet.yaml", "C:/m/a.wat", "is absolute"),
        ("fleet.yaml", "~/a.wat", "is absolute"),
        ("fleet.yaml", "file:///a.wat", "is absolute"),
        ("fleet.yaml", "a\x00.wat", "control characters"),
        ("fleet.yaml", "  ", "empty"),
        ("fns/a.yaml", "..", "names a directory"),
    ],
)
def test_unsafe_paths_are_refused(manifest: str, reference: str, reason: str) -> None:
    with pytest.raises(ModuleRefused, match=reason):
        resolve_module_path(manifest, reference)


def test_refusals_are_reported_on_the_module_line() -> None:
    snap = snapshot(
        {
            "f.yaml": docs(
                function("a", module="../outside.wat"),
                function("b", module="'%2e%2e/outside.wat'"),
                function("c", module="/etc/passwd"),
                function("d", module="linked.wat"),
                function("e", module="gone/x.wat"),
                function("f", module="modules/hello.txt"),
                function("g", module="dir/x.wat"),
            ),
            "modules/hello.txt": WAT,
        },
        symlinks={"linked.wat": "modules/hello.wat", "dir": "modules"},
    )
    assert problems(snap) == [
        "f.yaml:6: module path '../outside.wat' escapes the synced path",
        "f.yaml:13: module path '%2e%2e/outside.wat' contains a percent-escape",
        "f.yaml:20: module path '/etc/passwd' is absolute: write it relative to the manifest file",
        "f.yaml:27: module file 'linked.wat' is a symlink: symlinks are refused",
        "f.yaml:34: module file 'gone/x.wat' not found in the snapshot",
        "f.yaml:41: module file 'modules/hello.txt' must end in .wasm or .wat",
        "f.yaml:48: module path 'dir/x.wat' goes through symlink 'dir'",
    ]


def test_oversized_and_invalid_modules() -> None:
    snap = snapshot(
        {
            "f.yaml": docs(
                function("big", module="big.wasm"),
                function("text", module="bad.wat"),
                function("bin", module="bad.wasm"),
                function("junk", module="junk.wasm"),
            ),
            "big.wasm": WASM + b"\0" * 2000,
            "bad.wat": '(module\n  (func (export "_start") (i32.nope)))\n',
            "bad.wasm": WASM[:-3],
            "junk.wasm": b"MZ\x90\x00",
        }
    )
    assert problems(snap, max_module_bytes=1000) == [
        f"f.yaml:6: module file 'big.wasm' is {len(WASM) + 2000} bytes, over the limit of 1000",
        "f.yaml:13: invalid WAT in bad.wat:2:28: unknown operator or unexpected token",
        "f.yaml:20: module 'bad.wasm' is not valid WebAssembly: unexpected end-of-file "
        f"(at offset {hex(len(WASM) - 3)})",
        "f.yaml:27: module file 'junk.wasm' is not a WebAssembly binary",
    ]


def test_sha256_pin_matches_or_is_reported() -> None:
    wrong = "ab" * 32
    snap = snapshot(
        {"f.yaml": docs(function("ok", f"sha256: {DIGEST}"), function("bad", f"sha256: {wrong}"))}
    )
    assert problems(snap) == [
        f"f.yaml:15: sha256 mismatch: manifest pins {wrong}, module compiles to {DIGEST}",
    ]


def test_malformed_sha256_pin() -> None:
    assert problems(snapshot({"f.yaml": function("f", "sha256: abc")})) == [
        "f.yaml:7: spec.sha256: sha256 must be 64 hexadecimal digits",
    ]


def test_each_module_file_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = modules._wat_to_wasm

    def counting(path: str, data: bytes) -> bytes:
        calls.append(path)
        return original(path, data)

    monkeypatch.setattr(modules, "_wat_to_wasm", counting)
    state = load(
        snapshot(
            {
                "a.yaml": docs(
                    function("a"), function("b", module="./modules/../modules/hello.wat")
                ),
                "sub/c.yaml": function("c", module="../modules/hello.wat"),
            }
        )
    )
    assert calls == ["modules/hello.wat"]
    assert {f.module.sha256 for f in state.functions.values()} == {DIGEST}


def test_function_exports_lists_exported_functions_only() -> None:
    assert function_exports(WASM) == {"_start", "health_check"}
    assert function_exports(bytes(wasmtime.wat2wasm("(module)"))) == frozenset()
