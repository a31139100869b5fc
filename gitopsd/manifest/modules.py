"""Resolve `spec.module` inside the snapshot, compile it to WASM bytes and check it.

Module paths are relative to the manifest file and must stay inside the synced path: a
manifest must never make the daemon read (and ship to the fleet) a file from elsewhere.
Paths are resolved lexically over the snapshot's file map, never on a filesystem.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from gitopsd.source.snapshot import Snapshot

MODULE_SUFFIXES = (".wasm", ".wat")

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_WAT_POSITION = re.compile(r"-->\s*<anon>:(\d+):(\d+)")


class ModuleRefused(ValueError):
    """The module reference or file is unusable; the message says why and how to fix it."""


@dataclass(frozen=True)
class CompiledModule:
    """A validated WASM module: its snapshot-relative path, sha256 of `wasm`, and the bytes."""

    path: str
    sha256: str
    wasm: bytes = field(repr=False)
    exports: frozenset[str] = frozenset()
    """Names of the exported functions."""


def resolve_module_path(manifest_path: str, reference: str) -> str:
    """Snapshot-relative path of `reference`, written relative to the manifest at `manifest_path`.

    Raises ModuleRefused for absolute paths, backslashes, percent-escapes, control characters
    and any path that leaves the synced root.
    """
    if not reference.strip():
        raise ModuleRefused("module path is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in reference):
        raise ModuleRefused(f"module path {reference!r} contains control characters")
    if "\\" in reference:
        raise ModuleRefused(f"module path {reference!r} contains a backslash: use '/'")
    # Refused outright rather than decoded: nothing reads these paths through a URL decoder,
    # and "%2e%2e/" must not become a second way to write "../".
    if _PERCENT_ESCAPE.search(reference):
        raise ModuleRefused(f"module path {reference!r} contains a percent-escape")
    if reference.startswith(("/", "~")) or _DRIVE.match(reference) or "://" in reference:
        raise ModuleRefused(
            f"module path {reference!r} is absolute: write it relative to the manifest file"
        )
    parts = [p for p in posixpath.dirname(manifest_path).split("/") if p]
    for part in reference.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ModuleRefused(f"module path {reference!r} escapes the synced path")
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        raise ModuleRefused(f"module path {reference!r} names a directory, not a file")
    return "/".join(parts)


class ModuleCompiler:
    """Compiles the modules of one snapshot, each distinct file once."""

    def __init__(self, snapshot: Snapshot, *, max_module_bytes: int) -> None:
        self._snapshot = snapshot
        self._max_bytes = max_module_bytes
        self._done: dict[str, CompiledModule | ModuleRefused] = {}

    def compile(self, manifest_path: str, reference: str) -> CompiledModule:
        """The module `reference` of the manifest at `manifest_path`; raises ModuleRefused."""
        path = resolve_module_path(manifest_path, reference)
        if path not in self._done:
            try:
                self._done[path] = self._compile(path)
            except ModuleRefused as exc:
                self._done[path] = exc
        result = self._done[path]
        if isinstance(result, ModuleRefused):
            raise ModuleRefused(str(result))
        return result

    def _compile(self, path: str) -> CompiledModule:
        files = self._snapshot.files
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in files and files[prefix].is_symlink:
                raise ModuleRefused(f"module path {path!r} goes through symlink {prefix!r}")
        entry = files.get(path)
        if entry is None:
            raise ModuleRefused(f"module file {path!r} not found in the snapshot")
        if entry.is_symlink:
            raise ModuleRefused(f"module file {path!r} is a symlink: symlinks are refused")
        if not path.lower().endswith(MODULE_SUFFIXES):
            raise ModuleRefused(f"module file {path!r} must end in .wasm or .wat")
        if len(entry.data) > self._max_bytes:
            raise ModuleRefused(
                f"module file {path!r} is {len(entry.data)} bytes, over the limit of "
                f"{self._max_bytes}"
            )
        wasm = _wat_to_wasm(path, entry.data) if path.lower().endswith(".wat") else entry.data
        _validate(path, wasm)
        return CompiledModule(
            path=path,
            sha256=hashlib.sha256(wasm).hexdigest(),
            wasm=wasm,
            exports=function_exports(wasm),
        )


@functools.cache
def _engine() -> Any:
    # Imported here so that importing the manifest package (the CLI, the strategies) stays cheap.
    import wasmtime

    engine = wasmtime.Engine()
    # Freed before interpreter teardown; from a module-level cache, wasmtime's finaliser would
    # run after its FFI bindings are gone and print a TypeError at exit.
    atexit.register(engine.close)
    return engine


def _wat_to_wasm(path: str, data: bytes) -> bytes:
    import wasmtime

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModuleRefused(f"module file {path!r} is not UTF-8 text: {exc.reason}") from None
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise ModuleRefused(f"invalid WAT in {_wat_where(path, str(exc))}") from None


def _wat_where(path: str, error: str) -> str:
    """`path:line:col: first line of the error` from wasmtime's multi-line WAT error."""
    first = error.strip().splitlines()[0] if error.strip() else "parse error"
    position = _WAT_POSITION.search(error)
    where = f"{path}:{position[1]}:{position[2]}" if position else path
    return f"{where}: {first}"


def _validate(path: str, wasm: bytes) -> None:
    import wasmtime

    if not wasm.startswith(b"\0asm"):
        raise ModuleRefused(f"module file {path!r} is not a WebAssembly binary")
    try:
        wasmtime.Module.validate(_engine(), wasm)
    except wasmtime.WasmtimeError as exc:
        message = " ".join(str(exc).split())
        raise ModuleRefused(f"module {path!r} is not valid WebAssembly: {message}") from None


def function_exports(wasm: bytes) -> frozenset[str]:
    """Names of the functions a (validated) core WASM module exports."""
    reader = _Reader(wasm, 8)  # past the magic and version
    while reader.pos < len(wasm):
        section_id = reader.byte()
        size = reader.u32()
        end = reader.pos + size
        if section_id == 7:  # the export section
            names = set()
            for _ in range(reader.u32()):
                name = reader.take(reader.u32()).decode("utf-8", "replace")
                kind = reader.byte()
                reader.u32()  # index
                if kind == 0:  # func
                    names.add(name)
            return frozenset(names)
        reader.pos = end
    return frozenset()


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, count: int) -> bytes:
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u32(self) -> int:
        result = shift = 0
        while True:
            value = self.byte()
            result |= (value & 0x7F) << shift
            if not value & 0x80:
                return result
            shift += 7
