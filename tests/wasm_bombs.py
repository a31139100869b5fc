"""WAT of modules that attack the agent through its WASI host and its limits (issue 14,
findings 3 and 4), shared by the runtime tests and the fault battery.

Each builder returns compiled bytes. They import only `wasi_snapshot_preview1` functions.
"""

from __future__ import annotations

from tests.wasm_modules import compile_wat

PAGE = 65536
_FD_WRITE = """(import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))"""
_FD_READ = """(import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))"""
_RANDOM = """(import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))"""


def iovec_flood(iovecs: int = 700, pages: int = 16, fd: int = 1) -> bytes:
    """One fd_write of `iovecs` iovecs that all name the whole memory (`pages` pages): the
    report's reproduction asked the host for 700 MiB from a 1 MiB module."""
    return compile_wat(f"""(module {_FD_WRITE}
  (memory (export "memory") {pages})
  (func (export "_start") (local $i i32)
    (loop $fill
      (i32.store (i32.shl (local.get $i) (i32.const 3)) (i32.const 0))
      (i32.store (i32.add (i32.shl (local.get $i) (i32.const 3)) (i32.const 4))
        (i32.const {pages * PAGE}))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const {iovecs}))))
    (drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const {iovecs})
      (i32.const {iovecs * 8})))))""")


def iovec_count_loop(pages: int) -> bytes:
    """fd_write to stderr, forever, with as many (empty) iovecs as the memory holds: each
    call kept the old host busy for seconds (2 million iovecs for 16 MiB)."""
    count = pages * PAGE // 8
    return compile_wat(f"""(module {_FD_WRITE}
  (memory (export "memory") {pages})
  (func (export "_start")
    (loop $again
      (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const {count}) (i32.const 0)))
      (br $again))))""")


def iov_max_probe(iovecs: int) -> bytes:
    """Writes two bytes: the errno of an fd_write and of an fd_read given `iovecs` empty
    iovecs each."""
    return compile_wat(f"""(module {_FD_WRITE} {_FD_READ}
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 60000)
      (call $fd_write (i32.const 1) (i32.const 0) (i32.const {iovecs}) (i32.const 60008)))
    (i32.store8 (i32.const 60001)
      (call $fd_read (i32.const 0) (i32.const 0) (i32.const {iovecs}) (i32.const 60008)))
    (i32.store (i32.const 60016) (i32.const 60000))
    (i32.store (i32.const 60020) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 60016) (i32.const 1) (i32.const 60008)))))""")


def random_then_reply(pages: int, rounds: int) -> bytes:
    """Fills its `pages`-page memory with random bytes `rounds` times in straight-line code
    (no loop: no epoch check between the host calls), then writes "done"."""
    fills = "\n    ".join(
        f"(drop (call $random_get (i32.const 0) (i32.const {pages * PAGE})))" for _ in range(rounds)
    )
    return compile_wat(f"""(module {_FD_WRITE} {_RANDOM}
  (memory (export "memory") {pages})
  (func (export "_start")
    {fills}
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (i32.store (i32.const 16) (i32.const 0x656e6f64))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))""")


def many_memories(memories: int = 8, touch: bool = False) -> bytes:
    """`memories` memories of one page; every memory but the exported first grows by 16
    pages at a time while the host allows it (with `touch`, writing a byte in every 4 KiB so
    the memory is really used). Writes the number of pages granted, as a little-endian u32."""
    names = [f"$m{k}" for k in range(1, memories)]
    decls = " ".join(f"(memory {n} 1)" for n in names)
    grows = []
    for n in names:
        touch_pages = (
            f"""(local.set $p (i32.const 0))
        (loop $t_{n[1:]}
          (i32.store8 {n} (i32.mul (local.get $p) (i32.const 4096)) (i32.const 1))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br_if $t_{n[1:]} (i32.lt_u (local.get $p)
            (i32.mul (memory.size {n}) (i32.const 16)))))"""
            if touch
            else ""
        )
        grows.append(f"""(block $full_{n[1:]}
      (loop $grow_{n[1:]}
        (br_if $full_{n[1:]} (i32.eq (memory.grow {n} (i32.const 16)) (i32.const -1)))
        (local.set $pages (i32.add (local.get $pages) (i32.const 16)))
        (br $grow_{n[1:]})))
      {touch_pages}""")
    body = "\n    ".join(grows)
    return compile_wat(f"""(module {_FD_WRITE}
  (memory $m0 (export "memory") 1)
  {decls}
  (func (export "_start") (local $pages i32) (local $p i32)
    {body}
    (i32.store $m0 (i32.const 16) (local.get $pages))
    (i32.store $m0 (i32.const 0) (i32.const 16))
    (i32.store $m0 (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))""")


def many_tables(tables: int = 4) -> bytes:
    """`tables` funcref tables of one element, each grown 1,000 elements at a time while the
    host allows it. Writes the number of elements granted, as a little-endian u32."""
    names = [f"$t{k}" for k in range(tables)]
    decls = " ".join(f"(table {n} 1 funcref)" for n in names)
    grows = "\n    ".join(
        f"""(block $full{k}
      (loop $grow{k}
        (br_if $full{k}
          (i32.eq (table.grow {n} (ref.null func) (i32.const 1000)) (i32.const -1)))
        (local.set $granted (i32.add (local.get $granted) (i32.const 1000)))
        (br $grow{k})))"""
        for k, n in enumerate(names)
    )
    return compile_wat(f"""(module {_FD_WRITE}
  (memory (export "memory") 1)
  {decls}
  (func (export "_start") (local $granted i32)
    {grows}
    (i32.store (i32.const 16) (local.get $granted))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))""")
