"""A remote that takes its time to accept the notes push must not freeze the daemon: notes
are published by a worker off the event loop, so /metrics, webhooks and the watchdog keep
answering while `git push` waits on the remote's `pre-receive` hook."""

from __future__ import annotations

import json
import os
import socket
import stat
import urllib.request
from pathlib import Path

from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

# Holds every push of the notes ref while the gate file exists (branch pushes pass), so the
# test decides when the remote answers, with no sleep standing in for "slow".
GATE_HOOK = """#!/bin/sh
while read old new ref; do
  case "$ref" in
    refs/notes/*)
      touch "{started}"
      while [ -e "{gate}" ]; do sleep 0.05; done ;;
  esac
done
exit 0
"""


def gate_notes_pushes(remote: GitRemote, root: Path) -> tuple[Path, Path]:
    gate, started = root / "gate", root / "push-started"
    gate.touch()
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(GATE_HOOK.format(gate=gate, started=started))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    return gate, started


def remote_note(remote: GitRemote, sha: str) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(remote.note(sha))
    except RuntimeError:
        return None
    return data


def test_a_slow_notes_push_leaves_the_daemon_answering(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    remote.write("nodes.yaml", fleet.manifests())
    sha = push(remote, "hello", "1.0.0", "{type: blue-green}")
    gate, started = gate_notes_pushes(remote, tmp_path)
    daemon = DaemonProcess(tmp_path / "daemon", remote, fleet, watch=False)
    # A URL source is mirrored, and its notes are pushed back to the remote.
    config = daemon.config.read_text().replace(
        f'url = "{remote.bare}"', f'url = "file://{remote.bare}"'
    )
    daemon.config.write_text(config)
    try:
        daemon.start()
        wait_for(lambda: started.exists(), 60, "the notes push reaching the remote's hook")
        # The push is held by the remote right now: the daemon still answers.
        with urllib.request.urlopen(
            f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5
        ) as answer:
            assert answer.status == 200
            assert "gitopsd_reconcile_total" in answer.read().decode()
        assert daemon.hook("github", {"ref": "refs/heads/main"}, "slow-1") == 202
        assert remote_note(remote, sha) is None  # not pushed yet: the hook still holds it
        os.unlink(gate)
        wait_for(lambda: (remote_note(remote, sha) or {}).get("status") == "success", 60, "note")
    finally:
        gate.unlink(missing_ok=True)
        daemon.close()


def test_stalled_webhook_clients_leave_the_daemon_reconciling(
    tmp_path: Path, remote: GitRemote, fleet: Fleet
) -> None:
    """Red-team finding: with 256 descriptors, 300 clients feeding the webhook listener one
    header line at a time took every descriptor; the daemon could not open its repository,
    /metrics went dark. Now each listener holds at most an eighth of the descriptors."""
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "hello", "1.0.0", "{type: blue-green}")
    daemon = DaemonProcess(tmp_path / "daemon", remote, fleet, watch=False)
    stalled: list[socket.socket] = []
    try:
        daemon.start(open_files=256)
        wait_for(lambda: set(fleet.serving("hello").values()) == {"1.0.0"}, 60, "first sync")
        for _ in range(300):
            client = socket.create_connection(("127.0.0.1", daemon.webhook_port), timeout=5)
            client.sendall(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            stalled.append(client)
        sha = push(remote, "hello", "2.0.0", "{type: blue-green}")
        assert daemon.hook("github", {"ref": "refs/heads/main"}, "stalled-1") == 202
        wait_for(lambda: set(fleet.serving("hello").values()) == {"2.0.0"}, 60, "the push applied")
        assert "gitopsd_reconcile_total" in daemon.metrics()
        assert "Too many open files" not in daemon.logs()
        assert sha
    finally:
        for client in stalled:
            client.close()
        daemon.close()
