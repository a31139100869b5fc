"""The wasmtime runtime: compiled modules cached by sha256, one fresh instance per call.

Measured costs drove the shape (bench P7, trivial handler). Every call gets a fresh
instance (its own linear memory, globals and tables: nothing of one call is visible to the
next) with the memory limit and deadline of its version.

- Instances come from wasmtime's pooling allocator (POOL_SLOTS per Runtime, address space
  reserved once): mapping and unmapping each instance's memory, and page-faulting its first
  pages in again, cost about half of a ~110 µs call. A module over the pool's per-instance
  limits (more than one memory or table, a very large instance) runs on a second Engine
  without a pool, made when the first such module is compiled.
- Instances live in a Store, and making and dropping one costs too, so the thread running
  inline calls keeps its Store for up to STORE_CALLS calls, as long as the memory its
  finished instances keep stays under STORE_RETAINED_BYTES and every call ended OK; a call
  that traps, exits non-zero, times out or grows its memory past that closes the Store at
  once (returning its slots to the pool). Threads that call rarely use a Store per call.
- Compiling is expensive, so a module is compiled once per process (cache by sha256) and
  shared by every agent in it; given an agent's CompiledCache (module_cache.py), what was
  compiled is also kept on disk, authenticated, with the module's facts (module_facts.py:
  exports, memories, tables), and a restarted process deserializes it instead of compiling
  again, without parsing the module or listing its exports again. It maps the verified
  bytes from a sealed memfd (`_deserialize`): no copy of the module, and its first
  instance starts from that mapping instead of a memory image built for it.

Wall-clock timeouts use epoch interruption: a ticker thread increments every Engine's epoch
every `tick_ms`, and each Store gets a deadline of enough ticks to cover its timeout. Epoch
checks happen in WebAssembly code only, so the WASI host functions (wasi.py) stop at a host
deadline of their own, the same instant, and the call ends as a timeout: time spent in the
host counts against the call's timeout, and an inline call's host work against its budget.

`memoryMiB` caps the sum of a call's linear memories, and the table budget derived from it
(TABLE_ELEMENTS_PER_MIB) the sum of its tables: wasmtime's Store limits apply to each memory
and each table alone, so a module with N memories gets 1/N of the limit per memory (rounded
down to whole 64 KiB pages), and likewise for tables. A module's memories are all made
exported (module_shape.py) so that a call's memory figure is the sum of every memory's size.

Where a call runs (`Runtime.run`): handing a ~80 µs call to a thread pool costs more than
the call (thread wake-up and GIL hand-offs: ~3,000 req/s over HTTP against ~5,500 inline),
so a call first runs inline on the event loop with a budget of INLINE_TICKS epoch ticks (the
first tick may come at once, so two guarantee one whole tick: with one, about 3 % of trivial
calls straddled a tick and were run twice, bench P7). A call that outlives the budget is
interrupted and run again from scratch on the worker pool with the rest of its timeout; that
is safe because a call has no effect outside its own fresh instance (the WASI host offers no
files, sockets or shared state). The module then runs on the worker pool until a call there
is fast again, so a slow module blocks the loop for at most two ticks once, and `/healthz`
keeps answering while a module spins until its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import math
import mmap
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import structlog
import wasmtime

from gitopsd.agent import module_shape, wasi, wasm_ffi
from gitopsd.agent.module_cache import CachedModule, CompiledCache, compile_key
from gitopsd.agent.module_facts import FactsError, ModuleFacts
from gitopsd.errors import ModuleError

WASM_MAGIC = b"\0asm"
MIB = 1024 * 1024
WASM_PAGE = 64 * 1024
# A Store serves at most this many calls of one thread, and no more once the memories of
# its finished instances (kept mapped until the Store goes) reach the byte cap.
STORE_CALLS = 16
INLINE_TICKS = 2  # epoch ticks a call may run on the event loop before it moves to the pool
STORE_RETAINED_BYTES = 4 * MIB
TABLE_ELEMENTS_PER_MIB = 4096  # 64 MiB of memory allows 262,144 table elements (~4 MiB)
MAX_MEMORY_BYTES = 4096 * MIB  # the largest `memoryMiB` a version may ask for (agent API)
# Instances a Runtime's pool holds at once: the loop thread's kept Store (STORE_CALLS),
# the worker pool's running calls and load-time checks fit with room to spare. Each slot
# reserves address space for a 4 GiB memory and a full-size table (~4.2 GiB, not RSS).
POOL_SLOTS = 96
POOL_KEEP_RESIDENT = 1 * MIB  # bytes of a freed memory zeroed in place, not page-faulted again
SERIALIZED_KEPT = 4  # serialized modules kept in memory for the next agent's cache write

_log = structlog.get_logger("gitopsd.agent.runtime")


def table_limit(memory_bytes: int) -> int:
    """Table elements a call may hold, in proportion to its memory limit (min. 10,000, far
    above what compilers emit for indirect-call tables)."""
    return max(10_000, memory_bytes // MIB * TABLE_ELEMENTS_PER_MIB)


def store_limits(memory_bytes: int, memories: int, tables: int) -> tuple[int, int]:
    """(bytes per memory, elements per table) for a call limited to `memory_bytes` of a
    module with `memories` memories and `tables` tables: equal shares, so the sums stay
    within the call's limits (memory shares in whole pages)."""
    per_memory = memory_bytes // max(1, memories) // WASM_PAGE * WASM_PAGE
    return per_memory, table_limit(memory_bytes) // max(1, tables)


@dataclass(frozen=True, slots=True, eq=False)
class Host:
    """A wasmtime Engine with the WASI host linked in. `pooled`: its instances come from a
    pool reserved up front (fast), else each is mapped and unmapped on its own. `fast`:
    calls go through the C API (wasm_ffi, self-tested), else through wasmtime-py's object
    layer."""

    engine: wasmtime.Engine
    linker: wasmtime.Linker
    pooled: bool
    fast: bool = False


# Address space one pool slot takes: a 4 GiB memory and its guard region, a full table (8 to
# 16 bytes per element), with a margin (about 4.2 GiB measured with wasmtime 50).
_SLOT_ADDRESS_SPACE = MAX_MEMORY_BYTES + table_limit(MAX_MEMORY_BYTES) * 16 + 64 * MIB


def _can_reserve(size: int) -> bool:
    """Whether `size` bytes of address space can be reserved now. wasmtime aborts the
    process when it cannot map its pool (an address-space limit: `ulimit -v`, systemd's
    `LimitAS=`), so try the same kind of mapping first."""
    try:
        probe = mmap.mmap(
            -1,
            size,
            flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0),
            prot=0,  # PROT_NONE: reserved, never touched
        )
    except (OSError, OverflowError, ValueError):
        return False
    probe.close()
    return True


def make_host(*, pooled: bool, slots: int = POOL_SLOTS) -> Host:
    """An Engine with epoch interruption and, when `pooled` and this wasmtime can, a pool of
    `slots` instances that may use every limit a version can ask for."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    pooled = pooled and _can_reserve(slots * _SLOT_ADDRESS_SPACE)
    pooled = pooled and wasm_ffi.use_pooling(
        config,
        slots=slots,
        memory_bytes=MAX_MEMORY_BYTES,
        table_elements=table_limit(MAX_MEMORY_BYTES),
        keep_resident=POOL_KEEP_RESIDENT,
    )
    engine = wasmtime.Engine(config)
    linker = wasmtime.Linker(engine)
    fast = fast_path_works()
    wasi.define(linker, fast=fast)
    return Host(engine, linker, pooled, fast)


def fast_path_works() -> bool:
    """Whether the C-API fast path passes its self-test (wasm_ffi.self_test) with this
    wasmtime; logged when it does not, and the object layer serves the calls."""
    if not wasm_ffi.AVAILABLE:
        return False
    failure = wasm_ffi.self_test()
    if failure is None:
        return True
    _log.warning(
        "agent.wasm_fast_path_off",
        reason=failure,
        wasmtime=wasm_ffi.wasmtime_version(),
        effect="calls use wasmtime-py's object layer (slower, same results)",
    )
    return False


@functools.cache
def compile_key_for(pooled: bool) -> str:
    """The compile key of modules compiled for an Engine made by `make_host(pooled=...)`:
    the settings that shape compiled code (make_host's), with the wasmtime version."""
    settings = (
        f"epoch_interruption=on pooled={pooled} memory_bytes={MAX_MEMORY_BYTES} "
        f"table_elements={table_limit(MAX_MEMORY_BYTES)} keep_resident={POOL_KEEP_RESIDENT}"
    )
    return compile_key(settings)


class Outcome(enum.Enum):
    """How a call ended."""

    OK = "ok"
    TRAP = "trap"  # trap, host fault or failed instantiation (e.g. memory over the limit)
    EXIT = "exit"  # proc_exit with a non-zero code
    TIMEOUT = "timeout"  # the epoch deadline passed


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one call produced. `error` says why when `outcome` is not OK."""

    outcome: Outcome
    stdout: bytes
    stderr: bytes
    exit_code: int | None
    error: str | None
    duration_ms: float
    memory_bytes: int
    cpu_ms: float = 0.0  # CPU time of the calling thread: wall time minus waiting for the GIL

    @property
    def ok(self) -> bool:
        """True when the call returned normally or exited with code 0."""
        return self.outcome is Outcome.OK


@dataclass(slots=True)
class Pace:
    """Where the calls of one module run: inline on the loop, or on the pool while slow."""

    pooled: bool = False


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class Prepared:
    """A compiled module linked against the WASI host, ready to instantiate per call."""

    sha256: str
    size: int
    host: Host
    module: wasmtime.Module
    pre: wasmtime.InstancePre | None  # None when the module does not link
    link_error: str | None
    exports: frozenset[str]
    nullary: frozenset[str] = frozenset()  # exports without parameters or results
    pace: Pace = field(default_factory=Pace)
    # The export name of each linear memory (module_shape: every memory is exported), and
    # how many tables the module has: the call's limits are shared among them.
    memory_names: tuple[str, ...] = ("memory",)
    tables: int = 0


class Runtime:
    """Compiles, links and runs WASM modules. Share one instance between agents of a process.

    Thread-safe. `close()` when done: it waits for running calls (bounded by their
    timeouts), then stops the epoch ticker.
    """

    def __init__(
        self,
        *,
        workers: int = 8,
        tick_ms: float = 5.0,
        inline: bool = True,
        stdout_cap: int = 16 * MIB,
        cache_size: int = 256,
        pool_slots: int = POOL_SLOTS,
    ) -> None:
        # Every Engine gets the epoch ticks; the one without a pool is made on first need.
        self._hosts: tuple[Host, ...] = (make_host(pooled=True, slots=pool_slots),)
        self.tick_ms = tick_ms
        self.inline = inline
        self.stdout_cap = stdout_cap
        self._cache: OrderedDict[str, Prepared] = OrderedDict()
        self._cache_size = cache_size
        # Every compiled module still referenced (by a loaded version of any agent of this
        # process), evicted from the LRU or not: agents sharing this runtime must share one
        # compiled module per digest, or each would compile (and map) its own copy.
        self._live: weakref.WeakValueDictionary[str, Prepared] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        self._stores = threading.local()  # .slots: each calling thread's _StoreSlot per Host
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gitopsd-wasm")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="gitopsd-epoch", daemon=True)
        self._ticker.start()
        self._closed = False
        # What this runtime did to get compiled modules (tests, the restore log, bench P12).
        self.compilations = 0  # wasmtime.Module(...) compiles
        self.deserializations = 0  # modules read back from a CompiledCache
        self._recent_serialized: OrderedDict[str, bytes] = OrderedDict()

    def _tick(self) -> None:
        interval = self.tick_ms / 1000
        while not self._stop.wait(interval):
            for host in self._hosts:
                host.engine.increment_epoch()

    def close(self) -> None:
        """Wait for running calls, then stop the pool and the epoch ticker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        # The ticker must outlive the calls: it is what ends a spinning module.
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._stores = threading.local()  # drops every thread's Store
        self._stop.set()
        self._ticker.join()

    @property
    def pooled(self) -> bool:
        """True when modules that fit run on pooled instances (this wasmtime supports it)."""
        return self._hosts[0].pooled

    @property
    def fast(self) -> bool:
        """True when calls go through the C-API fast path (it passed its self-test)."""
        return self._hosts[0].fast

    def _unpooled(self) -> Host:
        """The Engine for modules that do not fit the pool's per-instance limits."""
        with self._lock:
            for host in self._hosts:
                if not host.pooled:
                    return host
            host = make_host(pooled=False)
            self._hosts = (*self._hosts, host)
            return host

    def _store_slot(self, host: Host, keep: bool) -> _StoreSlot:
        """A Store of `host` for one call: with `keep`, this thread's kept one (a new one
        when the last was used up or dropped), else a Store of its own."""
        if not keep:
            return _StoreSlot(wasmtime.Store(host.engine), kept=False)
        slots: dict[Host, _StoreSlot] | None = getattr(self._stores, "slots", None)
        if slots is None:
            slots = self._stores.slots = {}
        slot = slots.get(host)
        if slot is None or slot.used_up():
            slot = slots[host] = _StoreSlot(wasmtime.Store(host.engine))
        return slot

    def cached(self, sha256: str) -> Prepared | None:
        """The compiled module with this digest, if this process has it."""
        with self._lock:
            found = self._cache.get(sha256)
            if found is not None:
                self._cache.move_to_end(sha256)
            return found or self._live.get(sha256)

    def compile(
        self, wasm: bytes, sha256: str | None = None, cache: CompiledCache | None = None
    ) -> Prepared:
        """Compile and link `wasm` (or return the cached result for its sha256).

        Blocking: run it in a thread. Raises ModuleError when the bytes are not valid WASM.
        A module that compiles but does not link (an import the WASI host does not define)
        is returned with `link_error` set: `check` refuses it when a version is loaded.

        With `cache` (an agent's compiled modules on disk), a module not compiled in this
        process yet is read back from it when it holds an authenticated file for this
        digest and compile key, and what is compiled is written to it; a module this
        process has compiled for another agent is written to this agent's cache too, so
        that each agent restarts fast on its own. `sha256` must be the digest of `wasm`
        (the caller verified it): the cache is keyed by it.
        """
        digest = sha256 or hashlib.sha256(wasm).hexdigest()
        cached = self.cached(digest)
        if cached is not None:
            if cache is not None:
                self._keep(cache, cached)
            return cached
        # Module() would parse text that does not start with the magic as WAT: refuse it.
        if not wasm.startswith(WASM_MAGIC):
            raise ModuleError("module is not WASM binary (missing \\0asm magic); compile it first")
        found = self._read_back(cache, digest) if cache is not None else None
        host, module, facts = found or self._compile_and_learn(wasm)
        pre, link_error = None, None
        try:
            pre = host.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            link_error = f"module does not link: {_first_line(exc)}"
        prepared = Prepared(
            digest,
            facts.size,
            host,
            module,
            pre,
            link_error,
            facts.exports,
            facts.nullary,
            memory_names=facts.memory_names,
            tables=facts.tables,
        )
        if cache is not None and found is None:
            self._keep(cache, prepared)
        with self._lock:
            self._live[digest] = prepared
            self._cache[digest] = prepared
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_size:
                # Evicting only drops the cache's reference; loaded versions keep theirs.
                self._cache.popitem(last=False)
        return prepared

    @staticmethod
    def compile_key(host: Host) -> str:
        """The compile key (module_cache.compile_key) of modules compiled for `host`."""
        return compile_key_for(host.pooled)

    def _compile_and_learn(self, wasm: bytes) -> tuple[Host, wasmtime.Module, ModuleFacts]:
        """Compile `wasm` (with every memory exported) and learn its facts."""
        host, module = self._compile(wasm)
        imported = [i.type for i in module.imports]
        memories = sum(isinstance(t, wasmtime.MemoryType) for t in imported)
        tables = sum(isinstance(t, wasmtime.TableType) for t in imported)
        shape = module_shape.shape(wasm)
        exporting, memory_names = module_shape.export_every_memory(wasm, memories)
        if exporting is not wasm:
            # A memory was not exported: compile the copy that does (what the cache holds).
            host, module = self._compile(exporting)
        funcs = [(e.name, e.type) for e in module.exports if isinstance(e.type, wasmtime.FuncType)]
        facts = ModuleFacts(
            size=len(wasm),
            exports=frozenset(name for name, _ in funcs),
            nullary=frozenset(name for name, ty in funcs if not ty.params and not ty.results),
            memory_names=memory_names,
            tables=tables + shape.tables,
        )
        return host, module, facts

    def _read_back(
        self, cache: CompiledCache, digest: str
    ) -> tuple[Host, wasmtime.Module, ModuleFacts] | None:
        """The module `digest` from `cache` with the facts kept beside it, compiled for the
        pooled Engine or the one without a pool (whichever it was compiled for), or None.

        The module's bytes are not parsed again: the file is named by the module's digest
        and authenticated with its facts (module_cache.py), and it was written only for
        bytes that hashed to that digest, so its facts are those of the module the caller
        holds."""
        first = self._hosts[0]
        candidates = [first.pooled] if not first.pooled else [True, False]
        for pooled in candidates:
            key = compile_key_for(pooled)
            if not cache.has(digest, key):
                continue
            cached = cache.load(digest, key)  # authenticated, or None (refused and logged)
            if cached is None:
                continue
            try:  # the sealed copy is closed whatever happens: it holds the whole module
                try:
                    facts = ModuleFacts.from_bytes(cached.facts)
                except FactsError as exc:
                    cache.refuse(digest, key, f"its module facts are unreadable: {exc}")
                    continue
                host = first if pooled == first.pooled else self._unpooled()
                try:
                    module = _deserialize(host.engine, cached)
                except wasmtime.WasmtimeError as exc:  # e.g. an Engine setting it is not for
                    cache.refuse(digest, key, f"wasmtime refused it: {_first_line(exc)}")
                    continue
            finally:
                cached.close()
            with self._lock:
                self.deserializations += 1
            return host, module, facts
        return None

    def _keep(self, cache: CompiledCache, prepared: Prepared) -> None:
        """Write `prepared` (its compiled code and facts) to `cache` unless it holds it."""
        key = self.compile_key(prepared.host)
        if not cache.has(prepared.sha256, key):
            facts = ModuleFacts(
                prepared.size,
                prepared.exports,
                prepared.nullary,
                prepared.memory_names,
                prepared.tables,
            )
            serialized = self._serialized(prepared.sha256, prepared.module)
            cache.store(prepared.sha256, key, serialized, facts.to_bytes())

    def _serialized(self, digest: str, module: wasmtime.Module) -> bytes:
        """`module.serialize()`, kept for the last few digests: the endpoints of one process
        (`agent --count N`) load the same module one after another, and each writes it to
        its own cache."""
        with self._lock:
            found = self._recent_serialized.get(digest)
        if found is not None:
            return found
        data = bytes(module.serialize())
        with self._lock:
            self._recent_serialized[digest] = data
            while len(self._recent_serialized) > SERIALIZED_KEPT:
                self._recent_serialized.popitem(last=False)
        return data

    def _compile(self, wasm: bytes) -> tuple[Host, wasmtime.Module]:
        host = self._hosts[0]
        try:
            module = wasmtime.Module(host.engine, wasm)
            with self._lock:
                self.compilations += 1
            return host, module
        except wasmtime.WasmtimeError as exc:
            error = exc
        if host.pooled and _valid(host.engine, wasm):
            # Valid, but over the pool's per-instance limits (several memories or tables,
            # a very large instance): such a module runs on an Engine without a pool.
            host = self._unpooled()
            try:
                module = wasmtime.Module(host.engine, wasm)
                with self._lock:
                    self.compilations += 1
                return host, module
            except wasmtime.WasmtimeError as exc:
                error = exc
        raise ModuleError(f"module is not valid WASM: {_first_line(error)}") from error

    def check(self, prepared: Prepared, memory_bytes: int, timeout_ms: float) -> None:
        """Instantiate once under the version's limits; raise ModuleError if it cannot.

        Catches what linking alone cannot: a memory minimum over the limit, a start
        function that traps or spins.
        """
        if prepared.pre is None:
            raise ModuleError(prepared.link_error or "module does not link")
        if "_start" not in prepared.exports:
            raise ModuleError("module has no `_start` export (the handler)")
        result = self.call(
            prepared, None, memory_bytes=memory_bytes, timeout_ms=timeout_ms, keep_store=False
        )
        if not result.ok:
            raise ModuleError(f"module does not instantiate: {result.error}")

    async def run(
        self,
        prepared: Prepared,
        export: str | None,
        *,
        stdin: bytes = b"",
        env: Sequence[tuple[str, str]] = (),
        args: Sequence[str] = (),
        memory_bytes: int,
        timeout_ms: float,
    ) -> CallResult:
        """`call` without blocking the event loop for more than INLINE_TICKS epoch ticks.

        Inline first with that budget, then on the thread pool (see the module
        docstring). The result's duration covers both attempts.
        """
        call = functools.partial(
            self.call, prepared, export, stdin=stdin, env=env, args=args, memory_bytes=memory_bytes
        )
        spent = 0.0
        if self.inline and not prepared.pace.pooled:
            result = call(timeout_ms=timeout_ms, ticks=INLINE_TICKS)
            if result.outcome is not Outcome.TIMEOUT or result.duration_ms >= timeout_ms:
                return result
            # Out of its inline budget, not of its timeout: finish on the pool. Wall time
            # also counts GIL waits and an early tick; only CPU time says the module is slow.
            prepared.pace.pooled = result.cpu_ms > self.tick_ms / 2
            spent = result.duration_ms
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._pool, functools.partial(call, timeout_ms=timeout_ms - spent, keep_store=False)
        )
        # Back inline once a pooled call fits well inside a tick again.
        prepared.pace.pooled = result.cpu_ms > self.tick_ms / 4
        if spent:
            result = replace(result, duration_ms=result.duration_ms + spent)
        return result

    def call(
        self,
        prepared: Prepared,
        export: str | None,
        *,
        stdin: bytes = b"",
        env: Sequence[tuple[str, str]] = (),
        args: Sequence[str] = (),
        memory_bytes: int,
        timeout_ms: float,
        ticks: int | None = None,
        keep_store: bool = True,
    ) -> CallResult:
        """Instantiate `prepared` in a fresh instance and call `export` (None: instantiate
        only).

        Blocking, on the calling thread. Never raises for anything the module does: traps,
        exits, timeouts and memory exhaustion come back as the result's outcome. A failure of
        the agent's own binding to wasmtime raises wasm_ffi.BindingFault (not the module's). `ticks`
        overrides the epoch deadline derived from `timeout_ms` (used for the inline budget).
        `keep_store`: use this thread's kept Store (module docstring); False for threads
        that call rarely (the worker pool, load-time checks), so that they hold no pool slots
        between calls.
        """
        start, cpu_start = time.perf_counter(), time.thread_time()
        # Host functions stop where the epoch deadline may fall at the latest: the end of
        # the inline budget, else of the timeout.
        host_ms = timeout_ms if ticks is None else min(timeout_ms, ticks * self.tick_ms)
        context = wasi.CallContext(stdin, env, args, self.stdout_cap, start + host_ms / 1000)
        slot = self._store_slot(prepared.host, keep_store)
        store = slot.store
        # Tables live outside linear memory (8-16 bytes per element): without their own cap a
        # `table.grow` loop allocates hundreds of MB whatever the memory limit says.
        limits = store_limits(memory_bytes, len(prepared.memory_names), prepared.tables)
        if slot.limits != limits:  # a kept Store keeps its limits
            store.set_limits(memory_size=limits[0], table_elements=limits[1])
            slot.limits = limits
        if ticks is None:
            # +1: the first tick may come at once, so N ticks only guarantee N-1 periods.
            ticks = max(1, math.ceil(timeout_ms / self.tick_ms)) + 1
        store.set_epoch_deadline(ticks)
        outcome, error, memory = Outcome.OK, None, None
        instance: wasmtime.Instance | None = None
        wasi.set_context(context)
        try:
            if prepared.pre is None:
                raise _MissingExport(prepared.link_error or "module does not link")
            fast = prepared.host.fast
            instance = _instantiate(store, prepared.pre, fast)
            memory = context.memory = _memory(store, instance, fast)
            if export is not None:
                _call_export(store, instance, prepared, export)
        except wasm_ffi.BindingFault:
            # The agent's binding, not the module: no outcome, and this Store is not reused.
            slot.finished(False, 0)
            store.close()
            raise
        except Exception as exc:  # every failure of the module is a result, not a crash
            outcome, error = _classify(exc, context)
        finally:
            wasi.set_context(None)
        if outcome is Outcome.OK and context.exit_code:
            outcome, error = Outcome.EXIT, f"module exited with code {context.exit_code}"
        if context.output_overflow and outcome is not Outcome.TIMEOUT:
            # A truncated response must not pass for a good one.
            outcome = Outcome.TRAP
            error = f"module wrote more than the {self.stdout_cap}-byte stdout cap"
        used = _memory_used(store, instance, prepared, memory)
        slot.finished(outcome is Outcome.OK, used)
        if slot.used_up():
            # Now, not whenever the garbage collector gets to it: the traceback of a host
            # exception (proc_exit) keeps the Store in a reference cycle, and its instances
            # hold pool slots.
            store.close()
        return CallResult(
            outcome=outcome,
            stdout=bytes(context.stdout),
            stderr=bytes(context.stderr),
            exit_code=context.exit_code,
            error=error,
            duration_ms=(time.perf_counter() - start) * 1000,
            memory_bytes=used,
            cpu_ms=(time.thread_time() - cpu_start) * 1000,
        )


def _deserialize(engine: wasmtime.Engine, cached: CachedModule) -> wasmtime.Module:
    """The module wasmtime serialized into `cached` (authenticated by the cache).

    Mapped from its sealed memfd when it is in one: `Module.deserialize` copies the bytes
    into memory of its own (about 5 ms for a 5 MiB module here) and the first instance then
    copies the data segments into a memory image of their own (about 3 ms more), while
    `Module.deserialize_file` maps the file and instantiates from that mapping (about 1 ms
    for both). The memfd holds the bytes the cache verified and is sealed against any
    write (module_cache.py); the cache file itself is never mapped. wasmtime keeps the
    memfd open while the module lives: one descriptor per distinct module in the process.
    Where mapping it fails, the bytes are deserialized from memory as before."""
    if cached.memfd is not None:
        with contextlib.suppress(wasmtime.WasmtimeError):  # e.g. memfds not executable here
            return wasmtime.Module.deserialize_file(engine, f"/proc/self/fd/{cached.memfd}")
    return wasmtime.Module.deserialize(engine, cached.read())


def _instantiate(store: wasmtime.Store, pre: wasmtime.InstancePre, fast: bool) -> wasmtime.Instance:
    if fast:
        return wasm_ffi.instantiate(store, pre)
    return pre.instantiate(store)


def _memory(
    store: wasmtime.Store, instance: wasmtime.Instance, fast: bool, name: str = "memory"
) -> wasmtime.Memory | None:
    if fast:
        return wasm_ffi.memory(store, instance, name.encode())
    found = instance.exports(store).get(name)
    return found if isinstance(found, wasmtime.Memory) else None


def _memory_used(
    store: wasmtime.Store,
    instance: wasmtime.Instance | None,
    prepared: Prepared,
    wasi_memory: wasmtime.Memory | None,
) -> int:
    """Bytes of every linear memory of the call's instance (memories never shrink: the
    call's peak). The WASI memory alone, already looked up, in the common case."""
    if instance is None:
        return 0
    if prepared.memory_names == ("memory",):
        return wasi_memory.data_len(store) if wasi_memory is not None else 0
    total = 0
    for name in prepared.memory_names:
        found = _memory(store, instance, prepared.host.fast, name)
        total += found.data_len(store) if found is not None else 0
    return total


def _call_export(
    store: wasmtime.Store, instance: wasmtime.Instance, prepared: Prepared, export: str
) -> None:
    """Call `export` (handlers and health checks take and return nothing: the fast path)."""
    if prepared.host.fast and export in prepared.nullary:
        wasm_ffi.call_nullary(store, instance, export)
        return
    func = instance.exports(store).get(export)
    if not isinstance(func, wasmtime.Func):
        raise _MissingExport(f"module has no function export `{export}`")
    func(store)


class _StoreSlot:
    """A Store shared by the calls of one thread, one fresh instance each (module doc)."""

    __slots__ = ("calls", "limits", "retained", "store")

    def __init__(self, store: wasmtime.Store, kept: bool = True) -> None:
        self.store = store
        self.calls = 0 if kept else STORE_CALLS  # a Store not kept serves one call
        self.retained = 0
        self.limits = (-1, -1)  # per-memory bytes and per-table elements set (none yet)

    def finished(self, ok: bool, memory_bytes: int) -> None:
        self.calls += 1
        self.retained += memory_bytes
        if not ok:
            self.calls = STORE_CALLS  # never reuse a Store after a failed call

    def used_up(self) -> bool:
        return self.calls >= STORE_CALLS or self.retained >= STORE_RETAINED_BYTES


class _MissingExport(Exception):
    pass


def _classify(exc: Exception, context: wasi.CallContext) -> tuple[Outcome, str | None]:
    """Map an exception out of wasmtime to an outcome, using the call's own context.

    wasmtime-py's object layer (used when the fast path is off) passes host exceptions
    through a process-global slot, so the exception seen here may belong to another
    thread's call: trust `context`, not the exception type. The fast path keeps them per
    thread (wasm_ffi).
    """
    if context.exit_code is not None:
        if context.exit_code == 0:
            return Outcome.OK, None
        return Outcome.EXIT, f"module exited with code {context.exit_code}"
    if context.deadline_hit:  # a host function stopped at the call's deadline
        return Outcome.TIMEOUT, "call exceeded its timeout"
    if isinstance(exc, _MissingExport):
        return Outcome.TRAP, str(exc)
    if "maximum concurrent limit" in str(exc):  # the instance pool is exhausted
        return Outcome.TRAP, f"no free instance slot in the agent: {_first_line(exc)}"
    if isinstance(exc, wasmtime.Trap) and exc.trap_code is wasmtime.TrapCode.INTERRUPT:
        return Outcome.TIMEOUT, "call exceeded its timeout"
    if isinstance(exc, wasi.ProcExit):
        # Another call's proc_exit surfaced here; this call trapped for its own reason.
        return Outcome.TRAP, "module trapped"
    if "interrupt" in str(exc):  # an epoch interrupt surfaced as a plain error
        return Outcome.TIMEOUT, "call exceeded its timeout"
    return Outcome.TRAP, f"module trapped: {_first_line(exc)}"


def _valid(engine: wasmtime.Engine, wasm: bytes) -> bool:
    try:
        wasmtime.Module.validate(engine, wasm)
    except wasmtime.WasmtimeError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    """wasmtime messages carry a multi-line backtrace; the first line says what happened."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # "error while executing at wasm backtrace:" is followed by frames, then the cause.
    for line in lines:
        if line.lower().startswith("caused by"):
            return lines[lines.index(line) + 1] if line.endswith(":") else line
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
