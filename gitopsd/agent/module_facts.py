"""What the runtime needs to know of a compiled module besides its code, kept with the code.

Learning it takes the module's binary (module_shape.py parses its sections) and wasmtime's
type listings (`Module.imports` and `Module.exports` wrap every entry in Python objects:
about 2.5 ms for a module of 250 exports). A module is compiled once, so the runtime learns
its facts once and the compiled-module cache (module_cache.py) keeps them beside the code,
under the same HMAC: a restart reads them back instead of learning them again.

The encoding is JSON; `from_bytes` checks every field and raises FactsError for anything
else (a file of another format, or a bug), which the runtime treats like a refused cache
file: the module is compiled again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class FactsError(ValueError):
    """Bytes that are not facts written by `ModuleFacts.to_bytes`."""


@dataclass(frozen=True, slots=True)
class ModuleFacts:
    """Size of the module's binary, its function exports (and which of them take and
    return nothing), the export name of each linear memory in index order (module_shape:
    every memory is exported), and how many tables it has (imported and defined)."""

    size: int
    exports: frozenset[str]
    nullary: frozenset[str]
    memory_names: tuple[str, ...]
    tables: int

    def to_bytes(self) -> bytes:
        """The encoding `from_bytes` reads (sorted: the same facts, the same bytes)."""
        return json.dumps(
            {
                "size": self.size,
                "exports": sorted(self.exports),
                "nullary": sorted(self.nullary),
                "memories": list(self.memory_names),
                "tables": self.tables,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ModuleFacts:
        """The facts `to_bytes` wrote; FactsError for anything else."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FactsError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict) or set(raw) != {
            "size",
            "exports",
            "nullary",
            "memories",
            "tables",
        }:
            raise FactsError("not the fields of module facts")
        size, tables = _count(raw["size"], "size"), _count(raw["tables"], "tables")
        exports = frozenset(_names(raw["exports"], "exports"))
        nullary = frozenset(_names(raw["nullary"], "nullary"))
        if not nullary <= exports:
            raise FactsError("a nullary export that is not an export")
        memories = tuple(_names(raw["memories"], "memories"))
        if len(set(memories)) != len(memories):
            raise FactsError("two memories under one export name")
        return cls(size, exports, nullary, memories, tables)


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise FactsError(f"{what} is not a count")
    return value


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FactsError(f"{what} is not a list of names")
    return value
