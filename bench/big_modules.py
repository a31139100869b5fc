"""5 MiB WASM handlers for the cold-start rows (P12, P13), distinct but cheap to make.

Each module is a WAGI handler (`_start` writes a reply naming the module, `health_check`
writes OK) with CODE_FUNCTIONS exported functions of straight-line arithmetic (about 64 KiB
of code, which wasmtime compiles in about half a second on this machine) and a data
segment that brings the binary to 5 MiB. A module made entirely of 5 MiB of code would
take tens of seconds to compile here, so the rows would measure the compiler alone.

One template is compiled from WAT once; each module is the template with its 12-digit id
written over a placeholder inside the reply (same length), so every module has its own
sha256 and the agent compiles each one on its own.
"""

from __future__ import annotations

import functools

import wasmtime

MIB = 1024 * 1024
SIZE = 5 * MIB
CODE_FUNCTIONS = 250
_PLACEHOLDER = b"ID:000000000000"
_REPLY_AT = 1024
_FILL_AT = 4096


def _template_wat(fill: int) -> str:
    reply = _PLACEHOLDER + b"\n"
    esc = "".join(f"\\{b:02x}" for b in reply)
    funcs = []
    for i in range(CODE_FUNCTIONS):
        steps = " ".join(
            f"(local.set $x (i32.add (i32.mul (local.get $x) (i32.const {i * 7 + k + 3})) "
            f"(i32.const {k})))"
            for k in range(20)
        )
        funcs.append(f'(func (export "f{i}") (param $x i32) (result i32) {steps} (local.get $x))')
    pages = (_FILL_AT + fill) // 65536 + 2
    filler = "\\5a" * fill
    return f"""(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const {_REPLY_AT}) "{esc}")
  (data (i32.const 960) "OK")
  (data (i32.const {_FILL_AT}) "{filler}")
  {" ".join(funcs)}
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (call $write (i32.const {_REPLY_AT}) (i32.const {len(reply)})))
  (func (export "health_check") (call $write (i32.const 960) (i32.const 2))))
"""


@functools.cache
def template() -> bytes:
    """The 5 MiB template (its reply holds the placeholder id)."""
    first = bytes(wasmtime.wat2wasm(_template_wat(0)))
    # The data segment's bytes count once; everything else stays as it was.
    wasm = bytes(wasmtime.wat2wasm(_template_wat(SIZE - len(first) - 16)))
    if wasm.count(_PLACEHOLDER) != 1:
        raise RuntimeError("the placeholder must occur once in the template")
    return wasm


def module(index: int) -> bytes:
    """Module `index`: 5 MiB, replying `ID:<index, 12 digits>`."""
    wasm = template()
    return wasm.replace(_PLACEHOLDER, f"ID:{index:012d}".encode(), 1)


def reply(index: int) -> bytes:
    """What module `index` answers."""
    return f"ID:{index:012d}\n".encode()
