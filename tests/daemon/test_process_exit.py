"""`gitopsd run` ends its process once the daemon has stopped (gitopsd/cli/daemon_process.py),
whatever else is left in it: a non-daemon thread that never ends or an atexit hook that never
returns (as a library can leave behind) would keep the interpreter's own shutdown waiting
forever, and systemd would have to SIGKILL the daemon at the end of its stop timeout.

The lingering thread or hook is started in the real `gitopsd run` process by a
sitecustomize module put on its PYTHONPATH; nothing is timed: without the fix the process
never exits and `wait` times out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.daemonsupport import DaemonProcess, wait_for
from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote
from tests.rollout.livesupport import push

# Runs at the start of the daemon's interpreter only: it takes the variable out of the
# environment, so no process the daemon starts inherits the lingering part.
SITECUSTOMIZE = """
import atexit, os, threading

_linger = os.environ.pop("GITOPSD_TEST_LINGER", "")
if _linger == "thread":
    threading.Thread(target=threading.Event().wait, name="lingering", daemon=False).start()
elif _linger == "atexit":
    atexit.register(threading.Event().wait)
"""


@pytest.fixture
def daemon(tmp_path: Path, remote: GitRemote, fleet: Fleet) -> Iterator[DaemonProcess]:
    remote.write("nodes.yaml", fleet.manifests())
    push(remote, "hello", "1.0.0", "{type: blue-green}")
    d = DaemonProcess(tmp_path / "daemon", remote, fleet)
    yield d
    d.close()


@pytest.mark.parametrize("linger", ["thread", "atexit"])
def test_sigterm_ends_the_process_although_something_lingers_in_it(
    tmp_path: Path, daemon: DaemonProcess, fleet: Fleet, linger: str
) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    daemon.start(env={"PYTHONPATH": str(shim), "GITOPSD_TEST_LINGER": linger})
    wait_for(lambda: set(fleet.serving("hello").values()) == {"1.0.0"}, what="first sync")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0  # without the fix: never (TimeoutExpired)
    events = [json.loads(line)["event"] for line in daemon.logs().splitlines()]
    # It ended after the clean stop (drained, logged and flushed), not instead of it ...
    assert events[-1] == "stopped"
    assert any(e.startswith("stopping") for e in events)
    # ... and after closing its store: the last connection to close checkpoints and removes
    # the WAL file, which a process ended with the store open leaves behind.
    assert (daemon.state / "gitopsd.db").exists()
    assert not (daemon.state / "gitopsd.db-wal").exists()


def test_a_daemon_that_cannot_start_exits_2_although_a_thread_lingers(tmp_path: Path) -> None:
    """The error path ends the process the same way, with the CLI's `error:` line."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    plain = tmp_path / "manifests"
    plain.mkdir()
    config = tmp_path / "gitopsd.toml"
    config.write_text(f'[source]\nurl = "{plain}"\n[state]\ndir = "{tmp_path / "state"}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gitopsd.cli.main", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=20,  # without the fix: never ends (TimeoutExpired)
        check=False,
        env={**os.environ, "PYTHONPATH": str(shim), "GITOPSD_TEST_LINGER": "thread"},
    )
    assert done.returncode == 2, done.stderr
    assert "error: [source] url" in done.stderr and "is a plain directory" in done.stderr
