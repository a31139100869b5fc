"""WAT sources of small WASI preview 1 test modules, shared by every package's tests.

The modules follow the agent's WAGI-style ABI (docs/agent-api.md): `_start` is the handler,
the request body is on stdin, the response is what the module writes to stdout, and the
export `health_check` writes its answer to stdout. They import only from
`wasi_snapshot_preview1`, so they run on the agent and on any WASI runtime.

Memory layout of `handler_wat` (64 KiB pages):

    0..8        one iovec (ptr, len) used by every fd_write / fd_read
    8..12       nwritten / nread
    16..24      environ count and environ buffer size
    1024..      the reply and health strings (data segment)
    page 1      read buffer for "echo" and the environ pointer array for "env"
    pages 2..3  environ strings for "env"
"""

from __future__ import annotations

import wasmtime

BEHAVIOURS = ("ok", "echo", "trap", "exit1", "loop", "grow", "env")

_DATA_OFFSET = 1024
_PAGE = 65536
_BUF = _PAGE  # read buffer / environ pointer array
_ENV_BUF = 2 * _PAGE  # environ strings, two pages
_ENV_BUF_SIZE = 2 * _PAGE
_ENV_NAME = b"X_GITOPSD_VERSION="


def _wat_bytes(data: bytes) -> str:
    """Escape every byte, so any reply (quotes, non-ASCII, newlines) is a valid WAT string."""
    return "".join(f"\\{b:02x}" for b in data)


_IMPORTS = """
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
"""

_WRITE = """
  ;; write(fd, ptr, len): one fd_write of one iovec; the errno is ignored on purpose.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
"""

_ECHO = f"""
  ;; Copy stdin to stdout in chunks of one page until fd_read reports 0 bytes or an error.
  (func $echo
    (block $done
      (loop $more
        (i32.store (i32.const 0) (i32.const {_BUF}))
        (i32.store (i32.const 4) (i32.const {_PAGE}))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $done (i32.eqz (i32.load (i32.const 8))))
        (call $write (i32.const 1) (i32.const {_BUF}) (i32.load (i32.const 8)))
        (br $more))))
"""

_ENV = f"""
  ;; Write the value of X_GITOPSD_VERSION (nothing when it is not set).
  (func $env
    (local $i i32) (local $p i32) (local $j i32) (local $len i32)
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    ;; A request with more headers than the buffers hold writes nothing rather than trap.
    (br_if 0 (i32.gt_u (i32.load (i32.const 20)) (i32.const {_ENV_BUF_SIZE})))
    (br_if 0 (i32.gt_u (i32.load (i32.const 16)) (i32.const {_PAGE // 4})))
    (drop (call $environ_get (i32.const {_BUF}) (i32.const {_ENV_BUF})))
    (block $not_found
      (loop $next_var
        (br_if $not_found (i32.ge_u (local.get $i) (i32.load (i32.const 16))))
        (local.set $p (i32.load
          (i32.add (i32.const {_BUF}) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        ;; compare the prefix "X_GITOPSD_VERSION=" byte by byte
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $cmp
            (if (i32.eq (local.get $j) (i32.const {len(_ENV_NAME)}))
              (then
                ;; matched: the value runs from p+j to the NUL byte
                (local.set $p (i32.add (local.get $p) (local.get $j)))
                (local.set $len (i32.const 0))
                (block $end
                  (loop $scan
                    (br_if $end (i32.eqz
                      (i32.load8_u (i32.add (local.get $p) (local.get $len)))))
                    (local.set $len (i32.add (local.get $len) (i32.const 1)))
                    (br $scan)))
                (call $write (i32.const 1) (local.get $p) (local.get $len))
                (return)))
            (br_if $mismatch (i32.ne
              (i32.load8_u (i32.add (local.get $p) (local.get $j)))
              (i32.load8_u (i32.add (i32.const {_DATA_OFFSET - 64}) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $cmp)))
        (br $next_var))))
"""

_BODIES = {
    "ok": "(call $write (i32.const 1) (i32.const {reply_ptr}) (i32.const {reply_len}))",
    "echo": (
        "(call $write (i32.const 1) (i32.const {reply_ptr}) (i32.const {reply_len}))\n"
        "    (call $echo)"
    ),
    "trap": "unreachable",
    "exit1": "(call $proc_exit (i32.const 1))",
    "loop": "(loop $forever (br $forever))",
    "grow": (
        ";; grow one page at a time until the host refuses (-1), then trap\n"
        "    (block $refused (loop $again\n"
        "      (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))\n"
        "      (br $again)))\n"
        "    unreachable"
    ),
    "env": "(call $env)",
}


def handler_wat(reply: str = "hello", health: str = "OK", behaviour: str = "ok") -> str:
    """WAT of a WAGI-style handler module.

    behaviour: "ok" writes `reply` to stdout; "echo" writes `reply` then copies stdin to
    stdout; "trap" hits `unreachable`; "exit1" calls proc_exit(1); "loop" spins forever;
    "grow" grows memory until refused, then traps; "env" writes the value of the
    environment variable X_GITOPSD_VERSION; "busy:N" spins N loop iterations, then replies as
    "ok". The export `health_check` writes `health`.
    """
    if behaviour.startswith("busy:"):  # spin N iterations, then reply as "ok"
        spins = int(behaviour.removeprefix("busy:"))
        body = (
            f"(local.set $n (i32.const {spins}))\n"
            "    (loop $spin (local.set $n (i32.sub (local.get $n) (i32.const 1)))\n"
            "      (br_if $spin (i32.gt_s (local.get $n) (i32.const 0))))\n    " + _BODIES["ok"]
        )
        return _module(reply, health, body, "(local $n i32)")
    if behaviour not in _BODIES:
        raise ValueError(f"unknown behaviour {behaviour!r}; pick one of {', '.join(BEHAVIOURS)}")
    return _module(reply, health, _BODIES[behaviour])


def _module(reply: str, health: str, body: str, locals_: str = "") -> str:
    reply_b, health_b = reply.encode(), health.encode()
    reply_ptr = _DATA_OFFSET
    health_ptr = reply_ptr + len(reply_b)
    end = health_ptr + len(health_b)
    # Four fixed pages (data, buffer, environ strings) plus whatever the strings need.
    pages = max(4, 2 + -(-end // _PAGE) + 2)
    body = body.format(reply_ptr=reply_ptr, reply_len=len(reply_b))
    return f"""(module
{_IMPORTS}
  (memory (export "memory") {pages})
  (data (i32.const {_DATA_OFFSET - 64}) "{_wat_bytes(_ENV_NAME)}")
  (data (i32.const {reply_ptr}) "{_wat_bytes(reply_b)}")
  (data (i32.const {health_ptr}) "{_wat_bytes(health_b)}")
{_WRITE}
{_ECHO}
{_ENV}
  (func (export "_start") {locals_}
    {body})
  (func (export "health_check")
    (call $write (i32.const 1) (i32.const {health_ptr}) (i32.const {len(health_b)})))
)
"""


def compile_wat(text: str) -> bytes:
    """Compile WAT source text to WASM bytes."""
    return bytes(wasmtime.wat2wasm(text))


def handler_wasm(reply: str = "hello", health: str = "OK", behaviour: str = "ok") -> bytes:
    """Compiled bytes of `handler_wat(reply, health, behaviour)`."""
    return compile_wat(handler_wat(reply, health, behaviour))
