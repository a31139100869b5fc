"""Compiled modules cached on disk: a restart deserializes instead of compiling, and a cache
file that is not exactly what this agent wrote is refused, logged and compiled again."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import aiohttp
import pytest
import wasmtime
from structlog.testing import capture_logs

from gitopsd.agent import Runtime, module_cache, module_shape, start_agent
from gitopsd.agent.api import Limits
from gitopsd.agent.module_cache import MAGIC, CompiledCache, compile_key
from gitopsd.agent.module_facts import ModuleFacts
from gitopsd.agent.runtime import Prepared, compile_key_for
from gitopsd.agent.service import AgentService
from tests.agent.conftest import Client, settings_for
from tests.wasm_modules import compile_wat, handler_wasm


async def _deploy(data_dir: Path, modules: dict[str, bytes]) -> None:
    """Start an agent on its own runtime, load every module as a function, stop it."""
    runtime = Runtime(workers=2, pool_slots=8)
    agent = await start_agent(settings_for(data_dir), runtime)
    try:
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            client = Client(agent, session)
            for name, wasm in modules.items():
                await client.deploy(name, "1", wasm)
        assert runtime.compilations == len(modules)
    finally:
        await agent.close()
        runtime.close()


async def _restart(data_dir: Path) -> tuple[Runtime, dict[str, tuple[int, str | None, bytes]]]:
    """Start the agent again on a fresh runtime (a new process); call every function."""
    runtime = Runtime(workers=2, pool_slots=8)
    agent = await start_agent(settings_for(data_dir), runtime)
    try:
        async with aiohttp.ClientSession(base_url=agent.url) as session:
            client = Client(agent, session)
            inventory = await client.inventory()
            answers = {name: await client.call(name) for name in inventory["functions"]}
    finally:
        await agent.close()
        runtime.close()
    return runtime, answers


def _cache_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "compiled").glob("*.cwasm"))


async def test_a_restart_deserializes_every_loaded_module_and_compiles_none(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    await _deploy(data, {"a": handler_wasm("alpha"), "b": handler_wasm("beta")})
    assert len(_cache_files(data)) == 2
    with capture_logs() as logs:
        runtime, answers = await _restart(data)
    assert runtime.compilations == 0
    assert runtime.deserializations == 2
    assert answers == {"a": (200, "1", b"alpha"), "b": (200, "1", b"beta")}
    restored = [e for e in logs if e["event"] == "agent.restored"]
    assert restored and restored[0]["compiled_from_cache"] == 2
    assert restored[0]["restore_ms"] > 0


@pytest.mark.parametrize(
    "damage", ["flip_payload_byte", "flip_facts_byte", "truncate", "swap_files", "empty"]
)
async def test_a_damaged_cache_file_is_refused_logged_and_recompiled(
    tmp_path: Path, damage: str
) -> None:
    data = tmp_path / "data"
    await _deploy(data, {"a": handler_wasm("alpha"), "b": handler_wasm("beta")})
    first, second = _cache_files(data)
    if damage == "flip_payload_byte":
        raw = bytearray(first.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # inside the compiled code, past the header
        first.write_bytes(bytes(raw))
        refused = 1
    elif damage == "flip_facts_byte":
        # The facts say which exports and memories the module has: not trusted unverified.
        raw = bytearray(first.read_bytes())
        at = raw.index(b'"exports"')
        raw[at + 1] ^= 0x20  # "Exports"
        first.write_bytes(bytes(raw))
        refused = 1
    elif damage == "truncate":
        first.write_bytes(first.read_bytes()[: len(MAGIC) + 40])
        refused = 1
    elif damage == "swap_files":
        # Each file is valid for its own name only: module a's code under b's name is not b.
        a, b = first.read_bytes(), second.read_bytes()
        first.write_bytes(b)
        second.write_bytes(a)
        refused = 2
    else:
        first.write_bytes(b"")
        refused = 1
    with capture_logs() as logs:
        runtime, answers = await _restart(data)
    # Each refused file was never deserialized: its module was compiled again and serves.
    assert runtime.compilations == refused
    assert runtime.deserializations == 2 - refused
    assert answers == {"a": (200, "1", b"alpha"), "b": (200, "1", b"beta")}
    refusals = [e for e in logs if e["event"] == "agent.compiled_cache_refused"]
    assert len(refusals) == refused
    assert all(e["log_level"] == "error" and e["reason"] for e in refusals)
    # ... and written again, good: the next restart compiles nothing.
    runtime, _ = await _restart(data)
    assert (runtime.compilations, runtime.deserializations) == (0, 2)


async def test_a_file_made_without_the_agents_key_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    wasm = handler_wasm("alpha")
    await _deploy(data, {"a": wasm})
    (path,) = _cache_files(data)
    # Someone who can write the cache directory but has not the key (another agent's key
    # here) makes a well-formed file: its authentication fails.
    other = CompiledCache(tmp_path / "other")
    sha, key = path.name.split(".")[:2]
    genuine = CompiledCache(data).load(sha, key)
    assert genuine is not None
    other.store(sha, key, genuine.read(), genuine.facts)
    genuine.close()
    path.write_bytes((other.directory / path.name).read_bytes())
    with capture_logs() as logs:
        runtime, answers = await _restart(data)
    assert (runtime.compilations, runtime.deserializations) == (1, 0)
    assert answers == {"a": (200, "1", b"alpha")}
    assert [e["event"] for e in logs].count("agent.compiled_cache_refused") == 1


async def test_a_file_of_another_compile_key_is_not_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _deploy(data, {"a": handler_wasm("alpha")})
    (path,) = _cache_files(data)
    sha, key = path.name.split(".")[:2]
    assert key == compile_key_for(True) or key == compile_key_for(False)
    # As after a wasmtime upgrade: the file on disk is named for another key; it is left
    # unread and the module compiled for this one.
    path.rename(path.with_name(f"{sha}.{compile_key('another wasmtime')}.cwasm"))
    runtime, answers = await _restart(data)
    assert (runtime.compilations, runtime.deserializations) == (1, 0)
    assert answers == {"a": (200, "1", b"alpha")}


def test_the_cache_directory_and_key_are_private(tmp_path: Path) -> None:
    cache = CompiledCache(tmp_path)
    assert cache.directory.stat().st_mode & 0o777 == 0o700
    assert (cache.directory / "key").stat().st_mode & 0o777 == 0o600
    assert len((cache.directory / "key").read_bytes()) == 32
    # The same key on reopening: files written before a restart stay valid.
    cache.store("a" * 64, "0123456789abcdef", b"compiled", b"facts")
    again = CompiledCache(tmp_path).load("a" * 64, "0123456789abcdef")
    assert again is not None and (again.read(), again.facts) == (b"compiled", b"facts")
    again.close()


async def test_agents_sharing_a_runtime_each_cache_the_module_they_load(tmp_path: Path) -> None:
    # `agent --count N`: the second endpoint gets the module compiled by the first from
    # memory, and still writes it to its own data dir, so it restarts fast on its own.
    runtime = Runtime(workers=2, pool_slots=8)
    wasm = handler_wasm("shared")
    try:
        for name in ("one", "two"):
            agent = await start_agent(settings_for(tmp_path / name), runtime)
            try:
                async with aiohttp.ClientSession(base_url=agent.url) as session:
                    await Client(agent, session).deploy("f", "1", wasm)
            finally:
                await agent.close()
        assert runtime.compilations == 1
    finally:
        runtime.close()
    assert len(_cache_files(tmp_path / "two")) == 1
    again, answers = await _restart(tmp_path / "two")
    assert (again.compilations, again.deserializations) == (0, 1)
    assert answers == {"f": (200, "1", b"shared")}


async def test_a_restart_prepares_versions_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hashing, the cache's HMAC and wasmtime release the GIL: versions are prepared
    # concurrently, so a restart uses more than one core. Two preparations must be in
    # progress at once to pass the barrier (one after the other, it breaks after 20 s).
    data = tmp_path / "data"
    await _deploy(data, {"a": handler_wasm("alpha"), "b": handler_wasm("beta")})
    barrier = threading.Barrier(2, timeout=20)
    real = AgentService._prepare

    def side_by_side(self: AgentService, sha256: str, limits: Limits) -> Prepared:
        barrier.wait()
        return real(self, sha256, limits)

    monkeypatch.setattr(AgentService, "_prepare", side_by_side)
    runtime, answers = await _restart(data)
    assert answers == {"a": (200, "1", b"alpha"), "b": (200, "1", b"beta")}
    assert runtime.deserializations == 2


async def test_a_restart_reads_the_module_facts_from_the_cache_not_from_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exports, memories and tables are kept with the compiled code: a restart neither
    # parses the binary again nor lists its exports through wasmtime.
    data = tmp_path / "data"
    await _deploy(data, {"a": handler_wasm("alpha"), "b": handler_wasm("beta")})

    def not_again(*_args: object) -> object:
        raise AssertionError("the module was parsed again")

    monkeypatch.setattr(module_shape, "shape", not_again)
    monkeypatch.setattr(module_shape, "export_every_memory", not_again)
    monkeypatch.setattr(wasmtime.Module, "exports", property(not_again))
    monkeypatch.setattr(wasmtime.Module, "imports", property(not_again))
    runtime, answers = await _restart(data)
    assert (runtime.compilations, runtime.deserializations) == (0, 2)
    assert answers == {"a": (200, "1", b"alpha"), "b": (200, "1", b"beta")}


def test_facts_read_back_are_the_facts_learnt_when_compiling(tmp_path: Path) -> None:
    # Two memories, one not exported (the runtime exports it under a name of its own), an
    # imported and a defined table, a nullary export and one with parameters.
    wasm = compile_wat(
        '(module (import "env" "t" (table 1 funcref)) (table 2 funcref)'
        ' (memory (export "memory") 1) (memory 2)'
        ' (func (export "_start")) (func (export "add") (param i32) (result i32) local.get 0))'
    )
    cache = CompiledCache(tmp_path)
    first = Runtime(workers=1, pool_slots=4)
    try:
        compiled = first.compile(wasm, cache=cache)
    finally:
        first.close()
    second = Runtime(workers=1, pool_slots=4)
    try:
        restored = second.compile(wasm, cache=cache)
        assert (second.compilations, second.deserializations) == (0, 1)
    finally:
        second.close()
    for prepared in (compiled, restored):
        assert prepared.exports == {"_start", "add"}
        assert prepared.nullary == {"_start"}
        assert prepared.memory_names == ("memory", "gitopsd:memory:1")
        assert prepared.tables == 2
        assert prepared.size == len(wasm)


def test_facts_that_are_not_ours_are_refused_even_under_a_valid_mac(tmp_path: Path) -> None:
    wasm = compile_wat('(module (memory (export "memory") 1) (func (export "_start")))')
    cache = CompiledCache(tmp_path)
    runtime = Runtime(workers=1, pool_slots=4)
    try:
        prepared = runtime.compile(wasm, cache=cache)
        sha, key = prepared.sha256, runtime.compile_key(prepared.host)
        genuine = cache.load(sha, key)
        assert genuine is not None
        assert ModuleFacts.from_bytes(genuine.facts).exports == {"_start"}
        # Written with the agent's own key (a bug, or a file of another format): the MAC
        # holds, the facts do not parse; refused and compiled again, never guessed.
        cache.store(sha, key, genuine.read(), b'{"size": 1}')
        genuine.close()
    finally:
        runtime.close()
    again = Runtime(workers=1, pool_slots=4)
    try:
        gc.collect()  # modules of earlier tests freed now, not in the middle of the count
        memfds = _memfds()
        with capture_logs() as logs:
            restored = again.compile(wasm, cache=cache)
        assert (again.compilations, again.deserializations) == (1, 0)
        assert restored.exports == {"_start"}
        refusals = [e for e in logs if e["event"] == "agent.compiled_cache_refused"]
        assert len(refusals) == 1 and "facts" in refusals[0]["reason"]
        # The refused file's sealed copy (the whole compiled module) is not left open.
        assert _memfds() == memfds
    finally:
        again.close()


def _memfds() -> list[str]:
    """The memfds this process holds open, by name."""
    names = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while listing (the listing's own descriptor)
            continue
        if target.startswith("/memfd:"):
            names.append(target)
    return sorted(names)


def test_a_cached_module_is_mapped_from_a_sealed_copy_of_the_verified_bytes(
    tmp_path: Path,
) -> None:
    # wasmtime maps the module from a memfd (no copy of it, and the first instance starts
    # from that mapping): the memfd holds the bytes the HMAC verified and is sealed, so
    # nothing can change them once verified; the cache file itself is never mapped.
    wasm = compile_wat('(module (memory (export "memory") 1) (func (export "_start")))')
    cache = CompiledCache(tmp_path)
    first = Runtime(workers=1, pool_slots=4)
    try:
        first.compile(wasm, cache=cache)
    finally:
        first.close()
    again = Runtime(workers=1, pool_slots=4)

    def mapped() -> int:
        return Path("/proc/self/maps").read_text().count("memfd:gitopsd-compiled-module")

    try:
        before = mapped()
        prepared = again.compile(wasm, cache=cache)
        assert again.deserializations == 1
        assert mapped() > before
        assert ".cwasm" not in Path("/proc/self/maps").read_text()
        result = again.call(prepared, "_start", memory_bytes=1 << 20, timeout_ms=1000)
        assert result.ok
    finally:
        again.close()
    source = tmp_path / "source"
    source.write_bytes(b"header verified")
    with source.open("rb") as f:
        fd = module_cache._sealed_copy(f.fileno(), 7, 8)
    assert fd is not None
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b"altered")
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1)
        assert os.pread(fd, 16, 0) == b"verified"
    finally:
        os.close(fd)


async def test_without_memfds_the_file_is_read_into_memory_and_verified_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another OS (or no seals): the same checks on bytes read into memory.
    data = tmp_path / "data"
    await _deploy(data, {"a": handler_wasm("alpha"), "b": handler_wasm("beta")})
    monkeypatch.setattr(module_cache, "_sealed_copy", lambda *_args: None)
    runtime, answers = await _restart(data)
    assert (runtime.compilations, runtime.deserializations) == (0, 2)
    assert answers == {"a": (200, "1", b"alpha"), "b": (200, "1", b"beta")}
    first = _cache_files(data)[0]
    raw = bytearray(first.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    first.write_bytes(bytes(raw))
    with capture_logs() as logs:
        runtime, answers = await _restart(data)
    assert (runtime.compilations, runtime.deserializations) == (1, 1)
    assert answers == {"a": (200, "1", b"alpha"), "b": (200, "1", b"beta")}
    assert [e["event"] for e in logs].count("agent.compiled_cache_refused") == 1
