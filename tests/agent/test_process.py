"""`python -m gitopsd.agent` as a real process: serves, then stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path


def test_sigterm_stops_the_agent_cleanly(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("process-token\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gitopsd.agent",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "edge-proc",
            "--region",
            "r1",
            "--label",
            "tier=prod",
            "--data-dir",
            str(tmp_path / "data"),
            "--token-file",
            str(token_file),
            "--memory-mib",
            "256",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        url = None
        # Logs are JSON lines on stderr (not a TTY); the listening line names the port.
        for line in process.stderr:
            event = json.loads(line)
            if event.get("event") == "agent.listening":
                url = event["url"]
                break
        assert url is not None, "the agent never reported listening"
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as r:
            assert json.load(r) == {"status": "ok", "node": "edge-proc"}
        request = urllib.request.Request(
            f"{url}/inventory", headers={"Authorization": "Bearer process-token"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            inventory = json.load(r)
        assert (inventory["labels"], inventory["memoryBudgetMiB"]) == ({"tier": "prod"}, 256)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "agent.stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gitopsd.agent",
            "--listen",
            "nowhere",
            "--name",
            "n",
            "--region",
            "r",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr
