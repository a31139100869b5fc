"""The agent's files under --data-dir: modules by sha256, state.json, the token, a lock.

    <data-dir>/modules/<sha256>.wasm   uploaded modules, content-addressed
    <data-dir>/state.json              functions, traffic, generation (atomic replace)
    <data-dir>/token                   generated bearer token, mode 0600
    <data-dir>/lock                    flock: one agent per data dir

Every write goes to a temporary file in the same directory, is fsynced, then renamed over
the target with os.replace: a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from gitopsd.agent.api import SHA256_RE, StoredState
from gitopsd.errors import ConfigError, ModuleError, StoreError
from gitopsd.log import get_logger


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see the old or the new content, nothing else."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ModuleStore:
    """Uploaded modules, one file per sha256.

    A file whose bytes no longer hash to the digest it is stored under (changed behind the
    agent's back) is never used: reading it moves it aside (`<sha256>.wasm.corrupt-<time>`,
    kept for whoever investigates) and raises ModuleError, so the module reads as not stored
    (`HEAD /modules/{sha256}` answers 404) and the controller's next deploy uploads it
    again; an upload over such a file replaces it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # Orders replacing a file (upload) and moving one aside (read): a read that found
        # the old, bad bytes must not move away the good file an upload just put there.
        self._lock = threading.Lock()
        self.log = get_logger(directory=str(directory))

    def path(self, sha256: str) -> Path:
        """Where the module with this digest lives (the digest is checked to be hex first)."""
        if not SHA256_RE.match(sha256):
            raise ModuleError(f"{sha256!r} is not a sha256: expected 64 lowercase hex digits")
        return self.directory / f"{sha256}.wasm"

    def has(self, sha256: str) -> bool:
        """True when the module is stored (its bytes are checked when it is read)."""
        return self.path(sha256).is_file()

    def write(self, sha256: str, data: bytes) -> None:
        """Store a module whose digest the caller has verified; a file already stored under
        that digest is kept when its bytes match it, replaced when they do not."""
        path = self.path(sha256)
        with self._lock:
            try:
                current = path.read_bytes()
            except FileNotFoundError:
                current = None
            except OSError:
                current = b""  # unreadable: replaced by the verified bytes
            if current is not None and hashlib.sha256(current).hexdigest() == sha256:
                return
            if current is not None:
                self.log.warning(
                    "agent.module_replaced",
                    sha256=sha256,
                    reason="the stored file did not hash to its digest",
                )
            atomic_write(path, data)

    def read(self, sha256: str) -> bytes:
        """The module's bytes, checked against its digest. A file that does not hash to it
        is moved aside, logged (`agent.module_refused`) and is a ModuleError."""
        path = self.path(sha256)
        try:
            with path.open("rb") as handle:
                data = handle.read()
                inode = os.fstat(handle.fileno()).st_ino
        except OSError as exc:
            raise ModuleError(f"module {sha256} is not stored: {exc.strerror}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest == sha256:
            return data
        aside = self._move_aside(path, inode)
        self.log.error(
            "agent.module_refused",
            sha256=sha256,
            actual_sha256=digest,
            moved_to=str(aside) if aside else None,
            effect="not loaded; the controller's next deploy uploads it again",
        )
        raise ModuleError(
            f"module {sha256[:12]}... is corrupt on this agent and was moved aside, upload it "
            f"again (its file's bytes hash to {digest[:12]}..., not to its digest)"
        )

    def _move_aside(self, path: Path, inode: int) -> Path | None:
        """Move the file read (inode `inode`) to `<name>.corrupt-<time>`; None when it is no
        longer there (another read moved it, or an upload replaced it with good bytes)."""
        with self._lock:
            try:
                if path.stat().st_ino != inode:
                    return None
                aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
                os.replace(path, aside)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise ModuleError(
                    f"module file {path.name} is corrupt and cannot be moved aside: "
                    f"{exc.strerror or exc}"
                ) from exc
        _fsync_dir(path.parent)
        return aside


class StateFile:
    """state.json: read once at start, replaced atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> StoredState:
        """The persisted state; empty when there is none.

        An unreadable file is moved aside (state.json.corrupt-<time>) and the agent starts
        empty: Git is the source of truth, and the controller redeploys what is missing.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return StoredState()
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        try:
            return StoredState.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            get_logger(path=str(self.path)).error(
                "agent.state_corrupt", moved_to=str(aside), error=str(exc).splitlines()[0]
            )
            return StoredState()

    def save(self, state: StoredState) -> None:
        """Replace state.json with `state`."""
        data = json.dumps(state.model_dump(by_alias=True), indent=1, sort_keys=True)
        # 0600: it holds each function's sticky-bucket key, which must not be readable by
        # whoever else has an account on the edge box.
        atomic_write(self.path, data.encode() + b"\n", mode=0o600)


def resolve_token(data_dir: Path, token: str | None, token_file: Path | None) -> str:
    """The bearer token: given, else the first line of `token_file`, else `<data-dir>/token`,
    generated (32 random bytes, hex, mode 0600) on first start and reused after."""
    if token:
        return token
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: {exc.strerror}") from exc
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigError(f"--token-file {token_file}: the first line is empty")
        return value
    path = data_dir / "token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if not value:
            raise ConfigError(f"{path} is empty: delete it to generate a new token") from None
        return value
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


class DataDirLock:
    """An exclusive flock on `<data-dir>/lock`: two agents on one data dir would corrupt it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "lock"
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the data dir."""
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigError(
                f"data dir {self.path.parent} is in use by another agent: give each its own"
            ) from None
        self._file = handle

    def release(self) -> None:
        """Drop the lock (closing the file releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None
