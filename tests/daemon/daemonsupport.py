"""Start the real daemon (`gitopsd run`) as a subprocess against a bare repo and a fleet."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fleetfixture import Fleet
from tests.gitrepo import GitRemote

SECRET = "webhook-secret-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> float:
    """Poll `predicate` until true; returns the seconds it took (fails after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class DaemonProcess:
    """One `gitopsd run --config ...` process and the files it uses."""

    def __init__(
        self,
        root: Path,
        remote: GitRemote,
        fleet: Fleet,
        *,
        interval: str = "PT1H",
        watch: bool = True,
        allow_empty: bool = False,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        (root / "secret").write_text(SECRET + "\n")
        self.config = root / "gitopsd.toml"
        self.config.write_text(
            f'[source]\nurl = "{remote.bare}"\nbranch = "main"\ninterval = "{interval}"\n'
            f"watch = {str(watch).lower()}\nallow_empty = {str(allow_empty).lower()}\n"
            f'[fleet]\ntoken_file = "{fleet.token_file}"\n'
            f'[state]\ndir = "{self.state}"\n'
            f'[webhook]\nlisten = "127.0.0.1:{self.webhook_port}"\nsecret_file = "secret"\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
        )
        self.proc: subprocess.Popen[str] | None = None
        self.log = root / "daemon.log"

    def start(self, env: dict[str, str] | None = None, open_files: int | None = None) -> None:
        """Start `gitopsd run`; `open_files` lowers its RLIMIT_NOFILE (as a unit's
        LimitNOFILE would)."""

        def limit() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gitopsd.cli.main", "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=limit if open_files is not None else None,
        )
        wait_for(self.healthy, 30, "the daemon's metrics endpoint")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            return str(r.read().decode())

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def hook(
        self,
        forge: str,
        payload: dict[str, Any] | bytes,
        delivery: str,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
    ) -> int:
        """POST a webhook delivery signed as `forge` would sign it; returns the status."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        h = {"Content-Type": "application/json"}
        if forge == "github":
            h |= {
                "X-Hub-Signature-256": f"sha256={digest}",
                "X-GitHub-Delivery": delivery,
                "X-GitHub-Event": "push",
            }
        elif forge == "gitea":
            h |= {"X-Gitea-Signature": digest, "X-Gitea-Delivery": delivery}
        else:
            h |= {"X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": delivery}
        h |= headers or {}
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.webhook_port}/hooks/{forge}",
            data=body,
            headers=h,
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
