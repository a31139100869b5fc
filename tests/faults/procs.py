"""Real `gitopsd` CLI processes, started cheaply enough to SIGKILL hundreds of them.

A process that imports gitopsd from scratch spends ~0.5 s in imports, which would dominate
a crash sweep. A zygote (`python -m tests.faults.procs`, a fresh single-threaded interpreter
that has imported gitopsd) forks one child per request; the child runs the CLI entry point
exactly as `gitopsd ARGS...` would, stdout and stderr to a log file, and writes its exit
code to `<log>.rc` as its very last act. The test SIGKILLs a child by its pid; the zygote
ignores SIGCHLD, so the kernel reaps its children and a dead pid disappears at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PRELOAD = (
    "gitopsd.cli.main",
    "gitopsd.cli.commands",
    "gitopsd.reconcile",
    "gitopsd.rollout.engine",
    "gitopsd.manifest.loader",
    "gitopsd.daemon.service",
    "pygit2",
    "wasmtime",
    "aiohttp",
)


def _child(args: list[str], log: str) -> None:
    """In the forked child: become `gitopsd ARGS`, never return."""
    code = 70
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # git subprocesses must be waitable
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        from gitopsd.cli.main import cli

        sys.argv = ["gitopsd", *args]
        try:
            cli.main(args=args, prog_name="gitopsd")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 71
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            Path(log + ".rc").write_text(str(code))
        finally:
            os._exit(code)


def _serve() -> None:
    for name in _PRELOAD:
        __import__(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request["args"], request["log"])
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()


class Zygote:
    """The forking server; one per test session and xdist worker is plenty."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.procs"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )

    def spawn(self, args: list[str], log: Path) -> CliProcess:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"args": args, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        return CliProcess(int(answer["pid"]), log)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


class CliProcess:
    """One forked `gitopsd ARGS` process (not our child: poll it by pid and rc file)."""

    def __init__(self, pid: int, log: Path) -> None:
        self.pid = pid
        self.log = log
        self.rc_file = Path(str(log) + ".rc")
        self.killed = False

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def poll(self) -> int | None:
        """The exit code once the process wrote it and is gone; None while it runs."""
        if self.rc_file.exists() and not self.alive():
            return int(self.rc_file.read_text() or "70")
        if not self.alive() and not self.rc_file.exists():
            return -9  # killed
        return None

    def wait(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.poll()
            if code is not None:
                return code
            time.sleep(0.005)
        raise TimeoutError(f"gitopsd process {self.pid} still running after {timeout}s")

    def kill(self) -> None:
        self.killed = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.002)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def sync_args(source: Path, state: Path, token_file: Path) -> list[str]:
    return [
        "sync",
        str(source),
        "--once",
        "--state-dir",
        str(state),
        "--agent-token-file",
        str(token_file),
    ]


if __name__ == "__main__":
    _serve()
