"""What an agent does, independent of HTTP: upload, load, route, call, persist.

The registry is only touched from the event loop; blocking work (hashing, compiling,
the link check, file writes) runs in threads, WASM calls on the runtime's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gitopsd.agent import wagi
from gitopsd.agent.api import (
    NAME_RE,
    Limits,
    LoadVersion,
    SetTraffic,
    StoredState,
    StoredVersion,
)
from gitopsd.agent.errors import AgentRequestError, MemoryBudgetExceeded, NotFound, Unavailable
from gitopsd.agent.metrics import NodeFigures
from gitopsd.agent.module_cache import CompiledCache
from gitopsd.agent.registry import (
    Registry,
    Version,
    fits_budget,
    stored_function_problem,
    stored_version_problem,
)
from gitopsd.agent.runtime import MIB, CallResult, Prepared, Runtime
from gitopsd.agent.settings import AgentSettings
from gitopsd.agent.state import ModuleStore, StateFile
from gitopsd.errors import GitopsdError, ModuleError
from gitopsd.log import get_logger

# Versions prepared at once on restore: one per core, at least two (module_cache.py).
RESTORE_CONCURRENCY = max(2, os.cpu_count() or 2)


@dataclass(frozen=True, slots=True)
class Invocation:
    """The version that served a request and what its call produced."""

    version: Version
    result: CallResult


class AgentService:
    """The state and operations of one edge agent."""

    def __init__(self, settings: AgentSettings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.registry = Registry()
        self.modules = ModuleStore(settings.data_dir / "modules")
        # Compiled code of the loaded modules, so that a restart deserializes, not compiles.
        self.compiled = CompiledCache(settings.data_dir, node=settings.name)
        self.state_file = StateFile(settings.data_dir / "state.json")
        self.log = get_logger(node=settings.name)
        self._persist_lock = asyncio.Lock()
        # Random buckets need no unpredictability; a private generator avoids global state.
        self._rng = random.Random()
        # Part of the inventory's ETag: a restarted agent (same generation, maybe other
        # labels or budget) must not be taken for the one a controller cached.
        self._boot = secrets.token_hex(6)
        # Set (and replaced) on every change of state: wakes the controllers' held
        # `GET /inventory?wait=` requests. Also set when the agent stops.
        self._moved = asyncio.Event()
        self.stopping = False
        self.registry.on_change = self._announce

    # --- start-up -------------------------------------------------------------------

    async def restore(self) -> None:
        """Load state.json: every function, version, traffic split and the generation.

        state.json is checked as the control requests that made it were, since anyone who
        can write the data dir can edit it: a function entry with a name, sticky header or
        traffic a request could not have set is dropped whole; a version whose name or
        digest is malformed, whose module file is missing or does not hash to the digest it
        is stored under (the file is moved aside, so the controller uploads it again), that
        no longer loads, or that does not fit in `--memory-mib` by the rule a load obeys
        (`_within_budget`), is dropped (its traffic with it). Each drop is an
        `agent.restore_refused` error log naming the entry and why; the rest restores, and
        the controller sees what is missing in the inventory and redeploys it.
        """
        started = time.perf_counter()
        stored = await asyncio.to_thread(self.state_file.load)
        self.registry.generation = stored.generation
        ready = await self._prepare_all(
            [
                (fname, vname, sv)
                for fname, sfn in stored.functions.items()
                if stored_function_problem(fname, sfn) is None
                for vname, sv in sfn.versions.items()
                if stored_version_problem(vname, sv) is None
            ]
        )
        dropped = False
        restorable: dict[str, dict[str, Version]] = {}
        for fname, sfn in stored.functions.items():
            problem = stored_function_problem(fname, sfn)
            if problem is not None:
                self.log.error("agent.restore_refused", function=fname, reason=problem)
                dropped = True
                continue
            versions = restorable[fname] = {}
            for vname, sv in sfn.versions.items():
                try:
                    problem = stored_version_problem(vname, sv)
                    if problem is not None:
                        raise ModuleError(problem)
                    prepared = ready[(fname, vname)]
                    if isinstance(prepared, GitopsdError):
                        raise prepared
                except GitopsdError as exc:
                    self.log.error(
                        "agent.restore_refused", function=fname, version=vname, reason=str(exc)
                    )
                    dropped = True
                    continue
                versions[vname] = Version(
                    vname, sv.sha256, sv.limits, sv.health_check, sv.loaded_at, prepared
                )
        admitted = self._within_budget(stored, restorable)
        for fname, versions in restorable.items():
            kept = {v: version for v, version in versions.items() if (fname, v) in admitted}
            dropped = dropped or len(kept) < len(versions)
            self.registry.restore(fname, stored.functions[fname], kept)
        if dropped:
            self.registry.generation += 1
            self._announce()
            await self._persist()
        self.log.info(
            "agent.restored",
            generation=self.registry.generation,
            functions=len(self.registry.functions),
            compiled_from_cache=self.compiled.stats.hits,
            restore_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def _within_budget(
        self, stored: StoredState, restorable: Mapping[str, Mapping[str, Version]]
    ) -> set[tuple[str, str]]:
        """The (function, version) pairs of `restorable` that fit in `--memory-mib`, admitted
        one by one by the rule of a load (`fits_budget`); each one refused is logged.

        Versions with a traffic weight are admitted first (they serve requests; a retained
        old version serves none), then in state.json's order. state.json may have been
        written under a larger budget, or edited: either way, what is loaded stays within
        the budget, and the controller redeploys what is missing."""
        budget = self.settings.memory_mib
        order = [
            (fname, vname, version)
            for fname, versions in restorable.items()
            for vname, version in versions.items()
        ]
        weighted = {
            (fname, w.version)
            for fname, sfn in stored.functions.items()
            for w in sfn.traffic
            if w.percent > 0
        }
        order.sort(key=lambda entry: (entry[0], entry[1]) not in weighted)  # stable
        admitted: set[tuple[str, str]] = set()
        used = 0
        for fname, vname, version in order:
            needs = version.limits.memory_mib
            if fits_budget(used + needs, budget):
                admitted.add((fname, vname))
                used += needs
                continue
            self.log.error(
                "agent.restore_refused",
                function=fname,
                version=vname,
                reason=(
                    f"needs {needs} MiB (limits.memoryMiB) but the agent's memory budget is "
                    f"{budget} MiB with {used} MiB taken by the versions restored before it: "
                    "not loaded; start the agent with a larger --memory-mib or load it "
                    "again once there is room"
                ),
            )
        return admitted

    async def _prepare_all(
        self, wanted: list[tuple[str, str, StoredVersion]]
    ) -> dict[tuple[str, str], Prepared | GitopsdError]:
        """`_prepare` of every (function, version, stored version), RESTORE_CONCURRENCY at a
        time: hashing, the cache's HMAC and wasmtime release the GIL, so a restart uses
        every core. Each result is the Prepared or the error that refused it."""
        limit = asyncio.Semaphore(RESTORE_CONCURRENCY)

        async def one(sv: StoredVersion) -> Prepared | GitopsdError:
            async with limit:
                try:
                    return await asyncio.to_thread(self._prepare, sv.sha256, sv.limits)
                except GitopsdError as exc:
                    return exc

        results = await asyncio.gather(*(one(sv) for _, _, sv in wanted))
        return {(f, v): got for (f, v, _), got in zip(wanted, results, strict=True)}

    def _prepare(self, sha256: str, limits: Limits) -> Prepared:
        """Compile (or reuse) the stored module and instantiate it once under `limits`."""
        # The file must exist and match its digest even when the runtime has the module
        # compiled (another agent of this process may have uploaded it): what is loaded must
        # survive a restart, and a file changed behind the agent's back is not served.
        if not self.modules.has(sha256):
            raise ModuleError(f"module {sha256} is not stored under {self.modules.directory}")
        data = self.modules.read(sha256)  # ModuleError when the bytes do not hash to sha256
        prepared = self.runtime.compile(data, sha256, self.compiled)
        self.runtime.check(prepared, limits.memory_mib * MIB, limits.timeout_ms)
        return prepared

    def _check_budget(self, function: str, version: str, limits: Limits) -> None:
        """Refuse (409 with the figures) a load whose `limits.memoryMiB` does not fit in
        what is left of the agent's `--memory-mib` budget."""
        budget = self.settings.memory_mib
        after = self.registry.memory_after_load(function, version, limits.memory_mib)
        used = self.registry.memory_used_mib()
        if fits_budget(after, budget):
            return
        raise MemoryBudgetExceeded(
            f"version {version!r} of {function!r} needs {limits.memory_mib} MiB "
            f"(limits.memoryMiB) but the agent's memory budget is {budget} MiB with {used} MiB "
            f"used by loaded versions ({after} MiB after this load): unload a version or start "
            "the agent with a larger --memory-mib",
            budget=budget,
            used=used,
            requested=limits.memory_mib,
        )

    async def _persist(self) -> None:
        # Snapshot now, on the loop; the lock is FIFO, so writes land in snapshot order.
        state = self.registry.state()
        async with self._persist_lock:
            await asyncio.to_thread(self.state_file.save, state)

    # --- modules --------------------------------------------------------------------

    def has_module(self, sha256: str) -> bool:
        """True when the module is stored (False for anything that is not a digest)."""
        try:
            return self.modules.has(sha256.lower())
        except ModuleError:
            return False

    async def upload(self, sha256: str, data: bytes) -> str:
        """Store a module after checking its digest and that it is valid WASM."""
        sha256 = sha256.lower()
        self.modules.path(sha256)  # validates the digest's form before any work

        def verify_and_store() -> None:
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise AgentRequestError(
                    f"sha256 of the body is {digest}, not {sha256}: upload the bytes the "
                    "digest was computed from"
                )
            self.runtime.compile(data, sha256)
            self.modules.write(sha256, data)

        await asyncio.to_thread(verify_and_store)
        self.log.info("agent.module_stored", sha256=sha256, bytes=len(data))
        return sha256

    # --- functions and versions -----------------------------------------------------

    async def load_version(self, function: str, version: str, body: LoadVersion) -> bool:
        """Load (or replace) a version after a link check; True when the state changed."""
        for what, name in (("function", function), ("version", version)):
            if not NAME_RE.match(name):
                raise AgentRequestError(
                    f"{what} name {name!r} is invalid: use letters, digits and . _ + - "
                    "(at most 128, starting with a letter or digit)"
                )
        if not self.modules.has(body.sha256):
            raise NotFound(
                f"module {body.sha256} is not stored: upload it with PUT /modules/{body.sha256}"
            )
        self._check_budget(function, version, body.limits)  # before the work of a load
        prepared = await asyncio.to_thread(self._prepare, body.sha256, body.limits)
        # Again, with no await before the registry changes: another load may have been
        # admitted while this one was compiling.
        self._check_budget(function, version, body.limits)
        loaded = Version(
            version, body.sha256, body.limits, body.health_check, time.time(), prepared
        )
        changed = self.registry.load(function, loaded, body.sticky_header)
        if changed:
            await self._persist()
            self.log.info(
                "agent.version_loaded", function=function, version=version, sha256=body.sha256
            )
        return changed

    async def delete_version(self, function: str, version: str) -> None:
        """Unload a version (409 while it still has traffic and others are loaded)."""
        self.registry.delete_version(function, version)
        await self._persist()
        self.log.info("agent.version_deleted", function=function, version=version)

    async def delete_function(self, function: str) -> None:
        """Unload a function and every version of it."""
        self.registry.delete_function(function)
        await self._persist()
        self.log.info("agent.function_deleted", function=function)

    async def set_traffic(self, function: str, body: SetTraffic) -> bool:
        """Replace weights and rules; True when the state changed."""
        key = bytes.fromhex(body.bucket_key) if body.bucket_key is not None else None
        changed = self.registry.set_traffic(
            function, body.weights, body.rules, body.sticky_header, key
        )
        if changed:
            await self._persist()
            self.log.info(
                "agent.traffic_set",
                function=function,
                weights={w.version: w.percent for w in body.weights},
                rules=len(body.rules),
            )
        return changed

    async def health(self, function: str, version: str, timeout_ms: int) -> dict[str, Any]:
        """Run the version's health export and compare its stdout with `expect`."""
        loaded = self.registry.version(function, version)
        check = loaded.health_check
        if check.function not in loaded.prepared.exports:
            return {
                "healthy": False,
                "output": "",
                "error": f"module has no function export `{check.function}`",
                "durationMs": 0.0,
            }
        result = await self.runtime.run(
            loaded.prepared,
            check.function,
            env=[("X_GITOPSD_FUNCTION", function), ("X_GITOPSD_VERSION", version)],
            args=[function],
            memory_bytes=loaded.limits.memory_mib * MIB,
            timeout_ms=timeout_ms,
        )
        output = result.stdout.decode(errors="replace")
        healthy = result.ok and output.strip() == check.expect.strip()
        error = result.error
        if result.ok and not healthy:
            error = f"health check wrote {output.strip()[:200]!r}, expected {check.expect!r}"
        return {
            "healthy": healthy,
            "output": output[:4096],
            "error": error,
            "durationMs": round(result.duration_ms, 3),
        }

    # --- data plane -----------------------------------------------------------------

    def route(self, function: str, headers: Mapping[str, str]) -> Version:
        """The version serving a request (NotFound for an unknown function)."""
        version = self.registry.route(function, headers, self._rng)
        if version is None:
            # Only after a restore dropped a weighted version: traffic no longer sums to 100.
            raise Unavailable(
                f"function {function!r} has no version with traffic for this request: "
                "set traffic with PUT /functions/{fn}/traffic"
            )
        return version

    async def invoke(
        self,
        function: str,
        version: Version,
        *,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> Invocation:
        """Call the version's handler with the request; count it in the version's metrics."""
        env = wagi.environment(
            function=function,
            version=version.name,
            method=method,
            path=path,
            query=query,
            body_length=len(body),
            headers=headers,
        )
        result = await self.runtime.run(
            version.prepared,
            "_start",
            stdin=body,
            env=env,
            args=[function],
            memory_bytes=version.limits.memory_mib * MIB,
            timeout_ms=version.limits.timeout_ms,
        )
        version.metrics.record(result)
        if not result.ok:
            self.log.warning(
                "agent.call_failed",
                function=function,
                version=version.name,
                outcome=result.outcome.value,
                error=result.error,
                stderr=result.stderr[:512].decode(errors="replace") or None,
            )
        return Invocation(version, result)

    # --- reports --------------------------------------------------------------------

    def inventory(self) -> dict[str, Any]:
        """The inventory document the controller diffs against."""
        return {
            "node": self.settings.name,
            "region": self.settings.region,
            "labels": dict(self.settings.labels),
            "generation": self.registry.generation,
            "memoryBudgetMiB": self.settings.memory_mib,
            "memoryUsedMiB": self.registry.memory_used_mib(),
            "functions": self.registry.functions_json(),
        }

    def inventory_etag(self) -> str:
        """ETag of `inventory()`: it changes whenever the generation does, or on a restart."""
        return f'"{self._boot}-{self.registry.generation}"'

    async def inventory_moved(self, etag: str, wait: float) -> None:
        """Return once the inventory's ETag is no longer `etag`, after `wait` seconds at most,
        or at once when the agent is stopping (the held request must not delay the stop)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):  # no extra task per held request
                while self.inventory_etag() == etag and not self.stopping:
                    await self._moved.wait()

    def _announce(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def stop_holding(self) -> None:
        """The agent stops: release every held inventory request now."""
        self.stopping = True
        self._announce()

    def function_metrics(self, function: str) -> dict[str, Any]:
        """Metrics of every loaded version of one function."""
        fn = self.registry.function(function)
        return {
            "function": function,
            "versions": {name: v.metrics.to_json() for name, v in sorted(fn.versions.items())},
        }

    def node_figures(self) -> NodeFigures:
        """What `/metrics` says about the agent itself (agent/metrics.py)."""
        return NodeFigures(
            self.settings.name,
            self.registry.generation,
            self.settings.memory_mib * MIB,
            self.registry.memory_used_mib() * MIB,
        )
