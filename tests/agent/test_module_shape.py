"""Counting a module's memories and tables, and exporting every memory (module_shape.py)."""

from __future__ import annotations

import pytest
import wasmtime

from gitopsd.agent import module_shape
from gitopsd.agent.runtime import MIB, Outcome, Runtime
from gitopsd.errors import ModuleError
from tests.wasm_modules import compile_wat


def test_a_module_exporting_its_one_memory_is_left_as_it_is() -> None:
    wasm = compile_wat('(module (memory (export "memory") 1) (table 2 funcref))')
    assert module_shape.shape(wasm) == module_shape.Shape(1, 1, {0: "memory"})
    assert module_shape.export_every_memory(wasm, 0) == (wasm, ("memory",))


def test_memories_not_exported_are_exported_under_names_of_their_own() -> None:
    # No export section at all, a start section after where it goes, and a name taken.
    wasm = compile_wat(
        '(module (memory 1) (memory $b 2) (func $s) (start $s) (func (export "gitopsd:memory:0")))'
    )
    changed, names = module_shape.export_every_memory(wasm, 0)
    assert names == ("gitopsd:memory:0_", "gitopsd:memory:1")
    module = wasmtime.Module(wasmtime.Engine(), changed)  # still valid
    exported = {e.name for e in module.exports if isinstance(e.type, wasmtime.MemoryType)}
    assert exported == set(names)
    bare = compile_wat("(module (memory 3) (func $s) (start $s))")
    changed, names = module_shape.export_every_memory(bare, 0)
    assert names == ("gitopsd:memory:0",)
    wasmtime.Module(wasmtime.Engine(), changed)


def test_a_call_counts_a_memory_the_module_does_not_export(runtime: Runtime) -> None:
    prepared = runtime.compile(compile_wat('(module (memory 5) (func (export "_start")))'))
    result = runtime.call(prepared, "_start", memory_bytes=16 * MIB, timeout_ms=500)
    assert result.outcome is Outcome.OK
    assert result.memory_bytes == 5 * 65536


def test_truncated_binaries_are_refused_not_guessed() -> None:
    with pytest.raises(ModuleError, match="truncated"):
        module_shape.shape(b"\0asm\x01\0\0\0\x05\x80")
    with pytest.raises(ModuleError, match="truncated"):
        module_shape.shape(b"\0asm\x01\0\0\0\x05\x10\x01")
