"""The seeds' edge vocabulary: nodes of the fleet and the functions deployed to them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from gitopsd.errors import ModuleError


class EdgeNodeStatus(StrEnum):
    """What the node's agent said the last time the cluster asked (EdgeCluster.refresh)."""

    ONLINE = "ONLINE"  # the agent answered with its inventory
    OFFLINE = "OFFLINE"  # the agent could not be reached
    DEGRADED = "DEGRADED"  # the agent answered but refused or garbled the inventory


@dataclass(frozen=True)
class EdgeNode:
    """One edge agent: its name, base URL, region and labels (as in an EdgeNode manifest)."""

    name: str
    address: str
    region: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    status: EdgeNodeStatus = EdgeNodeStatus.ONLINE  # as declared, until refresh() asks


@dataclass(frozen=True)
class EdgeFunction:
    """One version of a function: compiled WASM bytes and how the agents should run it."""

    name: str
    version: str
    wasm: bytes = field(repr=False)
    memory_mib: float = 64.0
    timeout_ms: int = 100
    health_function: str = "health_check"
    health_expect: str = "OK"
    health_timeout: float = 5.0  # seconds for a node's whole health check
    sticky_header: str | None = "X-User-Id"

    def __post_init__(self) -> None:
        if not self.wasm.startswith(b"\0asm"):
            raise ModuleError(
                f"function {self.name} {self.version}: wasm is not a WebAssembly binary "
                "(use EdgeFunction.from_wat for WAT text)"
            )

    @property
    def sha256(self) -> str:
        """Hex digest of the module bytes: the agents store modules under it."""
        return hashlib.sha256(self.wasm).hexdigest()

    @classmethod
    def from_wat(cls, name: str, version: str, wat_text: str, **kw: Any) -> EdgeFunction:
        """Compile WAT text; `kw` are the other fields (memory_mib, health_expect...)."""
        import wasmtime

        try:
            wasm = bytes(wasmtime.wat2wasm(wat_text))
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
            raise ModuleError(f"function {name} {version}: invalid WAT: {first}") from None
        return cls(name, version, wasm, **kw)

    @classmethod
    def from_file(cls, name: str, version: str, path: str | Path, **kw: Any) -> EdgeFunction:
        """Read a `.wasm` binary or a `.wat` text file."""
        file = Path(path)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ModuleError(f"function {name} {version}: cannot read {file}: {exc}") from exc
        if file.suffix.lower() == ".wat":
            return cls.from_wat(name, version, data.decode("utf-8-sig"), **kw)
        return cls(name, version, data, **kw)
