"""The hot path of a call through wasmtime's C API, below wasmtime-py's object layer.

Measured on the benchmark VM (bench P7 baseline, trivial handler): the object layer costs
more than the WebAssembly does. `instance.exports(store)` wraps every export (~60 µs), a
`Func.__call__` asks for the function's type first (~30 µs), and each host call through
`Linker.define_func` converts every parameter and the result through `Val` objects
(~60 µs for one `fd_write`). Here the two exports a call needs are looked up by name, a
function without parameters or results is called directly, and the WASI host functions
are defined "unchecked": they read and write raw values. Instantiating and calling skip
the object layer's context manager, and host functions get the memory's address and size
as plain integers (together about 10 % of an agent request, counted with valgrind).
`use_pooling` switches an Engine to the pooling instance allocator (see runtime.py).

Only documented C-API entry points are used (`wasmtime_instance_export_get`,
`wasmtime_func_call`, `wasmtime_instance_pre_instantiate`, `wasmtime_memory_data`,
`wasmtime_linker_define_func_unchecked`, `wasmtime_caller_context`, the
`wasmtime_pooling_allocation_*` setters), through the bindings wasmtime-py ships. Errors
keep wasmtime-py's semantics: a Python exception in a host function becomes a trap and is
raised again by `call_nullary` (how `proc_exit` ends a call). Unlike wasmtime-py, which
keeps that exception in one process-global slot (under concurrent calls one thread's
interrupted loop could pick up another thread's `proc_exit`, and a timeout was answered as a
trap), the exception is kept per thread: a host function runs on the thread of its call.
If a future wasmtime-py lacks any of these names, `AVAILABLE` (or `POOLING`) is False and
the runtime uses the object layer (or no pool), slower but the same.

Names present are not enough: wasmtime-py's private modules may change what they mean
between releases (pyproject.toml bounds wasmtime to the majors tested). `self_test` runs
every entry point used here on a tiny module; the runtime calls it when it makes an Engine
and uses the object layer, logged, when it fails. A binding that fails during a call
(AttributeError, TypeError, a ctypes error) raises `BindingFault`: the agent's fault, never
the module's.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import threading
from collections.abc import Callable
from typing import Any

import wasmtime

try:
    from wasmtime import _bindings as _c
    from wasmtime import _ffi
    from wasmtime._trap import Trap as _Trap

    _EXTERN_FUNC = _ffi.WASMTIME_EXTERN_FUNC.value
    _EXTERN_MEMORY = _ffi.WASMTIME_EXTERN_MEMORY.value
    _UNCHECKED = _c.wasmtime_func_unchecked_callback_t
    _FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    _NO_FINALIZER = _FINALIZER(lambda _data: None)
    for _name in (
        "wasmtime_instance_export_get",
        "wasmtime_func_call",
        "wasmtime_linker_define_func_unchecked",
        "wasmtime_caller_context",
        "wasmtime_extern_t",
        "wasmtime_instance_t",
        "wasmtime_instance_pre_instantiate",
        "wasm_trap_t",
    ):
        getattr(_c, _name)
    # Own prototypes (indexing the library makes new function objects; wasmtime-py's keep
    # theirs): the address as a plain int, not a ctypes pointer to cast on every host call.
    _memory_data = _ffi.dll["wasmtime_memory_data"]
    _memory_data.restype = ctypes.c_void_p
    _memory_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    _memory_data_size = _ffi.dll["wasmtime_memory_data_size"]
    _memory_data_size.restype = ctypes.c_size_t
    _memory_data_size.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    AVAILABLE = True
except (ImportError, AttributeError):  # pragma: no cover - depends on the wasmtime release
    AVAILABLE = False

_POOL_SETTERS = (
    "total_stacks",
    "total_core_instances",
    "total_memories",
    "total_tables",
    "max_memory_size",
    "table_elements",
    "linear_memory_keep_resident",
)
POOLING = AVAILABLE and all(
    hasattr(_c, name)
    for name in (
        "wasmtime_pooling_allocation_config_new",
        "wasmtime_pooling_allocation_config_delete",
        "wasmtime_pooling_allocation_strategy_set",
        *(f"wasmtime_pooling_allocation_config_{setter}_set" for setter in _POOL_SETTERS),
    )
)

# The ctypes callbacks must live as long as the linkers that point at them.
_CALLBACKS: list[Any] = []

# What a binding that no longer matches this code raises when called: a renamed attribute,
# a changed signature, a ctypes argument of the wrong type.
_BINDING_ERRORS: tuple[type[Exception], ...] = (AttributeError, TypeError, ctypes.ArgumentError)


class BindingFault(RuntimeError):
    """wasmtime's C API, as reached through wasmtime-py's private bindings, did not behave
    as this module expects. The agent's fault (500, counted as the agent's), never the
    module's: it says nothing about the WebAssembly being called."""


class RawCaller:
    """What a WASI host function needs of its caller: the store context (for memory
    access) and, rarely, an export by name."""

    __slots__ = ("_context_ptr", "_ptr")

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr
        try:
            self._context_ptr = _c.wasmtime_caller_context(ptr)
        except _BINDING_ERRORS as exc:
            raise _fault("wasmtime_caller_context", exc) from exc

    def _context(self) -> Any:
        return self._context_ptr

    def get(self, name: str) -> Any:
        caller = wasmtime.Caller(self._ptr)
        try:
            return caller.get(name)
        finally:
            caller._invalidate()


class _HostException(threading.local):
    """The exception a host function raised on this thread, until its call raises it."""

    value: BaseException | None = None


_HOST_EXCEPTION = _HostException()


def define_unchecked(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    params: str,
    results: str,
    func: Callable[..., Any],
    access_caller: bool,
) -> None:
    """Define `module.name` with raw values: `params` and `results` as in wasi.SIGNATURES
    ("i" i32, "I" i64); `func` gets a RawCaller first when `access_caller`."""
    kinds = tuple("i64" if c == "I" else "i32" for c in params)
    result_kind = ("i64" if results == "I" else "i32") if results else None
    count = len(kinds)

    def callback(_env: Any, caller: Any, raw: Any, _n: int) -> int | None:
        try:
            args = [getattr(raw[i], kinds[i]) for i in range(count)]
            out = func(RawCaller(caller), *args) if access_caller else func(*args)
            if result_kind is not None:
                setattr(raw[0], result_kind, out)
            return 0
        except BaseException as exc:  # raised again by call_nullary, as wasmtime-py does
            _HOST_EXCEPTION.value = exc
            trap = _Trap("python exception")._consume()
            value: int | None = ctypes.cast(trap, ctypes.c_void_p).value
            return value

    c_callback = _UNCHECKED(callback)
    _CALLBACKS.append(c_callback)
    ty = wasmtime.FuncType([_valtype(c) for c in params], [_valtype(c) for c in results])
    module_b, name_b = module.encode(), name.encode()
    error = _c.wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        ctypes.create_string_buffer(module_b),
        len(module_b),
        ctypes.create_string_buffer(name_b),
        len(name_b),
        ty.ptr(),
        c_callback,
        None,
        _NO_FINALIZER,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)


def _valtype(code: str) -> wasmtime.ValType:
    return wasmtime.ValType.i64() if code == "I" else wasmtime.ValType.i32()


def use_pooling(
    config: wasmtime.Config,
    *,
    slots: int,
    memory_bytes: int,
    table_elements: int,
    keep_resident: int,
) -> bool:
    """Make engines of `config` take instances from a pre-reserved pool of `slots`
    instances, memories and tables (wasmtime's pooling allocator) instead of mapping and
    unmapping each instance's memory. Each memory may grow to `memory_bytes`, each table to
    `table_elements`; the first `keep_resident` bytes of a freed memory are zeroed, not
    returned to the kernel, so the next instance does not page-fault them in again.
    False (config unchanged) when this wasmtime lacks the pooling entry points."""
    if not POOLING:
        return False
    # No stacks: they serve async calls only, which wasmtime-py never makes, and each would
    # cost the process memory mappings (vm.max_map_count) for its guard page.
    values = (0, slots, slots, slots, memory_bytes, table_elements, keep_resident)
    pool = _c.wasmtime_pooling_allocation_config_new()
    try:
        for setter, value in zip(_POOL_SETTERS, values, strict=True):
            getattr(_c, f"wasmtime_pooling_allocation_config_{setter}_set")(pool, value)
        _c.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)  # copies `pool`
    except _BINDING_ERRORS:
        return False  # the setters changed: no pool (a pool is never required)
    finally:
        _c.wasmtime_pooling_allocation_config_delete(pool)
    return True


def export(store: wasmtime.Store, instance: wasmtime.Instance, name: bytes) -> Any:
    """The raw extern `name` of `instance`, or None."""
    try:
        item = _c.wasmtime_extern_t()
        found = _c.wasmtime_instance_export_get(
            store._context(),
            ctypes.byref(instance._instance),
            _name_buffer(name),
            len(name),
            ctypes.byref(item),
        )
    except _BINDING_ERRORS as exc:
        raise _fault("wasmtime_instance_export_get", exc) from exc
    return item if found else None


@functools.lru_cache(maxsize=1024)
def _name_buffer(name: bytes) -> Any:
    """The C string of an export name (a handful per module: made once, read-only in C)."""
    return ctypes.create_string_buffer(name)


def memory(
    store: wasmtime.Store, instance: wasmtime.Instance, name: bytes = b"memory"
) -> wasmtime.Memory | None:
    """The instance's memory exported as `name` (the WASI one by default), if any."""
    item = export(store, instance, name)
    try:
        if item is None or item.kind != _EXTERN_MEMORY:
            return None
        return wasmtime.Memory._from_raw(item.of.memory)
    except _BINDING_ERRORS as exc:
        raise _fault("wasmtime_extern_t", exc) from exc


def memory_span(context: Any, memory: wasmtime.Memory) -> tuple[int, int]:
    """Base address and size in bytes of `memory`, given a store or caller context."""
    try:
        raw = ctypes.byref(memory._memory)
        return _memory_data(context, raw) or 0, _memory_data_size(context, raw)
    except _BINDING_ERRORS as exc:
        raise _fault("wasmtime_memory_data", exc) from exc


def instantiate(store: wasmtime.Store, pre: wasmtime.InstancePre) -> wasmtime.Instance:
    """`pre.instantiate(store)` without the object layer's context manager."""
    try:
        instance = _c.wasmtime_instance_t()
        trap = ctypes.POINTER(_c.wasm_trap_t)()
        error = _c.wasmtime_instance_pre_instantiate(
            pre.ptr(), store._context(), ctypes.byref(instance), ctypes.byref(trap)
        )
    except _BINDING_ERRORS as exc:
        raise _fault("wasmtime_instance_pre_instantiate", exc) from exc
    if error or trap:
        _raise_failure(error, trap)
    try:
        return wasmtime.Instance._from_raw(instance)
    except _BINDING_ERRORS as exc:
        raise _fault("Instance._from_raw", exc) from exc


def call_nullary(store: wasmtime.Store, instance: wasmtime.Instance, name: str) -> bool:
    """Call the export `name`, a function without parameters or results; False when the
    instance has no such function. Traps and host-function exceptions are raised."""
    item = export(store, instance, name.encode())
    try:
        if item is None or item.kind != _EXTERN_FUNC:
            return False
        trap = ctypes.POINTER(_c.wasm_trap_t)()
        error = _c.wasmtime_func_call(
            store._context(), ctypes.byref(item.of.func), None, 0, None, 0, ctypes.byref(trap)
        )
    except _BINDING_ERRORS as exc:
        raise _fault("wasmtime_func_call", exc) from exc
    if error or trap:
        _raise_failure(error, trap)
    return True


def _raise_failure(error: Any, trap: Any) -> None:
    """Raise what wasmtime-py's `enter_wasm` would: a host function's exception (how
    `proc_exit` ends a call) before the error or trap it turned into."""
    try:
        if error:
            failure: Exception = wasmtime.WasmtimeError._from_ptr(error)
        else:
            failure = _Trap._from_ptr(trap)
    except _BINDING_ERRORS as exc:
        raise _fault("wasm_trap_t", exc) from exc
    raised: BaseException | None = getattr(_HOST_EXCEPTION, "value", None)
    if raised is not None:
        _HOST_EXCEPTION.value = None
        raise raised
    raise failure


def _fault(entry: str, exc: Exception) -> BindingFault:
    return BindingFault(
        f"wasmtime binding {entry} failed ({type(exc).__name__}: {exc}); "
        f"wasmtime {wasmtime_version()} may not be a release this agent was tested with"
    )


def wasmtime_version() -> str:
    """The installed wasmtime-py release."""
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed with us
        return "(unknown version)"


# --- the self-test ----------------------------------------------------------------------

# A host function writes into the caller's memory and returns a value that the module
# stores; a second export makes the host function raise, which must come back as that
# exception (how `proc_exit` ends a call).
_SELF_TEST_WAT = """(module
  (import "gitopsd" "probe" (func $probe (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (i32.store (i32.const 0) (call $probe (i32.const 8))))
  (func (export "raise") (drop (call $probe (i32.const 0)))))"""
_SELF_TEST_BYTES = b"gitopsd!"
_SELF_TEST_RESULT = 0x5E1F7E57


class _SelfTestExit(Exception):
    pass


def self_test() -> str | None:
    """Run every C-API entry point this module uses on a tiny module; None when they all
    behave as expected, else what went wrong (the runtime then uses the object layer)."""
    if not AVAILABLE:
        return "this wasmtime-py lacks the C-API names the fast path uses"
    try:
        return _self_test()
    except Exception as exc:  # anything at all: the fast path is off, and says why
        return f"{type(exc).__name__}: {exc}"


def _self_test() -> str | None:
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)

    def probe(caller: RawCaller, ptr: int) -> int:
        if ptr == 0:
            raise _SelfTestExit
        found = caller.get("memory")
        if not isinstance(found, wasmtime.Memory):
            raise RuntimeError("the caller's memory export is not a Memory")
        base, size = memory_span(caller._context(), found)
        if size < ptr + len(_SELF_TEST_BYTES) or not base:
            raise RuntimeError(f"memory span ({base:#x}, {size}) is not the module's memory")
        ctypes.memmove(base + ptr, _SELF_TEST_BYTES, len(_SELF_TEST_BYTES))
        return _SELF_TEST_RESULT

    define_unchecked(linker, "gitopsd", "probe", "i", "i", probe, access_caller=True)
    module = wasmtime.Module(engine, bytes(wasmtime.wat2wasm(_SELF_TEST_WAT)))
    store = wasmtime.Store(engine)
    instance = instantiate(store, linker.instantiate_pre(module))
    mem = memory(store, instance)
    if mem is None:
        return "the memory export was not found"
    if not call_nullary(store, instance, "_start"):
        return "the _start export was not found"
    written = mem.read(store, 0, 16)  # through the object layer, to compare
    if int.from_bytes(written[:4], "little") != _SELF_TEST_RESULT:
        return "a host function's result did not reach the module"
    if written[8:16] != _SELF_TEST_BYTES:
        return "a host function's write did not reach the module's memory"
    try:
        call_nullary(store, instance, "raise")
    except _SelfTestExit:
        return None
    return "a host function's exception did not come back from the call"
