"""A minimal WASI preview 1 host, written as Python host functions on a wasmtime Linker.

Why not wasmtime's built-in WASI: with `WasiConfig.stdout_custom` a trivial handler cost
~173 µs per call here (fresh Store, instantiate, call), against ~72 µs with this `fd_write`
in Python. The functions are defined store-independently (raw values through the C API,
agent/wasm_ffi.py, or `Linker.define_func`), so one Linker and one `InstancePre` per module
serve every call.

Each call's I/O lives in a `CallContext` that the runtime installs in a thread-local before
entering WASM: the host functions run synchronously on the calling thread, so the
thread-local always names the call that is executing.

Supported: fd_write (1 stdout, 2 stderr), fd_read (0 stdin), environ_*, args_*, proc_exit,
clock_time_get, clock_res_get, random_get, sched_yield, fd_close, fd_seek, fd_tell,
fd_fdstat_get, fd_prestat_get (EBADF: there are no preopened directories). Every other
`wasi_snapshot_preview1` function returns ENOSYS (52).

Every host function does bounded work, whatever the module passes: at most IOV_MAX iovecs
per call (EINVAL beyond, as writev(2) answers), output copied only up to what its cap still
allows (the cap is checked before anything is copied), and work that grows with an argument
(copying output, filling a random buffer) done in chunks of COPY_CHUNK bytes with the call's
host deadline checked between chunks. Past that deadline the function raises HostDeadline,
which ends the call as a timeout: time spent in the host counts against the call's timeout,
and a call running inline on the event loop gives the loop back within its inline budget.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import wasmtime

from gitopsd.agent import wasm_ffi

MODULE = "wasi_snapshot_preview1"

# errno values of WASI preview 1
ESUCCESS = 0
EBADF = 8
EFAULT = 21
EFBIG = 22
EINVAL = 28
ENOSYS = 52
ESPIPE = 70

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_IOVEC = struct.Struct("<II")
_MASK32 = 0xFFFFFFFF
# stderr is diagnostics only: keep the head, drop the rest without failing the module.
_STDERR_CAP = 64 * 1024
# Linux's IOV_MAX: a writev or readv with more iovecs fails with EINVAL. Without a bound, one
# fd_write naming millions of iovecs kept the host busy for seconds.
IOV_MAX = 1024
# Bytes copied (or generated) between two looks at the deadline: about 0.1 ms of memcpy.
COPY_CHUNK = 1024 * 1024


class ProcExit(Exception):
    """Raised by `proc_exit` to unwind the module; carries the call it belongs to.

    wasmtime-py hands a host exception back through a process-global slot, so under
    concurrency another thread may pick it up: `context` lets the runtime tell its own.
    """

    def __init__(self, context: CallContext, code: int) -> None:
        super().__init__(f"proc_exit({code})")
        self.context = context
        self.code = code


class HostDeadline(Exception):
    """A host function found the call's host deadline passed: the call ends as a timeout."""


class CallContext:
    """The I/O of one call: stdin to read, stdout/stderr collected, environment, exit code.

    `deadline` (a time.perf_counter() value) is when host functions stop working for this
    call: the end of its timeout, or of its inline budget when it runs on the event loop.
    """

    __slots__ = (
        "_args",
        "_env",
        "deadline",
        "deadline_hit",
        "exit_code",
        "memory",
        "output_overflow",
        "stderr",
        "stdin",
        "stdin_pos",
        "stdout",
        "stdout_cap",
    )

    def __init__(
        self,
        stdin: bytes = b"",
        env: Sequence[tuple[str, str]] = (),
        args: Sequence[str] = (),
        stdout_cap: int = 16 * 1024 * 1024,
        deadline: float = float("inf"),
    ) -> None:
        self.deadline = deadline
        self.deadline_hit = False
        self.stdin = stdin
        self.stdin_pos = 0
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.stdout_cap = stdout_cap
        self.output_overflow = False
        self._env = env
        self._args = args
        self.exit_code: int | None = None
        # The instance's exported memory, set by the runtime after instantiation so host
        # calls skip the export lookup; looked up through the caller when still None.
        self.memory: wasmtime.Memory | None = None

    # Encoded when the module asks: most handlers never read their environment.
    def env(self) -> list[bytes]:
        """`NAME=value` entries of environ_get, each ending in NUL."""
        return [f"{k}={v}".encode() + b"\0" for k, v in self._env]

    def args(self) -> list[bytes]:
        """Entries of args_get, each ending in NUL."""
        return [a.encode() + b"\0" for a in self._args]

    def check_deadline(self) -> None:
        """Raise HostDeadline once the call's host deadline has passed."""
        if time.perf_counter() >= self.deadline:
            self.deadline_hit = True
            raise HostDeadline("call exceeded its timeout inside a host function")


_local = threading.local()


def set_context(context: CallContext | None) -> None:
    """Install the context of the call about to run on this thread (None to clear)."""
    _local.context = context


def _context() -> CallContext:
    context: CallContext | None = getattr(_local, "context", None)
    if context is None:
        # A module running outside `Runtime.call` (should not happen): fail the call.
        raise RuntimeError("WASI host function called outside a call context")
    return context


class _Fault(Exception):
    """A pointer from the module fell outside its memory: the function returns EFAULT."""


def _memory(caller: wasmtime.Caller, context: CallContext) -> tuple[int, int]:
    """Base address and size of the caller's linear memory."""
    memory = context.memory
    if memory is None:
        found = caller.get("memory")
        if not isinstance(found, wasmtime.Memory):
            raise _Fault
        memory = context.memory = found
    if isinstance(caller, wasm_ffi.RawCaller):  # defined through the C API (define, fast)
        return wasm_ffi.memory_span(caller._context(), memory)
    base = ctypes.cast(memory.data_ptr(caller), ctypes.c_void_p).value or 0
    return base, memory.data_len(caller)


def _check(size: int, ptr: int, length: int) -> None:
    if ptr + length > size:
        raise _Fault


def _read(base: int, size: int, ptr: int, length: int) -> bytes:
    _check(size, ptr, length)
    return ctypes.string_at(base + ptr, length)


def _write(base: int, size: int, ptr: int, data: bytes) -> None:
    _check(size, ptr, len(data))
    ctypes.memmove(base + ptr, data, len(data))


def _iovecs(base: int, size: int, iovs: int, count: int) -> list[tuple[int, int]]:
    """The (ptr, len) iovecs, each checked to lie inside memory. EINVAL beyond IOV_MAX
    (raised as _TooMany) before anything is read."""
    count &= _MASK32
    if count > IOV_MAX:
        raise _TooMany
    raw = _read(base, size, iovs & _MASK32, 8 * count)
    vectors = [_IOVEC.unpack_from(raw, 8 * i) for i in range(count)]
    for ptr, length in vectors:
        _check(size, ptr, length)
    return vectors


class _TooMany(Exception):
    """More iovecs than IOV_MAX: the function returns EINVAL."""


def _append(
    context: CallContext, out: bytearray, base: int, vectors: list[tuple[int, int]], limit: int
) -> int:
    """Copy the first `limit` bytes the iovecs name onto `out`, chunk by chunk, checking the
    deadline between chunks; return the bytes copied."""
    copied = 0
    for ptr, length in vectors:
        take = min(length, limit - copied)
        done = 0
        while done < take:
            step = min(take - done, COPY_CHUNK)
            out += ctypes.string_at(base + ptr + done, step)
            done += step
            context.check_deadline()
        copied += take
        if copied >= limit:
            break
    return copied


def fd_write(caller: wasmtime.Caller, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
    """Append the iovecs to the call's stdout (fd 1) or stderr (fd 2).

    Copies at most what the output's cap still allows, checked before copying. stdout: what
    does not fit marks the call as over the cap (it then fails), the bytes that fit are a
    partial write, and a write with no room left is EFBIG. stderr: what does not fit is
    dropped and reported written (diagnostics must not fail a module).
    """
    if fd not in (1, 2):
        return EBADF
    context = _context()
    try:
        base, size = _memory(caller, context)
        vectors = _iovecs(base, size, iovs, iovs_len)
        _check(size, nwritten & _MASK32, 4)  # before anything is copied
        total = sum(length for _, length in vectors)
        if fd == 1:
            room = context.stdout_cap - len(context.stdout)
            if total > room:
                # An endless writer must not exhaust the agent's memory within its timeout.
                context.output_overflow = True
                if room <= 0:
                    return EFBIG
            written = _append(context, context.stdout, base, vectors, min(total, room))
        else:
            room = max(0, _STDERR_CAP - len(context.stderr))
            _append(context, context.stderr, base, vectors, min(total, room))
            written = total
        _write(base, size, nwritten & _MASK32, _U32.pack(written))
    except _Fault:
        return EFAULT
    except _TooMany:
        return EINVAL
    return ESUCCESS


def fd_read(caller: wasmtime.Caller, fd: int, iovs: int, iovs_len: int, nread: int) -> int:
    """Fill the iovecs from the call's stdin (fd 0)."""
    if fd != 0:
        return EBADF
    context = _context()
    try:
        base, size = _memory(caller, context)
        total = 0
        # Bounded by the request body: stdin_pos only moves forward.
        for ptr, length in _iovecs(base, size, iovs, iovs_len):
            chunk = context.stdin[context.stdin_pos : context.stdin_pos + length]
            if not chunk:
                break
            _write(base, size, ptr, chunk)
            context.stdin_pos += len(chunk)
            total += len(chunk)
        _write(base, size, nread & _MASK32, _U32.pack(total))
    except _Fault:
        return EFAULT
    except _TooMany:
        return EINVAL
    return ESUCCESS


def _sizes_get(entries: list[bytes], caller: wasmtime.Caller, count: int, size: int) -> int:
    context = _context()
    try:
        base, memsize = _memory(caller, context)
        _write(base, memsize, count & _MASK32, _U32.pack(len(entries)))
        _write(base, memsize, size & _MASK32, _U32.pack(sum(map(len, entries))))
    except _Fault:
        return EFAULT
    return ESUCCESS


def _entries_get(entries: list[bytes], caller: wasmtime.Caller, pointers: int, buf: int) -> int:
    context = _context()
    try:
        base, size = _memory(caller, context)
        pointers &= _MASK32
        buf &= _MASK32
        _check(size, pointers, 4 * len(entries))
        for i, entry in enumerate(entries):
            _write(base, size, buf, entry)
            _write(base, size, pointers + 4 * i, _U32.pack(buf))
            buf += len(entry)
    except _Fault:
        return EFAULT
    return ESUCCESS


def environ_sizes_get(caller: wasmtime.Caller, count: int, size: int) -> int:
    """Number of environment variables and the bytes their `K=V\\0` strings need."""
    return _sizes_get(_context().env(), caller, count, size)


def environ_get(caller: wasmtime.Caller, environ: int, environ_buf: int) -> int:
    """Write the environment strings and the array of pointers to them."""
    return _entries_get(_context().env(), caller, environ, environ_buf)


def args_sizes_get(caller: wasmtime.Caller, count: int, size: int) -> int:
    """Number of arguments and the bytes their NUL-terminated strings need."""
    return _sizes_get(_context().args(), caller, count, size)


def args_get(caller: wasmtime.Caller, argv: int, argv_buf: int) -> int:
    """Write the argument strings and the array of pointers to them."""
    return _entries_get(_context().args(), caller, argv, argv_buf)


def proc_exit(caller: wasmtime.Caller, code: int) -> None:
    """Record the exit code and unwind the module (a host exception becomes a trap)."""
    context = _context()
    context.exit_code = code & _MASK32
    raise ProcExit(context, context.exit_code)


_CLOCKS: dict[int, Callable[[], int]] = {
    0: time.time_ns,  # realtime
    1: time.monotonic_ns,  # monotonic
    2: time.process_time_ns,  # process cputime
    3: time.thread_time_ns,  # thread cputime
}


def clock_time_get(caller: wasmtime.Caller, clock_id: int, precision: int, out: int) -> int:
    """Current time of the clock in nanoseconds."""
    clock = _CLOCKS.get(clock_id)
    if clock is None:
        return EINVAL
    try:
        base, size = _memory(caller, _context())
        _write(base, size, out & _MASK32, _U64.pack(clock()))
    except _Fault:
        return EFAULT
    return ESUCCESS


def clock_res_get(caller: wasmtime.Caller, clock_id: int, out: int) -> int:
    """Resolution of the clock: 1 µs is honest for every clock Python exposes."""
    if clock_id not in _CLOCKS:
        return EINVAL
    try:
        base, size = _memory(caller, _context())
        _write(base, size, out & _MASK32, _U64.pack(1000))
    except _Fault:
        return EFAULT
    return ESUCCESS


def random_get(caller: wasmtime.Caller, buf: int, length: int) -> int:
    """Fill the buffer with cryptographically secure random bytes, a chunk at a time (a
    buffer as large as the memory must not hold the host past the call's deadline)."""
    context = _context()
    try:
        base, size = _memory(caller, context)
        buf &= _MASK32
        length &= _MASK32
        _check(size, buf, length)
        for start in range(buf, buf + length, COPY_CHUNK):
            _write(base, size, start, os.urandom(min(COPY_CHUNK, buf + length - start)))
            context.check_deadline()
    except _Fault:
        return EFAULT
    return ESUCCESS


def fd_close(fd: int) -> int:
    """Closing stdio is accepted and changes nothing; there are no other descriptors."""
    return ESUCCESS if fd in (0, 1, 2) else EBADF


def fd_seek(fd: int, offset: int, whence: int, newoffset: int) -> int:
    """stdio is a stream: seeking is refused the way a pipe refuses it."""
    return ESPIPE if fd in (0, 1, 2) else EBADF


def fd_tell(fd: int, offset: int) -> int:
    """See fd_seek."""
    return ESPIPE if fd in (0, 1, 2) else EBADF


# fdstat rights bits of WASI preview 1
_RIGHT_FD_READ = 1 << 1
_RIGHT_FD_WRITE = 1 << 6


def fd_fdstat_get(caller: wasmtime.Caller, fd: int, out: int) -> int:
    """Describe stdio. Filetype "unknown", not "character device": wasi-libc then treats
    stdout as no TTY and buffers it fully, one fd_write per response instead of per line."""
    if fd not in (0, 1, 2):
        return EBADF
    rights = _RIGHT_FD_READ if fd == 0 else _RIGHT_FD_WRITE
    # struct fdstat: u8 filetype, u16 flags at 2, u64 rights_base at 8, u64 inheriting at 16
    stat = struct.pack("<BxHxxxxQQ", 0, 0, rights, 0)
    try:
        base, size = _memory(caller, _context())
        _write(base, size, out & _MASK32, stat)
    except _Fault:
        return EFAULT
    return ESUCCESS


def fd_prestat_get(fd: int, out: int) -> int:
    """No preopened directories. EBADF (not ENOSYS) ends wasi-libc's preopen scan cleanly."""
    return EBADF


def fd_prestat_dir_name(fd: int, path: int, path_len: int) -> int:
    """See fd_prestat_get."""
    return EBADF


def sched_yield() -> int:
    """Nothing to yield to inside one call."""
    return ESUCCESS


# Every function of wasi_snapshot_preview1 with its signature ("i" = i32, "I" = i64),
# so that a module importing any of them links, and gets ENOSYS when not implemented.
SIGNATURES: dict[str, tuple[str, str]] = {
    "args_get": ("ii", "i"),
    "args_sizes_get": ("ii", "i"),
    "environ_get": ("ii", "i"),
    "environ_sizes_get": ("ii", "i"),
    "clock_res_get": ("ii", "i"),
    "clock_time_get": ("iIi", "i"),
    "fd_advise": ("iIIi", "i"),
    "fd_allocate": ("iII", "i"),
    "fd_close": ("i", "i"),
    "fd_datasync": ("i", "i"),
    "fd_fdstat_get": ("ii", "i"),
    "fd_fdstat_set_flags": ("ii", "i"),
    "fd_fdstat_set_rights": ("iII", "i"),
    "fd_filestat_get": ("ii", "i"),
    "fd_filestat_set_size": ("iI", "i"),
    "fd_filestat_set_times": ("iIIi", "i"),
    "fd_pread": ("iiiIi", "i"),
    "fd_prestat_get": ("ii", "i"),
    "fd_prestat_dir_name": ("iii", "i"),
    "fd_pwrite": ("iiiIi", "i"),
    "fd_read": ("iiii", "i"),
    "fd_readdir": ("iiiIi", "i"),
    "fd_renumber": ("ii", "i"),
    "fd_seek": ("iIii", "i"),
    "fd_sync": ("i", "i"),
    "fd_tell": ("ii", "i"),
    "fd_write": ("iiii", "i"),
    "path_create_directory": ("iii", "i"),
    "path_filestat_get": ("iiiii", "i"),
    "path_filestat_set_times": ("iiiiIIi", "i"),
    "path_link": ("iiiiiii", "i"),
    "path_open": ("iiiiiIIii", "i"),
    "path_readlink": ("iiiiii", "i"),
    "path_remove_directory": ("iii", "i"),
    "path_rename": ("iiiiii", "i"),
    "path_symlink": ("iiiii", "i"),
    "path_unlink_file": ("iii", "i"),
    "poll_oneoff": ("iiii", "i"),
    "proc_exit": ("i", ""),
    "proc_raise": ("i", "i"),
    "random_get": ("ii", "i"),
    "sched_yield": ("", "i"),
    "sock_accept": ("iii", "i"),
    "sock_recv": ("iiiiii", "i"),
    "sock_send": ("iiiii", "i"),
    "sock_shutdown": ("ii", "i"),
}

# Implemented functions; the bool says whether they need the Caller (memory access).
IMPLEMENTED: dict[str, tuple[Callable[..., Any], bool]] = {
    "fd_write": (fd_write, True),
    "fd_read": (fd_read, True),
    "environ_sizes_get": (environ_sizes_get, True),
    "environ_get": (environ_get, True),
    "args_sizes_get": (args_sizes_get, True),
    "args_get": (args_get, True),
    "proc_exit": (proc_exit, True),
    "clock_time_get": (clock_time_get, True),
    "clock_res_get": (clock_res_get, True),
    "random_get": (random_get, True),
    "fd_fdstat_get": (fd_fdstat_get, True),
    "fd_close": (fd_close, False),
    "fd_seek": (fd_seek, False),
    "fd_tell": (fd_tell, False),
    "fd_prestat_get": (fd_prestat_get, False),
    "fd_prestat_dir_name": (fd_prestat_dir_name, False),
    "sched_yield": (sched_yield, False),
}


def _enosys(*_args: object) -> int:
    return ENOSYS


def _valtype(code: str) -> wasmtime.ValType:
    return wasmtime.ValType.i64() if code == "I" else wasmtime.ValType.i32()


def define(linker: wasmtime.Linker, *, fast: bool) -> None:
    """Define every wasi_snapshot_preview1 function in the linker (with raw values through
    the C API when `fast`, i.e. wasm_ffi passed its self-test, else through wasmtime-py's
    `define_func`)."""
    for name, (params, results) in SIGNATURES.items():
        func, access_caller = IMPLEMENTED.get(name, (_enosys, False))
        if fast:
            wasm_ffi.define_unchecked(linker, MODULE, name, params, results, func, access_caller)
            continue
        ty = wasmtime.FuncType([_valtype(c) for c in params], [_valtype(c) for c in results])
        linker.define_func(MODULE, name, ty, func, access_caller=access_caller)
