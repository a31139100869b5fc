"""How many linear memories and tables a WASM module defines, and a copy of it that exports
every memory, read from the binary's sections.

Why: a call's `memoryMiB` must cap the sum of the module's memories, but wasmtime's Store
limits cap each memory (and each table) on its own, and wasmtime-py lists only exported
memories. Knowing the counts, the runtime gives each memory an equal share of the limit
(and each table an equal share of the table budget); exporting every memory lets it read
each one's size after a call, so metrics report what the call really used.

Only modules wasmtime has already validated are read here, so the section layout is sound;
the reader still refuses (ModuleError) anything it cannot follow rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitopsd.errors import ModuleError

_HEADER = 8  # magic and version
_IMPORT, _TABLE, _MEMORY, _EXPORT = 2, 4, 5, 7
# Known sections that come after the export section, in the order the binary format fixes.
_AFTER_EXPORT = frozenset({8, 9, 12, 10, 11})
_KIND_MEMORY = 2
EXPORT_PREFIX = "gitopsd:memory:"


@dataclass(frozen=True, slots=True)
class Shape:
    """Memories and tables a module defines (imported ones are counted by the caller:
    wasmtime-py lists imports), and which memory indices it exports under which name."""

    memories: int
    tables: int
    memory_exports: dict[int, str]


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 number at `pos`: (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ModuleError("module binary is truncated or malformed (LEB128 number)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _encode_leb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _sections(wasm: bytes) -> list[tuple[int, int, int, int]]:
    """(id, start of the section, start of its payload, end) of every section."""
    found = []
    pos = _HEADER
    while pos < len(wasm):
        start = pos
        section_id = wasm[pos]
        size, payload = _leb(wasm, pos + 1)
        end = payload + size
        if end > len(wasm):
            raise ModuleError("module binary is truncated (a section runs past the end)")
        found.append((section_id, start, payload, end))
        pos = end
    return found


def _exports(wasm: bytes, payload: int) -> tuple[int, dict[int, str], set[str], int]:
    """Export count, exported memory index -> name, every export name, and where the
    entries start."""
    count, pos = _leb(wasm, payload)
    entries = pos
    memories: dict[int, str] = {}
    names: set[str] = set()
    for _ in range(count):
        length, pos = _leb(wasm, pos)
        name = wasm[pos : pos + length].decode("utf-8", errors="replace")
        pos += length
        kind = wasm[pos]
        index, pos = _leb(wasm, pos + 1)
        names.add(name)
        if kind == _KIND_MEMORY:
            memories.setdefault(index, name)
    return count, memories, names, entries


def shape(wasm: bytes) -> Shape:
    """Defined memories and tables of `wasm`, and its memory exports."""
    memories = tables = 0
    exported: dict[int, str] = {}
    for section_id, _start, payload, _end in _sections(wasm):
        if section_id == _MEMORY:
            memories, _ = _leb(wasm, payload)
        elif section_id == _TABLE:
            tables, _ = _leb(wasm, payload)
        elif section_id == _EXPORT:
            _, exported, _, _ = _exports(wasm, payload)
    return Shape(memories, tables, exported)


def export_every_memory(wasm: bytes, imported_memories: int) -> tuple[bytes, tuple[str, ...]]:
    """`wasm` with an export added for each memory it does not export yet, and the name
    under which each memory (in index order) can be looked up. Unchanged bytes when every
    memory is exported already."""
    sections = _sections(wasm)
    info = shape(wasm)
    total = imported_memories + info.memories
    export = next((s for s in sections if s[0] == _EXPORT), None)
    taken: set[str] = set()
    count, entries = 0, b""
    if export is not None:
        count, _, taken, first = _exports(wasm, export[2])
        entries = wasm[first : export[3]]
    names: list[str] = []
    added = bytearray()
    for index in range(total):
        name = info.memory_exports.get(index)
        if name is None:
            name = f"{EXPORT_PREFIX}{index}"
            while name in taken:
                name += "_"
            raw = name.encode()
            added += _encode_leb(len(raw)) + raw + bytes([_KIND_MEMORY]) + _encode_leb(index)
            count += 1
        names.append(name)
    if not added:
        return wasm, tuple(names)
    payload = _encode_leb(count) + entries + bytes(added)
    section = bytes([_EXPORT]) + _encode_leb(len(payload)) + payload
    if export is not None:
        return wasm[: export[1]] + section + wasm[export[3] :], tuple(names)
    # No export section yet: it goes before the first section that must follow it.
    at = next((s[1] for s in sections if s[0] in _AFTER_EXPORT), len(wasm))
    return wasm[:at] + section + wasm[at:], tuple(names)
