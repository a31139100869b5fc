"""Run tests/ha/leader_proc.py processes and follow their JSON events."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    """One stand-in controller and every event it printed so far."""

    holder: str
    popen: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _queue: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if line.startswith("EV "):  # anything else is a log line
                self._queue.put(json.loads(line[3:]))

    def drain(self) -> None:
        while True:
            try:
                self.events.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def led(self) -> list[int]:
        self.drain()
        leads = [e["shards"] for e in self.events if e["event"] == "lead"]
        return list(leads[-1]) if leads else []

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.popen.pid, sig)


def start(url: str, holder: str, shards: int, functions: list[str]) -> Proc:
    popen = subprocess.Popen(
        [sys.executable, "-m", "tests.ha.leader_proc", url, holder, str(shards), *functions],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    proc = Proc(holder, popen)
    threading.Thread(target=proc._pump, daemon=True).start()
    return proc


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Poll until `condition()`; the seconds it took. Fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def stop_all(procs: list[Proc]) -> None:
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGCONT)
            proc.popen.kill()
        proc.popen.wait(timeout=30)
