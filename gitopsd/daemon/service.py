"""`gitopsd run`: the long-running reconcile service.

One loop does every reconcile pass (so passes never overlap); triggers only wake it: the
APScheduler interval job (with jitter), a watch on a local repository's refs, webhooks, and
the agents themselves (the fleet client holds one inventory request per agent, answered when
that agent changes: fleet/watch.py).
Each pass is level-triggered: it reads desired (Git) and live (agents) state, diffs them and
starts, continues or supersedes rollouts, which run as one task per function so that a long
canary does not hold up the other functions. A pass with the same commit and the same
inventory generations as the last one costs one cheap ref lookup and no request at all to
an agent whose held inventory request is open: no snapshot, no YAML, no diff.

Policy when a new commit arrives during a rollout of the same function: the running rollout
stops at its next step boundary (a wait is cut short), rolls its touched nodes back to the
stable version, and the next pass plans a fresh rollout of the newest version from there
(Argo Rollouts does the same with an update mid-canary).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from gitopsd.clock import Clock, SystemClock
from gitopsd.config import (
    Config,
    default_state_dir,
    fleet_auth,
    load_config,
    read_secret,
    source_spec,
)
from gitopsd.diff import Change
from gitopsd.errors import (
    GitopsdError,
    InvalidManifests,
    SourceError,
    StateError,
    StoreError,
)
from gitopsd.fleet.client import AgentClient
from gitopsd.fleet.live import LiveState
from gitopsd.fleet.tokens import FleetAuth
from gitopsd.fleet.tunnel import TunnelRegistry
from gitopsd.function_state import RolloutState
from gitopsd.ha.daemon_ha import control_for
from gitopsd.http_guard import start_guarded
from gitopsd.log import get_logger
from gitopsd.manifest.desired import DesiredFunction, DesiredState
from gitopsd.manifest.models import is_dial_out
from gitopsd.notify.dispatcher import NotificationDispatcher, dispatcher_from_config
from gitopsd.notify.wiring import commit_lookup, fan_out, observe_results
from gitopsd.reconcile import Reconciler, policy
from gitopsd.reconcile.outcomes import finished_report, report_outcome, started_outcome
from gitopsd.reconcile.pipeline import STEPS, Pass, PassPorts, run_steps
from gitopsd.reconcile.policy import WAITS_FOR_OPERATOR
from gitopsd.reconcile.results import FunctionResult
from gitopsd.reconcile.summary import summarize_rollout
from gitopsd.report.forges import ForgeReporter, reporter_from_config
from gitopsd.report.notes import CommitOutcome
from gitopsd.report.publisher import OutcomePublisher
from gitopsd.rollout.engine import Engine
from gitopsd.source.ancestry import LAST_APPLIED_KEY, REFUSED_HEAD_KEY, NonFastForward
from gitopsd.source.git import SourceSpec
from gitopsd.source.reader import current_commit, is_plain_directory
from gitopsd.source.redact import redact
from gitopsd.source.verify import SignatureRefused
from gitopsd.store.open import open_store
from gitopsd.store.postgres import Fenced
from gitopsd.store.protocol import Store
from gitopsd.store.sqlite import SqliteStore
from gitopsd.ui.events import EventBus

from .metrics import Metrics, serve_metrics
from .sdnotify import Notifier
from .triggers import refs_dir, watch_refs
from .webhook import WebhookReceiver
from .window_wakeups import WindowWakeups

MAX_BACKOFF = 300.0
LAST_ERROR_KEY = "daemon:last_error"  # shown by `gitopsd status` while the daemon retries


CONTROLS_CHECK_SECONDS = 1.0
# How long an agent holds the daemon's inventory request: also the longest a silently
# vanished agent (no TCP reset) can look unchanged to an idle daemon.
INVENTORY_WATCH_S = 30.0
# After a start, how long the first pass waits for the dial-out agents Git names to
# reconnect (agent/dialout.py backs off with jitter; within 10 s of a short outage): a
# rollout begun without them would fail on them. Bounded well under WatchdogSec and the
# start timeout; one that comes later triggers a pass of its own (TunnelRegistry.on_connect).
DIAL_OUT_GRACE_S = 10.0


@dataclass
class LoopMemory:
    """What the last passes learnt: enough to make an unchanged pass almost free."""

    desired: DesiredState | None = None
    bad_commit: str | None = None
    generations: tuple[tuple[str, int], ...] = ()
    controls_stamp: float = 0.0
    failures: int = 0
    unreachable_passes: int = 0  # passes in a row that could not read every agent
    passes: int = 0
    last_error: str = ""
    refused: str = ""  # the newest head, refused as not a fast-forward ("" when none)
    rollouts: dict[str, asyncio.Task[FunctionResult]] = field(default_factory=dict)
    targets: dict[str, tuple[str, str]] = field(default_factory=dict)  # fn -> (version, sha)


class Daemon:
    """The service; `run()` returns the process exit code."""

    def __init__(
        self,
        config_path: Path | None,
        state_dir: Path | None = None,
        token_file: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config_path = config_path
        self.state_dir_flag = state_dir
        self.token_file = token_file
        self.clock = clock or SystemClock()
        self.config = self._load()
        self.state_dir = state_dir or self.config.state.dir or default_state_dir()
        self.notifier = Notifier()
        # Typed as SqliteStore for the status page's ports; on a PostgreSQL [state] url the
        # page opens a store connection of its own (ui/daemon_ports.py).
        self.store = cast(SqliteStore, self._open_store())
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self.reasons: list[str] = []
        self.pass_state = LoopMemory()
        self._head = ""  # the source's head commit, read at the start of each pass
        self._stamp = 0.0  # the operator controls' stamp, read with the fleet
        self.log = get_logger(component="daemon")
        self.reconciler = self._reconciler()
        self.client: AgentClient | None = None
        self.engine: Engine | None = None
        self.ready = False
        self._controls_seen = 0.0
        self.metrics = Metrics()
        self.forges = ForgeReporter()
        self.publisher = OutcomePublisher(self.source, self.state_dir, self.store, self.forges)
        self._configure_publisher()
        self.notifications = NotificationDispatcher((), None)  # [[notify]], opened in run()
        self.events = EventBus()  # rollout steps and node changes, for the status page
        self.window_wakeups = WindowWakeups(self.clock, self._window_opened)
        self.tunnels: TunnelRegistry | None = None  # dial-out agents ([fleet] listen)
        self._tunnels_grace_until = 0.0  # loop time until which a pass waits for them
        # Who may act (gitopsd/ha/): this process alone with SQLite; with a PostgreSQL
        # [state] url, the leader of the lease, whose store writes are fenced by its term.
        self._led: frozenset[int] = frozenset()
        self.control = control_for(
            self.store,
            self.config.ha.lease,
            self.config.ha.shards,
            time.monotonic,
            on_wake=self._woken_by_peer,
            on_change=self._leadership_changed,
        )
        if self.control.shared:  # standby until the first lease round says otherwise
            self.metrics.set_leadership(frozenset(), self.config.ha.shards)

    # configuration ---------------------------------------------------------------------------

    def _load(self) -> Config:
        config = load_config(self.config_path)
        if not config.source.url:
            raise GitopsdError("the daemon needs [source] url in its config file")
        if is_plain_directory(config.source.url):
            raise GitopsdError(
                f"[source] url {config.source.url} is a plain directory: the daemon follows "
                "the commits of a Git repository (`gitopsd validate` reads plain directories)"
            )
        return config

    def _open_store(self) -> Store:
        """The state database, checked before anything acts on it. A damaged file stops the
        start here (exit 2) with one clear STATUS= line, instead of a traceback at the first
        pass that reads the damaged page and a restart into the same one. An unreachable
        PostgreSQL ([state] url) stops it the same way."""
        try:
            store = open_store(self.config, self.state_dir)
            report = store.check()
            if not report.ok:
                store.close()
                raise StateError(report.location, report.summary)
        except StoreError as exc:
            self.notifier.status(f"refusing to start: {exc}")
            get_logger(component="daemon").error("refusing to start", error=str(exc))
            raise
        return store

    def _token(self) -> FleetAuth:
        return fleet_auth(self.config, self.token_file)  # warns in token_mode = "shared"

    def _reconciler(self) -> Reconciler:
        fleet = self.config.fleet
        return Reconciler(
            self.store,
            self.state_dir,
            self.clock,
            self._token(),
            timeout=fleet.timeout,
            concurrency=fleet.concurrency,
            allow_empty=self.config.source.allow_empty,
        )

    @property
    def source(self) -> SourceSpec:
        return source_spec(self.config)

    def reload(self) -> None:
        """SIGHUP: read the config again; a bad file keeps the old one (and says why)."""
        self.notifier.reloading()
        try:
            config = self._load()
        except GitopsdError as exc:
            self.log.error("config reload failed; keeping the running config", error=str(exc))
            self.notifier.ready()
            return
        if config.ha != self.config.ha or config.state != self.config.state:
            # Leases, shards and the store are set up once per process: a changed [ha] or
            # [state] would be read and not acted on.
            self.log.error(
                "config reload refused: [ha] and [state] take effect at a restart; "
                "keeping the running config"
            )
            self.notifier.ready()
            return
        self.config = config
        self.reconciler = self._reconciler()
        self._configure_publisher()
        self.pass_state.generations = ()
        # A commit refused under the old config (allow_non_fast_forward, verify...) is
        # judged again under the new one.
        self.pass_state.bad_commit = None
        self.log.info("config reloaded")
        self.notifier.ready()
        self.request("reload")

    # triggers --------------------------------------------------------------------------------

    def request(self, reason: str) -> None:
        """Ask for a reconcile pass as soon as the current one (if any) ends; on a standby,
        the leader is woken through the database (LISTEN/NOTIFY) too."""
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.wake.set()
        self.control.forward(reason)

    def _woken_by_peer(self, reason: str) -> None:
        """A standby received a trigger (webhook, watch, operator): the leader acts on it."""
        if self.control.leads_any():
            self.reasons.append(f"peer: {reason}")
            self.wake.set()

    def _leadership_changed(self) -> None:
        """After each lease round: metrics; on a change, rollouts of shards no longer led are
        cancelled (their journal lets the new leader resume them, as after a SIGKILL), and a
        new leader passes at once, resuming what the journal holds."""
        led = self.control.led_shards()
        self.metrics.set_leadership(led, self.config.ha.shards)
        if led == self._led:
            return
        self._led = led
        self.log.info("leadership changed", leading=sorted(led))
        self.pass_state.generations = ()  # the next pass acts even if nothing moved
        for name, task in self.pass_state.rollouts.items():
            if not task.done() and not self.control.leads(name):
                task.cancel()
        if led:
            self.request("leadership")

    def _record_error(self, value: str) -> None:
        """The daemon's last error for `gitopsd status`, written by the leader only (a
        standby's store is fenced and writes nothing)."""
        if self.control.leads_any():
            with contextlib.suppress(Fenced):
                self.store.put(LAST_ERROR_KEY, value)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            self.reload()
            return
        self.log.info("stopping: the current step finishes, rollouts resume on next start")
        self.notifier.stopping()
        self.stop.set()
        if self.engine is not None:
            self.engine.stopping = True
        self.wake.set()

    # the service -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        async with contextlib.AsyncExitStack() as stack:
            self.client = await stack.enter_async_context(self.open_client())
            self.forges = reporter_from_config(self.config.status.forges)
            stack.push_async_callback(self.forges.aclose)
            self._configure_publisher()
            self.publisher.start()
            stack.push_async_callback(self.publisher.aclose)  # before the forges close
            self.notifications = dispatcher_from_config(
                self.config.notify, self.state_dir, commit_lookup(self.store)
            )
            await stack.enter_async_context(self.notifications)
            self.engine = Engine(self.store, self.client, self.clock, self.events.rollout_sink)
            self.engine.on_event = fan_out(self.engine.on_event, self.notifications.rollout_sink)
            scheduler = self._start_scheduler()
            stack.callback(scheduler.shutdown, False)
            await self._start_servers(stack)
            await self.control.start(stack)  # leases released after the drain
            watch = self._start_watch()
            try:
                await self._loop()
            finally:
                self.stop.set()
                await self._drain_rollouts()
                if watch is not None:
                    await asyncio.wait([watch], timeout=5)
        self.log.info("stopped")
        return 0

    def open_client(self) -> AgentClient:
        """The daemon's fleet client: it holds one inventory request per agent, so an
        unchanged pass asks no agent anything and a change on any agent wakes the loop."""
        client = self.reconciler.client({}, watch_seconds=INVENTORY_WATCH_S)
        client.on_error = self.metrics.agent_request_error
        client.on_change = self._agent_changed
        return client

    def _window_opened(self, function: str) -> None:
        """A waiting function's deploy window opened: a pass acts even if nothing moved."""
        self.pass_state.generations = ()
        self.request(f"deploy window of {function}")

    def _agent_changed(self, node: str) -> None:
        self.log.debug("agent inventory changed", node=node)
        self.request("agent")
        self.events.node_changed(node)

    def _start_scheduler(self) -> Any:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler()
        interval = max(self.config.source.interval, 1.0)
        scheduler.add_job(
            self.request,
            "interval",
            args=["poll"],
            seconds=interval,
            jitter=interval * 0.1,
            max_instances=1,
            coalesce=True,
            id="poll",
        )
        scheduler.add_job(
            self._check_controls,
            "interval",
            seconds=CONTROLS_CHECK_SECONDS,
            max_instances=1,
            coalesce=True,
            id="controls",
        )
        scheduler.start()
        return scheduler

    async def _check_controls(self) -> None:
        """`gitopsd resume/approve/...` run in another process and only write the store; one
        indexed read a second notices them, so an idle daemon acts without waiting a poll."""
        stamp = self.store.controls_stamp()
        if stamp != self._controls_seen:
            self._controls_seen = stamp  # one request per change, even while backing off
            self.request("operator")

    def _start_watch(self) -> asyncio.Task[None] | None:
        if not self.config.source.watch:
            return None
        git_dir = refs_dir(self.source.url)
        if git_dir is None:
            return None
        return asyncio.create_task(watch_refs(git_dir, self.request, self.stop))

    async def _start_servers(self, stack: contextlib.AsyncExitStack) -> None:
        hook = self.config.webhook
        if hook.listen:
            if hook.secret_file is None:
                raise GitopsdError("[webhook] listen is set but secret_file is not")
            secret = read_secret(hook.secret_file, "webhook secret").encode()
            self.webhook = WebhookReceiver(
                secret, self.config.source.branch, self.request, self.metrics.webhook_delivery
            )
            await self._serve(stack, self.webhook.app(), hook.listen)
        if self.config.fleet.listen:
            await self._start_tunnels(stack, self.config.fleet.listen)
        if self.config.metrics.listen:
            host, _, port = self.config.metrics.listen.rpartition(":")
            runner = await serve_metrics(self.metrics, host.strip("[]"), int(port))
            stack.push_async_callback(runner.cleanup)
        if self.config.ui.listen:
            from gitopsd.ui.daemon_ports import start_ui  # Jinja2 only when the page is on

            await start_ui(self, stack)

    async def _start_tunnels(self, stack: contextlib.AsyncExitStack, listen: str) -> None:
        """The listener dial-out agents connect to (fleet/tunnel.py); the fleet client
        reaches them through it (FleetAuth.relay)."""
        from gitopsd.fleet.tunnel import serve_tunnel

        auth = self.reconciler.token
        if not isinstance(auth, FleetAuth) or auth.secret is None:
            raise GitopsdError(
                "[fleet] listen is set but no fleet secret is: dial-out agents authenticate "
                "with tokens derived from it ([fleet] token_file)"
            )
        self.tunnels = TunnelRegistry(auth)
        self.tunnels.on_connect = lambda _name: self.request("agent")
        self._tunnels_grace_until = asyncio.get_running_loop().time() + DIAL_OUT_GRACE_S
        runner, _port = await serve_tunnel(self.tunnels, listen)
        stack.push_async_callback(runner.cleanup)
        self.log.info("listening", address=listen, serves="dial-out agents")

    async def _await_dial_out(self, names: list[str]) -> None:
        """Tell the listener which dial-out nodes Git names; just after the start, give
        those not yet back up to DIAL_OUT_GRACE_S to reconnect before the pass reads the
        fleet: a rollout begun without them would fail on them and roll back the rest."""
        assert self.tunnels is not None
        self.tunnels.set_known(names)
        left = self._tunnels_grace_until - asyncio.get_running_loop().time()
        if left > 0 and names:
            missing = await self.tunnels.wait_connected(names, left)
            if missing:
                self.log.warning(
                    "dial-out agents not connected", nodes=sorted(missing), waited_s=left
                )
        self._tunnels_grace_until = 0.0

    async def _serve(
        self, stack: contextlib.AsyncExitStack, app: web.Application, listen: str
    ) -> None:
        host, _, port = listen.rpartition(":")
        listener = await start_guarded(app, host.strip("[]"), int(port))
        stack.push_async_callback(listener.cleanup)
        self.log.info("listening", address=listen)

    async def _loop(self) -> None:
        self.request("start")
        while not self.stop.is_set():
            self.wake.clear()
            reasons, self.reasons = self.reasons, []
            delay = await self.reconcile_pass(reasons)
            self.notifier.watchdog()
            timeout = delay
            if self.notifier.watchdog_interval:
                timeout = min(timeout, self.notifier.watchdog_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)

    async def _drain_rollouts(self) -> None:
        tasks = list(self.pass_state.rollouts.values())
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    # one pass --------------------------------------------------------------------------------

    async def reconcile_pass(self, reasons: list[str]) -> float:
        """Run one pass; returns how long to wait at most before the next (backoff on error)."""
        state = self.pass_state
        state.passes += 1
        log = self.log.bind(trigger=",".join(reasons) or "timer")
        started = time.perf_counter()
        try:
            result = await self._pass()
        except Exception as exc:
            if not isinstance(exc, SourceError | GitopsdError | OSError):
                # A bug or an unforeseen library error: stay up on the last good state and
                # leave the traceback for the bug report rather than exit.
                log.exception("unexpected error in a reconcile pass")
            self.metrics.observe_reconcile("error", time.perf_counter() - started)
            state.failures += 1
            error = redact(str(exc))  # names the source URL: never with its password
            state.last_error = error
            backoff = min(MAX_BACKOFF, 2 ** min(state.failures, 9)) * (0.5 + random.random() / 2)
            log.error(
                "reconcile failed; keeping the last good state",
                error=error,
                retry_in=round(backoff, 1),
            )
            self.notifier.status(f"error: {error}; retrying in {backoff:.0f}s")
            self._record_error(f"{error} (retrying in {backoff:.0f}s)")
            return float(backoff)
        self.metrics.observe_reconcile(result, time.perf_counter() - started)
        if result != "noop":
            self.events.publish("pass", {"result": result})
        self._export_rollout_states()
        if state.last_error:
            self._record_error("")
        state.failures = 0
        state.last_error = ""
        self._notify_pass(self._status_line())
        return self._next_pass_in()

    def _next_pass_in(self) -> float:
        """The poll interval, or sooner while agents are unreachable: an agent that comes
        back is found by a retry with capped exponential backoff (1 s, 2 s ... 5 min), not
        only by the next poll. The retry asks only the unreachable agents: the others are
        watched (fleet/watch.py)."""
        interval = float(self.config.source.interval)
        tries = self.pass_state.unreachable_passes
        if not tries:
            return interval
        return min(interval, MAX_BACKOFF, 2.0 ** min(tries - 1, 9))

    def _notify_pass(self, status: str) -> None:
        """READY after the first *successful* pass: `systemctl start` returns once Git and
        the fleet have been read. Failed passes before it only send STATUS= lines."""
        if self.ready:
            self.notifier.status(status)
            return
        self.ready = True
        self.notifier.ready(status)

    def _status_line(self) -> str:
        desired = self.pass_state.desired
        running = sorted(self.pass_state.rollouts)
        commit = desired.commit[:12] if desired else "none"
        line = f"commit {commit}; rollouts running: {', '.join(running) or 'none'}"
        if self.pass_state.refused:
            line += f"; refused {self.pass_state.refused}"
        if self.config.ha.shards > 1:
            led = ", ".join(str(s) for s in sorted(self.control.led_shards())) or "none"
            line += f"; leading shards {led} of {self.config.ha.shards}"
        return line

    def _export_rollout_states(self) -> None:
        latest: dict[str, str] = {}
        for row in reversed(self.store.rollouts(limit=10_000)):
            latest[row.function] = row.state
        counts: dict[str, int] = {}
        for value in latest.values():
            counts[value] = counts.get(value, 0) + 1
        self.metrics.set_rollouts(counts)
        commit = self.store.get(LAST_APPLIED_KEY)
        if commit:
            self.metrics.set_last_applied_commit(commit)

    async def _pass(self) -> str:
        """One pass (gitopsd/reconcile/pipeline.py with the daemon's ports); returns "noop",
        "changed", "ok", "invalid" or "standby" for the metrics."""
        state = self.pass_state
        await self._reap_rollouts()
        if not self.control.leads_any():
            return "standby"  # watches and webhooks stay on: they wake the leader
        self._head = await asyncio.to_thread(current_commit, self.source, self.state_dir)
        assert self.client is not None and self.engine is not None
        p = Pass(
            rec=self.reconciler,
            source=self.source,
            client=self.client,
            engine=self.engine,
            ports=self._ports,
            notes=self.notifications,
            continuous=True,
            acts_for=self.control.leads,  # the one place the leader check applies
            last_good=state.desired,
        )
        await run_steps(p, STEPS)
        if p.desired is None:
            return "invalid"
        if p.unchanged:
            return "noop"
        assert p.live is not None and p.changes is not None
        state.generations = p.live.generations() if not state.rollouts else ()
        state.controls_stamp = self._stamp
        return "changed" if p.changes.changes else "ok"

    @property
    def _ports(self) -> PassPorts:
        """What the daemon's pass does differently from `gitopsd sync`: the last good desired
        state stays in force, rollouts run as tasks, notes are queued."""
        return PassPorts(
            publish=self._publish,
            load=self._load_head,
            read_live=self._read_live,
            resume=self._resume_orphans,
            start=self._start_rollout,
            window_closed=lambda fn: self.window_wakeups.why_not(fn.name, fn.spec.deploy_windows),
            running=lambda: self.pass_state.rollouts,
            unchanged=self._unchanged,
        )

    async def _publish(self, outcome: CommitOutcome) -> None:
        self._note(outcome)

    async def _load_head(self, _p: Pass) -> DesiredState | None:
        """The desired state of the head, loaded again only when the head moved; a refused
        head is remembered (not loaded again until it moves) and raised once for its note."""
        state = self.pass_state
        commit = self._head
        if not (
            state.desired is None or (commit != state.desired.commit and commit != state.bad_commit)
        ):
            return state.desired
        try:
            _snapshot, desired = await asyncio.to_thread(self.reconciler.load, self.source, False)
        except SignatureRefused as exc:
            state.bad_commit = exc.commit or commit
            self.log.error(
                "signature refused; previous desired state stays in force",
                commit=state.bad_commit[:12],
                reason=exc.reason,
            )
            raise
        except InvalidManifests as exc:
            state.bad_commit = exc.commit or commit
            self.log.error(
                "invalid manifests; previous desired state stays in force",
                commit=state.bad_commit[:12],
                problems=len(exc.problems),
            )
            raise
        try:
            check = self.reconciler.check_fast_forward
            await asyncio.to_thread(check, self.source, desired.commit)
        except NonFastForward as exc:
            if await self._head_moved(exc.commit):
                # Another leader (shards) read and accepted a newer head than the one read
                # here: not a rewritten branch. Nothing is applied from this read; the next
                # pass starts at once from the newer head.
                self.log.info("head moved on while loading; reading it again", read=commit[:12])
                self.store.put(REFUSED_HEAD_KEY, "")  # the check's refusal of a stale read
                self.request("head moved")
                return None
            state.bad_commit = exc.commit
            state.refused = f"{exc.commit[:12]}: {exc.reason}"
            self.log.error(
                "head refused: not a fast-forward; previous desired state stays in force",
                commit=exc.commit[:12],
                last_applied=exc.last_applied[:12],
                reason=exc.reason,
            )
            raise
        state.refused = ""
        state.desired = desired
        state.generations = ()
        running = {n: t for n, t in state.targets.items() if not state.rollouts[n].done()}
        assert self.engine is not None
        for name in policy.superseded(running, desired):
            self.engine.superseded[name] = f"superseded by commit {desired.commit[:12]}"
        self.log.info(
            "desired state loaded",
            commit=desired.commit[:12],
            functions=len(desired.functions),
            nodes=len(desired.nodes),
        )
        return desired

    async def _head_moved(self, loaded: str) -> bool:
        """Does the source's head, read again now, differ from the commit just loaded?"""
        try:
            head = await asyncio.to_thread(current_commit, self.source, self.state_dir)
        except SourceError:
            return False
        return head != loaded

    async def _read_live(self, p: Pass) -> LiveState:
        """The fleet through the held inventory requests (fleet/watch.py); dial-out agents
        Git names are waited for just after a start."""
        assert self.client is not None and p.desired is not None
        addresses = {n: node.address for n, node in p.desired.nodes.items()}
        self.client.addresses = addresses
        if self.tunnels is not None:
            await self._await_dial_out([n for n, a in addresses.items() if is_dial_out(a)])
        live = await self.client.live_state(addresses)
        state = self.pass_state
        state.unreachable_passes = state.unreachable_passes + 1 if live.errors else 0
        # An operator's command (resume, approve...) is written by another process: a change
        # of the controls makes the pass act even when Git and the fleet did not move.
        self._stamp = self.store.controls_stamp()
        return live

    def _unchanged(self, p: Pass) -> bool:
        """Same head, inventory generations and operator controls as the last pass, and no
        rollout running: the pass has nothing to do."""
        state = self.pass_state
        assert p.live is not None and p.desired is not None
        return (
            p.live.generations() == state.generations
            and not p.live.errors
            and self._stamp == state.controls_stamp
            and not state.rollouts
            and self._head == p.desired.commit
        )

    async def _start_rollout(
        self, p: Pass, fn: DesiredFunction, change: Change
    ) -> FunctionResult | None:
        """A rollout task (a long canary holds up no other function), and its "pending"
        note; its result is reported when it ends (_reap_rollouts)."""
        assert self.engine is not None and p.desired is not None and p.live is not None
        deps = fn.spec.depends_on
        latest = {d: next(iter(self.store.rollouts(d, limit=1)), None) for d in deps}
        states = policy.dependency_states(deps, self.pass_state.rollouts, latest)
        task = asyncio.create_task(
            self.reconciler.rollout_function(self.engine, fn, p.desired, p.live, change, states)
        )
        self._track(fn.name, task, (fn.spec.version, fn.module.sha256))
        pending = started_outcome(p.desired.commit, [fn])
        assert pending is not None
        self._note(pending)
        return None

    async def _resume_orphans(self, p: Pass) -> list[FunctionResult]:
        """Rollouts a previous process left unfinished (killed mid-way) continue here, as
        tasks; they report when they end."""
        assert self.engine is not None
        for row in self.store.active_rollouts():
            if row.function in self.pass_state.rollouts or row.state in WAITS_FOR_OPERATOR:
                continue
            if not p.acts_for(row.function):
                continue

            async def resume(
                engine: Engine = self.engine, rollout_id: str = row.id
            ) -> FunctionResult:
                return summarize_rollout(self.store, await engine.run(rollout_id))

            self._track(
                row.function,
                asyncio.create_task(resume()),
                (row.version, str(row.context.get("sha256"))),
            )
            self.log.info("resuming rollout left by a previous run", rollout=row.id)
        return []

    def _track(
        self, function: str, task: asyncio.Task[FunctionResult], target: tuple[str, str]
    ) -> None:
        """Remember a running rollout; its end wakes the loop to report it."""
        self.pass_state.rollouts[function] = task
        self.pass_state.targets[function] = target

        def done(t: asyncio.Task[FunctionResult]) -> None:
            if (
                not t.cancelled()
                and t.exception() is None
                and t.result().state == RolloutState.DRAFT
            ):
                observe_results(self.notifications, [t.result()])
                return  # waiting for approval: nothing to report until `gitopsd approve`
            self.request("rollout finished")

        task.add_done_callback(done)

    async def _reap_rollouts(self) -> None:
        for name, task in list(self.pass_state.rollouts.items()):
            if not task.done():
                continue
            del self.pass_state.rollouts[name]
            self.pass_state.targets.pop(name, None)
            self.pass_state.generations = ()
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                self.log.error("rollout task failed", function=name, error=str(exc))
                continue
            result = task.result()
            row = self.store.rollout(result.rollout_id) if result.rollout_id else None
            if row is not None and row.commit:
                report = finished_report(row.commit, [result])
                await report_outcome(self.store, self._publish, report)

    def _note(self, outcome: CommitOutcome) -> None:
        """Queue the outcome's note and forge statuses: never blocks the loop."""
        self.publisher.submit(outcome)

    def _configure_publisher(self) -> None:
        status = self.config.status
        self.publisher.configure(
            self.source, self.forges, git_notes=status.git_notes, push=status.push_notes
        )
