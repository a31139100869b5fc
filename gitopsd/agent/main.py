"""Start and stop agents: `start_agent` for tests and benchmarks, `run_agent` for the CLI.

`run_agents` serves several endpoints from one process (`gitopsd agent --count N`): each
is a full agent with its own state, data dir, token and port, and all share one Runtime
(one wasmtime Engine, one compiled-module cache, one thread pool). Benchmarks use it to
put a large fleet on one small machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gitopsd.agent.data_plane import DataPlane
from gitopsd.agent.dialout import DialOut
from gitopsd.agent.metrics import AgentCounters
from gitopsd.agent.runtime import Runtime
from gitopsd.agent.server import create_app
from gitopsd.agent.service import AgentService
from gitopsd.agent.settings import AgentSettings
from gitopsd.agent.state import DataDirLock, resolve_token
from gitopsd.errors import ConfigError
from gitopsd.log import get_logger

# How long a stopping agent lets in-flight requests finish (calls are bounded by their
# own timeouts, so this only matters for slow clients).
SHUTDOWN_TIMEOUT_S = 5.0


@dataclass(eq=False)
class RunningAgent:
    """An agent serving HTTP. `close()` stops it and releases its data dir."""

    settings: AgentSettings
    url: str
    port: int
    token: str
    service: AgentService
    _runner: web.AppRunner
    _plane: DataPlane
    _runtime: Runtime
    _owns_runtime: bool
    _lock: DataDirLock
    _closed: bool = False
    dialout: DialOut | None = None  # the tunnel to the controller (`--controller`)

    async def close(self) -> None:
        """Stop serving, wait for in-flight requests, release the data dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.dialout is not None:
                await self.dialout.close()
            await self._plane.close(SHUTDOWN_TIMEOUT_S)
            await self._runner.cleanup()
            if self._owns_runtime:
                await asyncio.to_thread(self._runtime.close)
        finally:
            self._lock.release()
        get_logger(node=self.settings.name).info("agent.stopped")


def new_runtime() -> Runtime:
    """A Runtime for agents; says so in the log when it could not reserve its instance pool."""
    runtime = Runtime()
    if not runtime.pooled:
        get_logger().warning(
            "agent.instance_pool_off",
            reason="could not reserve address space for the instance pool (ulimit -v or "
            "LimitAS=?) or this wasmtime lacks the pooling allocator",
            effect="every call maps its own memory: slower, same behaviour",
        )
    return runtime


def _client_url(host: str, port: int) -> str:
    # A wildcard listen address is not something a client can connect to: use loopback.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_agent(settings: AgentSettings, runtime: Runtime | None = None) -> RunningAgent:
    """Restore the agent's state from its data dir and start serving.

    Several agents may share one `runtime` (one Engine, one module cache, one thread
    pool); without one the agent creates its own and closes it on `close()`.
    Port 0 picks a free port: read the actual one from `.port`.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    owns_runtime = runtime is None
    active = runtime or new_runtime()
    runner: web.AppRunner | None = None
    plane: DataPlane | None = None
    try:
        token = resolve_token(settings.data_dir, settings.token, settings.token_file)
        service = AgentService(settings, active)
        await service.restore()
        plane = DataPlane(service, AgentCounters())
        runner = web.AppRunner(
            create_app(service, token, plane),
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        assert runner.server is not None
        try:
            await plane.start(settings.host, settings.port, runner.server)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from exc
        port = plane.port
    except BaseException:
        if plane is not None:
            await plane.close(0)
        if runner is not None:
            await runner.cleanup()
        if owns_runtime:
            await asyncio.to_thread(active.close)
        lock.release()
        raise
    url = _client_url(settings.host, port)
    get_logger(node=settings.name).info(
        "agent.listening", url=url, region=settings.region, data_dir=str(settings.data_dir)
    )
    running = RunningAgent(
        settings, url, port, token, service, runner, plane, active, owns_runtime, lock
    )
    if settings.controller is not None:
        running.dialout = DialOut(settings.controller, settings.name, token, url)
        running.dialout.start()
    return running


async def start_agents(settings: Sequence[AgentSettings], runtime: Runtime) -> list[RunningAgent]:
    """Start every endpoint on the shared `runtime`; on a failure stop those already started."""
    started: list[RunningAgent] = []
    try:
        for one in settings:
            started.append(await start_agent(one, runtime))
    except BaseException:
        for agent in reversed(started):
            await agent.close()
        raise
    return started


async def serve(settings: AgentSettings | Sequence[AgentSettings]) -> None:
    """Run one agent, or several endpoints on one Runtime, until SIGTERM or SIGINT."""
    many = [settings] if isinstance(settings, AgentSettings) else list(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    runtime = new_runtime()
    try:
        agents = await start_agents(many, runtime)
        if len(agents) > 1:
            get_logger().info(
                "agent.endpoints_listening",
                count=len(agents),
                first=agents[0].url,
                last=agents[-1].url,
            )
        try:
            await stop.wait()
        finally:
            for agent in agents:
                await agent.close()
    finally:
        await asyncio.to_thread(runtime.close)
        for sig in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def run_agent(settings: AgentSettings) -> None:
    """Blocking entry of `gitopsd agent`: serve until SIGTERM/SIGINT, return on clean stop.

    Raises GitopsdError (ConfigError for a busy data dir or port) when it cannot start.
    """
    _run(serve(settings))


def run_agents(settings: Sequence[AgentSettings]) -> None:
    """Blocking entry of `gitopsd agent --count N`: every endpoint shares one Runtime."""
    if not settings:
        raise ConfigError("agent: no endpoints to serve")
    _raise_open_files_limit()
    _run(serve(settings))


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the agent's event loop: uvloop's, whose transports cost about half of asyncio's
    per request (the agent's data plane is mostly HTTP handling; bench P7)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def _raise_open_files_limit() -> None:
    """Each endpoint holds a listening socket, a lock file and its connections: lift the
    soft limit on open files to the hard one (commonly 1,024 soft against far more hard)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
