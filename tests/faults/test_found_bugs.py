"""Bugs the reliability battery found in gitopsd, one regression test each, asserting what
the design requires. Each docstring says what was wrong (file and function at the time)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp
import pytest
import wasmtime

from gitopsd.errors import InvalidManifests
from gitopsd.manifest.loader import load_snapshot
from gitopsd.rollout.engine import RolloutEvent
from gitopsd.source.snapshot import Snapshot, SnapshotFile
from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.faults.agentproc import AgentProcess
from tests.faults.faultproxy import Rule
from tests.faults.test_agent_faults import (
    BLUE_GREEN,
    VERSION,
    Scenario,
    huge_body_figures,
    run_scenario,
)
from tests.faults.test_git_faults import corrupt_packs, running, serves
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote, git
from tests.rollout.livesupport import HookClock, Syncer, push


def test_an_agent_down_does_not_turn_a_rollout_of_the_live_version_into_a_removal(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """executor.py `_old()` is None when a node's old version *is* the new one, and
    `rollback()` then deletes the function: one unreachable agent makes the daemon (or sync)
    roll out the version every node already runs, the deploy fails there, and the "rollback"
    removes the function from every healthy node."""
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "2.0.0", BLUE_GREEN)
    sync = Syncer(tmp_path / "state", remote, HookClock())
    assert sync().ok
    fleet.stop("edge-c")
    report = sync()  # edge-c unreachable: the diff asks for an update of fn
    serving = fleet.serving("fn")
    assert serving["edge-a"] == serving["edge-b"] == "2.0.0", serving
    # Since then: nothing is rolled out while only unreachable nodes differ
    assert [r.state for r in report.results] == ["WAITING_FOR_NODES"]
    assert not report.ok and report.outcome().status == "pending"


def test_invalid_json_from_the_health_endpoint_fails_the_node_not_the_controller(
    tmp_path: Path,
) -> None:
    """fleet/client.py `health()` validates the body with WireHealth.model_validate and lets
    pydantic's ValidationError out (not an AgentError); executor `_per_node` re-raises it,
    so the rollout stops mid-way with a dangling journal row and `sync` dies."""
    scenario = Scenario("health-invalid-json", [Rule("badjson", "POST", VERSION + "/health")])
    try:
        out = run_scenario(tmp_path, scenario, BLUE_GREEN)
    except Exception as exc:  # the bug
        pytest.fail(f"the controller crashed: {type(exc).__name__}: {str(exc)[:200]}")
    assert out.state in ("ROLLED_BACK", "FAILED") and out.converged


def test_a_first_deploy_whose_reply_was_lost_is_not_reported_rolled_back(tmp_path: Path) -> None:
    """executor.py `remember()` records a node whose Deploy ended in "unreachable" as never
    having received the version, and `rollback()` skips it. But the agent may have loaded it
    before the connection died: the first version of a function serves 100 % at once, so
    the node serves the version while the rollout says ROLLED_BACK (and the daemon, which
    will not retry a rolled-back version at the same commit, leaves it so)."""
    scenario = Scenario(
        "first-deploy-dies-after-load", [Rule("die-after", "PUT", VERSION)], first_deploy=True
    )
    out = run_scenario(tmp_path, scenario, BLUE_GREEN)
    assert out.mismatched == [], out.mismatched


def test_a_100mb_agent_answer_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    """fleet/client.py `_body()` reads any answer whole (`resp.json()` / `resp.text()`), with
    no size cap: an agent answering its inventory with 100 MB grows the controller by ~300 MB
    (bytes, str, parsed JSON) and is then accepted as a valid inventory."""
    figures = huge_body_figures(tmp_path)
    assert figures["rss_growth_mib"] < 64, figures


def test_sync_does_not_run_a_resumed_rollback_again_in_the_same_pass(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """reconcile.py `apply()`: after resuming an interrupted rollout it diffs again and rolls
    out every change, including the function whose resumed rollout just rolled back. A crash
    thus makes `gitopsd sync` expose the bad version to users a second time (the daemon
    avoided this; sync did not; both now run reconcile/pipeline.py). The crash sweep counts these
    (`rerolled_after_resume`)."""

    class Crash(BaseException):
        pass

    def crash_at_health(event: RolloutEvent) -> None:
        if event.outcome is None and event.step.kind == "health":
            raise Crash

    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", BLUE_GREEN)
    assert Syncer(tmp_path / "state", remote, HookClock())().ok
    push(remote, "fn", "2.0.0", BLUE_GREEN, health="BAD")
    with pytest.raises(Crash):
        Syncer(tmp_path / "state", remote, HookClock(), on_event=crash_at_health)()
    resumed = Syncer(tmp_path / "state", remote, HookClock())
    resumed()
    rollouts = [r for r in resumed.store.rollouts("fn") if r.version == "2.0.0"]
    assert [r.state for r in rollouts] == ["ROLLED_BACK"]


def test_sync_retires_blue_versions_whose_retention_ended(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """Blue-green's Retire(after=blueRetentionPeriod) only schedules the unload
    (store.schedule_retirement); only daemon/service.py `_retire_due()` ever carries it out.
    `gitopsd sync` never does, so every blue stays loaded for good and, once the node's
    memory budget is spent (16 releases of a 64 MiB function on the default 1024 MiB), every
    blue-green rollout FAILs its capacity check. The crash sweep hit it after 24 versions."""
    remote.write("nodes.yaml", fleet.manifests())
    strategy = "{type: blue-green, blueRetentionPeriod: PT1S}"
    clock = HookClock()
    sync = Syncer(tmp_path / "state", remote, clock)
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        push(remote, "fn", version, strategy)
        assert sync().ok
        clock.advance(5)  # the retention period of the previous blue is long over
    loaded = {n: sorted(fleet.inventory(n)["functions"]["fn"]["versions"]) for n in fleet.nodes}
    assert all(versions == ["2.0.0", "3.0.0"] for versions in loaded.values()), loaded


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("http://127.0.0.1:9101", "HTTP://127.0.0.1:9101"),
        ("http://edge-1.example:9101", "http://EDGE-1.example:9101"),
        ("http://edge-1.example", "http://edge-1.example:80"),
    ],
)
def test_node_addresses_that_name_the_same_agent_are_duplicates(first: str, second: str) -> None:
    """manifest/loader.py `_nodes()` compares addresses as written: the scheme and host are
    case-insensitive and :80 is http's default port, so two names for one agent pass (the
    loader's own comment: "Two names for one agent would make the diff fight itself")."""
    text = "---\n".join(
        "apiVersion: gitopsd/v1\nkind: EdgeNode\n"
        f'metadata: {{name: {name}}}\nspec: {{address: "{address}", region: r}}\n'
        for name, address in (("a", first), ("b", second))
    )
    snap = Snapshot("0" * 40, "", {"nodes.yaml": SnapshotFile("nodes.yaml", text.encode())})
    with pytest.raises(InvalidManifests, match="already the address"):
        load_snapshot(snap)


def test_a_corrupt_pack_in_a_local_source_does_not_kill_the_daemon(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """A local repository is read in place; a damaged pack makes source/git.py `_walk()`
    raise pygit2.GitError, which is neither SourceError nor OSError, so
    daemon/service.py `reconcile_pass()` does not catch it and the daemon exits."""
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", BLUE_GREEN)
    daemon = DaemonProcess(tmp_path / "d", remote, fleet, watch=False)
    try:
        daemon.start()
        wait_for(lambda: serves(fleet, "1.0.0"), what="v1")
        push(remote, "fn", "2.0.0", BLUE_GREEN)
        restore = corrupt_packs(remote.bare)
        assert daemon.hook("github", {"ref": "refs/heads/main"}, "after-corruption") == 202
        time.sleep(2.0)
        alive = daemon.proc is not None and daemon.proc.poll() is None
        assert alive, daemon.logs()[-3000:]
        assert serves(fleet, "1.0.0")
        restore()
        # a second push is a second body (the replay guard refuses the same signed body again)
        repaired = {"ref": "refs/heads/main", "after": "repaired"}
        assert daemon.hook("github", repaired, "after-repair") == 202
        wait_for(lambda: serves(fleet, "2.0.0"), what="recovery")
    finally:
        daemon.close()


async def test_a_deleted_branch_of_a_mirrored_source_is_reported(
    remote: GitRemote, fleet: Fleet, tmp_path: Path
) -> None:
    """source/git.py `resolve_commit()` falls back to `refs/remotes/origin/<branch>`; in a
    mirror those refs are created by libgit2's fetch and never pruned, so once the branch is
    deleted upstream the daemon keeps resolving the stale commit and reports no error."""
    remote.write("nodes.yaml", fleet.manifests())
    async with running(tmp_path / "d", f"file://{remote.bare}", fleet) as live:
        push(remote, "fn", "1.0.0", BLUE_GREEN)
        await live.one_pass()
        git("update-ref", "-d", "refs/heads/main", cwd=remote.bare)
        await live.one_pass()
        assert serves(fleet, "1.0.0")
        assert "not found" in live.last_error, f"status says: {live.last_error!r}"


def test_a_slow_webhook_body_is_cut_off(remote: GitRemote, fleet: Fleet, tmp_path: Path) -> None:
    """daemon/webhook.py reads the body with no time limit (and aiohttp's server has no body
    read timeout): a client trickling one byte at a time holds the connection for ever."""
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "fn", "1.0.0", BLUE_GREEN)
    daemon = DaemonProcess(tmp_path / "d", remote, fleet, watch=False)
    try:
        daemon.start()
        sock = socket.create_connection(("127.0.0.1", daemon.webhook_port), timeout=2)
        sock.sendall(
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-GitHub-Delivery: slow\r\nContent-Length: 1000\r\n\r\n{"
        )
        started, closed = time.monotonic(), False
        while time.monotonic() - started < 15 and not closed:
            try:
                sock.sendall(b" ")
                sock.settimeout(0.5)
                closed = sock.recv(4096) is not None  # an answer, or b"" on close
            except TimeoutError:
                continue
            except OSError:
                closed = True
        sock.close()
        assert closed, "the daemon still waits for the body after 15 s"
    finally:
        daemon.close()


TABLE_BOMB = bytes(
    wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (table 0 funcref)'
        ' (func (export "_start")'
        "  (if (i32.eq (table.grow (ref.null func) (i32.const 20000000)) (i32.const -1))"
        "    (then unreachable))))"
    )
)


async def test_table_grow_is_bounded_by_the_memory_limit(tmp_path: Path) -> None:
    """agent/runtime.py `call()` sets only `store.set_limits(memory_size=...)`: tables are
    unlimited, so one call can allocate 8 bytes per element (20 M elements: 160 MB; 100 M:
    800 MB) whatever `limits.memoryMiB` says, and a few concurrent calls exhaust the node."""
    agent = AgentProcess(tmp_path / "agent")
    try:
        async with aiohttp.ClientSession() as session:
            status, text = await agent.load(session, "tables", TABLE_BOMB, memory_mib=8)
            assert status == 200, text
            before = agent.kib("VmHWM")
            answers = [await agent.invoke(session, "tables") for _ in range(2)]
            growth_mib = (agent.kib("VmHWM") - before) / 1024
        assert growth_mib < 32, f"peak RSS grew {growth_mib:.0f} MiB under an 8 MiB limit"
        assert {status for status, _, _ in answers} == {500}, json.dumps(answers)[:300]
    finally:
        agent.close()
    await asyncio.sleep(0)


async def test_a_node_a_pull_request_points_at_a_listener_never_gets_the_fleets_key(
    fleet: Fleet,
) -> None:
    """fleet/client.py `AgentClient.__aenter__` put `Authorization: Bearer <the one token>` on
    the session, so every address an EdgeNode names (any host, any port) received the token
    that every agent accepted, and `_call` echoed the listener's whole answer in `diff`.
    Now each node is sent only its own token (HMAC of the fleet secret over its name and
    address), which no agent elsewhere accepts, and the answer only as a short excerpt."""
    from gitopsd.fleet.client import AgentClient
    from gitopsd.fleet.tokens import node_token
    from tests.fleet.recorder import Answer, RecordingListener
    from tests.fleetfixture import TOKEN

    with RecordingListener(answer=Answer(500, "\x1b[2J" + "x" * 100_000)) as spy:
        nodes = {**{n: node.url for n, node in fleet.nodes.items()}, "evil": spy.url}
        async with AgentClient(nodes, TOKEN, retries=0) as client:
            live = await client.live_state(nodes)
    got = {s.authorization for s in spy.seen}
    assert got == {f"Bearer {node_token(TOKEN, 'evil', spy.url)}"}, got
    stolen = node_token(TOKEN, "evil", spy.url)
    async with aiohttp.ClientSession() as session:
        for node in fleet.nodes.values():
            headers = {"Authorization": f"Bearer {stolen}"}
            async with session.get(f"{node.url}/inventory", headers=headers) as resp:
                assert resp.status == 401
    assert len(live.errors["evil"]) < 400 and "\x1b" not in live.errors["evil"]
