"""A remote that takes its time to accept the notes push must not freeze the daemon: notes
are published by a worker off the event loop, so /metrics, webhooks and the watchdog keep
answering while `git push` waits on the remote's `pre-receive` hook."""

from __future__ import annotations

import json
import os
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
