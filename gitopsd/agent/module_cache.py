"""Compiled modules on disk, so that a restarted agent serves again without recompiling.

Compiling a module is the slow part of a restart (a 5 MiB module takes seconds; wasmtime's
`Module.deserialize` of the same compiled code takes milliseconds). The agent keeps what
wasmtime compiled under `<data-dir>/compiled/`, one file per module digest and *compile
key*: the wasmtime version, this file's format and the Engine settings that shape compiled
code (epoch interruption, pooled or not and the pool's limits), so that an upgraded
wasmtime or another Engine never picks up an old file.

`Module.deserialize` trusts its input the way a program trusts its own machine code: bytes
that are not exactly what wasmtime serialized may do anything when run. So every file is
authenticated before it is deserialized: it holds an HMAC-SHA256, under a key of this
agent (`compiled/key`, 32 random bytes, mode 0600, made on first use), of its own name, its
facts and its payload. A file that is truncated, altered, renamed (another module's code
under this digest) or written by anyone without the key is refused, logged
(`agent.compiled_cache_refused`), deleted, and the module is compiled again from its
verified `.wasm`. The bytes verified are the bytes deserialized (read once into memory; no
second read a writer could race; the runtime maps them from a sealed copy, never from this
file).

Beside the compiled code, a file holds the module's *facts*: what the runtime learnt of the
module when it compiled it (its exports, memories, tables: runtime.ModuleFacts), so that a
restart neither lists the module's exports through wasmtime nor parses its binary again
(together about a fifth of a restore's CPU for a 5 MiB module). The facts are covered by the
same HMAC, so they are exactly what the agent wrote for the module with this digest.

What the key does not protect against: whoever can write the data dir can read the key
too, exactly as they could edit `state.json` or the stored modules. The cache adds no new
trust: it is as safe as the data dir it lives in, which must be the agent's own (0700).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import importlib.metadata
import mmap
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gitopsd.agent.api import SHA256_RE
from gitopsd.agent.state import atomic_write
from gitopsd.errors import ModuleError, StoreError
from gitopsd.log import get_logger

FORMAT = 2  # of the files below; part of every compile key (1: no facts)
# A file: MAGIC, the MAC, the facts' length (4 bytes, big-endian), the facts, the payload.
MAGIC = b"gitopsd-compiled-module 2\n"
MAC_BYTES = 32
LENGTH_BYTES = 4
MAX_FACTS_BYTES = 1 << 24  # a module's facts are a few KiB; more is not a file of ours
KEY_BYTES = 32
DIRECTORY = "compiled"
# The memfd is read whole at once for its MAC: mapping it populated saves a fault per page.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def wasmtime_version() -> str:
    """The installed wasmtime-py (which ships its own wasmtime C library of that version)."""
    return importlib.metadata.version("wasmtime")


def compile_key(engine_settings: str) -> str:
    """16 hex digits naming one wasmtime version, file format and Engine configuration."""
    text = f"format {FORMAT}\nwasmtime {wasmtime_version()}\n{engine_settings}\n"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CachedModule:
    """An authenticated cache file: the caller's facts about the module, and wasmtime's
    serialized module, either in a sealed memfd (`memfd`, open until `close()`: map it, or
    hand `/proc/self/fd/<memfd>` to wasmtime) or, where there are none, in memory."""

    facts: bytes
    payload: bytearray | None
    memfd: int | None = None

    def read(self) -> bytes | bytearray:
        """The serialized module's bytes (read from the memfd when it is one)."""
        if self.memfd is None:
            assert self.payload is not None
            return self.payload
        size = os.fstat(self.memfd).st_size
        return os.pread(self.memfd, size, 0)

    def close(self) -> None:
        """Close the memfd (a mapping of it made meanwhile stays valid)."""
        if self.memfd is not None:
            os.close(self.memfd)


class _Changed(Exception):
    """The file ended before the length it had when it was opened."""


def _sealed_copy(source: int, offset: int, count: int) -> int | None:
    """A memfd holding `count` bytes of file `source` from `offset`, copied by the kernel,
    then sealed against writes, shrinking, growth and further seals; None where that
    cannot be done here (not Linux, no seals, a file system sendfile cannot read: the
    caller reads the file itself). _Changed when the file is shorter than that."""
    if not hasattr(os, "memfd_create") or not hasattr(fcntl, "F_ADD_SEALS"):
        return None
    try:
        fd = os.memfd_create("gitopsd-compiled-module", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None
    try:
        copied = 0
        while copied < count:
            sent = os.sendfile(fd, source, offset + copied, count - copied)
            if sent == 0:
                raise _Changed
            copied += sent
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
        )
    except OSError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What one cache did since it was opened (tests and the restore log read these)."""

    hits: int
    stores: int
    refused: int


class CompiledCache:
    """The compiled modules of one agent, under `<data-dir>/compiled/`.

    Thread-safe for distinct files; two writers of one file both write whole files under
    temporary names and rename (the last one wins, and both are valid).
    """

    def __init__(self, data_dir: Path, *, node: str | None = None) -> None:
        self.directory = data_dir / DIRECTORY
        self.log = get_logger(node=node) if node else get_logger()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.directory}: {exc.strerror or exc}") from exc
        self._key = self._load_key()
        self._hits = self._stores = self._refused = 0

    @property
    def stats(self) -> CacheStats:
        """Hits, stores and refusals so far."""
        return CacheStats(self._hits, self._stores, self._refused)

    def _load_key(self) -> bytes:
        path = self.directory / "key"
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = b""
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if len(key) == KEY_BYTES:
            return key
        if key:
            # A damaged key only costs recompiling: every file made under it is refused.
            self.log.warning("agent.compiled_cache_new_key", reason="key file is not 32 bytes")
        key = secrets.token_bytes(KEY_BYTES)
        atomic_write(path, key, mode=0o600)
        return key

    def path(self, sha256: str, key: str) -> Path:
        """The file of module `sha256` compiled under compile key `key`."""
        if not SHA256_RE.match(sha256):
            raise ModuleError(f"{sha256!r} is not a sha256: expected 64 lowercase hex digits")
        if len(key) != 16 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"compile key {key!r} is not 16 hex digits")
        return self.directory / f"{sha256}.{key}.cwasm"

    def _mac(self, name: str, *body: bytes | bytearray | memoryview | mmap.mmap) -> bytes:
        """The MAC of a file called `name` whose bytes after the MAC are the parts of `body`
        (the facts' length, the facts and the payload)."""
        mac = hmac.new(self._key, name.encode() + b"\0", hashlib.sha256)
        for part in body:
            mac.update(part)
        return mac.digest()

    def has(self, sha256: str, key: str) -> bool:
        """True when a file exists for this module and key (not yet verified)."""
        return self.path(sha256, key).is_file()

    def load(self, sha256: str, key: str) -> CachedModule | None:
        """The verified facts and compiled bytes, or None (absent, or refused: logged and
        deleted). Where the system has sealed memfds, the compiled bytes are copied (by the
        kernel) into one, sealed, and then verified: what the caller maps is exactly what
        was verified, and nothing can change it since."""
        path = self.path(sha256, key)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(len(MAGIC) + MAC_BYTES + LENGTH_BYTES)
                if len(head) < len(MAGIC) + MAC_BYTES + LENGTH_BYTES or not head.startswith(MAGIC):
                    self.refuse(
                        sha256, key, "not a compiled-module file (truncated or overwritten)"
                    )
                    return None
                mac = head[len(MAGIC) : len(MAGIC) + MAC_BYTES]
                length = head[len(MAGIC) + MAC_BYTES :]
                start = len(head) + int.from_bytes(length, "big")
                if int.from_bytes(length, "big") > MAX_FACTS_BYTES or start >= size:
                    self.refuse(sha256, key, "its facts run past the end of the file")
                    return None
                facts = f.read(start - len(head))
                try:
                    sealed = _sealed_copy(f.fileno(), start, size - start)
                except _Changed:
                    self.refuse(sha256, key, "it changed while it was read")
                    return None
                if sealed is None:  # no memfds here: read it into memory
                    payload = bytearray(size - start)
                    if f.readinto(payload) != len(payload) or f.read(1):
                        self.refuse(sha256, key, "it changed while it was read")
                        return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.refuse(sha256, key, f"cannot read it: {exc.strerror or exc}")
            return None
        if sealed is not None:
            cached = self._verified_sealed(sha256, key, path.name, mac, length, facts, sealed)
        elif hmac.compare_digest(mac, self._mac(path.name, length, facts, payload)):
            cached = CachedModule(facts, payload)
        else:
            cached = None
            self.refuse(sha256, key, "authentication failed (altered, truncated or foreign)")
        if cached is not None:
            self._hits += 1
        return cached

    def _verified_sealed(
        self, sha256: str, key: str, name: str, mac: bytes, length: bytes, facts: bytes, fd: int
    ) -> CachedModule | None:
        """The CachedModule of a sealed memfd whose contents pass the MAC, else None (the
        file refused, the memfd closed)."""
        try:
            with mmap.mmap(fd, 0, flags=_MAP_FLAGS, prot=mmap.PROT_READ) as view:
                ok = hmac.compare_digest(mac, self._mac(name, length, facts, view))
        except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
            os.close(fd)
            self.refuse(sha256, key, f"cannot read it: {exc}")
            return None
        if not ok:
            os.close(fd)
            self.refuse(sha256, key, "authentication failed (altered, truncated or foreign)")
            return None
        return CachedModule(facts, None, fd)

    def store(self, sha256: str, key: str, payload: bytes | bytearray, facts: bytes) -> None:
        """Write the compiled bytes of module `sha256` with the caller's `facts` about it,
        authenticated. A failure to write is logged and costs only a later recompile (the
        agent keeps serving)."""
        if len(facts) > MAX_FACTS_BYTES:
            raise ValueError(f"facts of {len(facts)} bytes: at most {MAX_FACTS_BYTES}")
        path = self.path(sha256, key)
        # Renamed into place whole, not fsynced: a file lost in a crash costs a recompile,
        # and one torn by it fails authentication. Every endpoint of `agent --count N`
        # writes its own copy, so an fsync per file would slow every rollout down.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        header = len(facts).to_bytes(LENGTH_BYTES, "big") + facts
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(MAGIC)
                out.write(self._mac(path.name, header, payload))
                out.write(header)
                out.write(payload)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.log.warning(
                "agent.compiled_cache_write_failed",
                sha256=sha256,
                reason=exc.strerror or str(exc),
                effect="the module is compiled again after a restart",
            )
            return
        self._stores += 1

    def refuse(self, sha256: str, key: str, reason: str) -> None:
        """Log and delete a file that must not be deserialized (its module is recompiled)."""
        self._refused += 1
        self.log.error(
            "agent.compiled_cache_refused",
            sha256=sha256,
            file=str(self.path(sha256, key)),
            reason=reason,
            effect="compiled again from the stored module",
        )
        with contextlib.suppress(OSError):
            os.unlink(self.path(sha256, key))
