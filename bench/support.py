"""Real things the figures run against: a Git remote pushed with the git CLI, WASM handlers,
manifests, agent fleets in a subprocess (`gitopsd agent --count N`), the daemon process."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import wasmtime

from bench.pgserver import PgServer

TOKEN = "bench-agent-token-0123456789abcdef"
WEBHOOK_SECRET = "bench-webhook-secret"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench Operator",
    "GIT_AUTHOR_EMAIL": "bench@example.test",
    "GIT_COMMITTER_NAME": "Bench Operator",
    "GIT_COMMITTER_EMAIL": "bench@example.test",
    "GIT_CONFIG_NOSYSTEM": "1",
}
GITOPSD = [sys.executable, "-m", "gitopsd.cli.main"]


# git --------------------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


class GitRemote:
    """A bare repository (what gitopsd reads) and the operator's clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        root.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "-q", "-b", "main", str(self.bare), cwd=root)
        git("init", "-q", "-b", "main", str(self.work), cwd=root)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def write(self, path: str, data: str | bytes) -> None:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)

    def commit(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self) -> None:
        """`git push`, returning when the git CLI does: the moment P1 and P2 start from."""
        git("push", "-q", "origin", "main", cwd=self.work)


# WASM ------------------------------------------------------------------------------------------


def handler_wat(reply: str, trap: bool = False) -> str:
    """A WAGI handler: `_start` writes `reply` (or traps), `health_check` writes OK."""
    data = reply.encode()
    esc = "".join(f"\\{b:02x}" for b in data)
    body = (
        "unreachable"
        if trap
        else f"(call $write (i32.const 1) (i32.const 1024) (i32.const {len(data)}))"
    )
    return f"""(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{esc}")
  (data (i32.const 960) "OK")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") {body})
  (func (export "health_check") (call $write (i32.const 1) (i32.const 960) (i32.const 2))))
"""


def handler_wasm(reply: str, trap: bool = False) -> bytes:
    return bytes(wasmtime.wat2wasm(handler_wat(reply, trap)))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# manifests -------------------------------------------------------------------------------------


def node_manifest(name: str, port: int, region: str) -> str:
    return (
        "apiVersion: gitopsd/v1\nkind: EdgeNode\n"
        f"metadata: {{name: {name}}}\n"
        f'spec: {{address: "http://127.0.0.1:{port}", region: {region}}}\n'
    )


def nodes_manifest(names: list[str], base_port: int, regions: list[str]) -> str:
    return "---\n".join(
        node_manifest(n, base_port + i, regions[i % len(regions)]) for i, n in enumerate(names)
    )


def function_manifest(
    name: str,
    version: str,
    module: str,
    strategy: str = "{type: blue-green, keepBlueEnvironment: false}",
    regions: list[str] | None = None,
    extra: str = "",
) -> str:
    targets = f"  targets: {{regions: [{', '.join(regions)}]}}\n" if regions else ""
    return (
        "apiVersion: gitopsd/v1\nkind: EdgeFunction\n"
        f"metadata: {{name: {name}}}\nspec:\n"
        f'  version: "{version}"\n  module: {module}\n'
        f"  strategy: {strategy}\n{targets}{extra}"
    )


# ports and waiting ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections take those)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


def free_port_range(count: int) -> int:
    """A base port P with P..P+count-1 all free right now (racy, like any free-port pick).

    Picked below the ephemeral range: a fleet's ports stay fixed in Git while agents are
    stopped and started again, and an outgoing connection (of this bench, the daemon or a
    test running beside it) could otherwise take one of them meanwhile.
    """
    rng = random.Random()
    high = min(_ephemeral_low(), 60000) - count
    for _ in range(200):
        base = rng.randrange(10000, high)
        socks: list[socket.socket] = []
        try:
            for i in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CpuWindow:
    """CPU used by some processes (and by the whole machine) between `start` and `stop`:
    says whether a figure was bounded by this machine's cores rather than by gitopsd."""

    def __init__(self, pids: list[int], include_self: bool = False) -> None:
        self.pids = pids
        self.include_self = include_self

    def _ours(self) -> float:
        total = sum(cpu_seconds(pid) for pid in self.pids)
        return total + (time.process_time() if self.include_self else 0.0)

    def start(self) -> None:
        self.t0, self.c0, self.m0 = time.perf_counter(), self._ours(), machine_jiffies()

    def stop(self) -> tuple[float, float]:
        """(cores used by the processes, share of all cores busy machine-wide) meanwhile."""
        wall = max(time.perf_counter() - self.t0, 1e-9)
        ours = (self._ours() - self.c0) / wall
        m1 = machine_jiffies()
        busy, total = m1[0] - self.m0[0], m1[1] - self.m0[1]
        return ours, (busy / total if total else 0.0)


# processes -------------------------------------------------------------------------------------


class AgentFleet:
    """N agent endpoints in one `gitopsd agent --count N --base-port P` process."""

    def __init__(
        self,
        root: Path,
        count: int,
        *,
        name: str = "edge",
        region: str = "r0",
        cpus: str | None = None,
        memory_mib: int | None = None,
    ) -> None:
        """`memory_mib`: each endpoint's `--memory-mib` budget (default: the agent's)."""
        self.root = root
        self.count = count
        self.name = name
        self.region = region
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.token_file = root / "agent-token"
        self.base_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"{name}-agents.log"
        root.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(TOKEN + "\n")

    @property
    def names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.count)]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base_port + i}"

    def data_dir(self, i: int) -> Path:
        return self.root / "data" / f"{self.name}-{i}"

    def start(self, timeout: float = 300.0) -> None:
        if not self.base_port:
            self.base_port = free_port_range(self.count)
        cmd = [
            *GITOPSD,
            "agent",
            "--listen",
            f"127.0.0.1:{self.base_port}",
            "--name",
            self.name,
            "--region",
            self.region,
            "--data-dir",
            str(self.root / "data"),
            "--token-file",
            str(self.token_file),
            "--count",
            str(self.count),
            "--base-port",
            str(self.base_port),
        ]
        if self.memory_mib is not None:
            cmd += ["--memory-mib", str(self.memory_mib)]
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"), env=quiet_env()
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"agents exited: {tail(self.log)}")
            return http_ok(f"{self.url(self.count - 1)}/healthz")

        wait_for(up, timeout, f"{self.count} agent endpoints", step=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> AgentFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DaemonProcess:
    """`gitopsd run --config ...` against a bare repository, with webhook and metrics."""

    def __init__(
        self,
        root: Path,
        remote: GitRemote,
        token_file: Path,
        *,
        watch: bool = True,
        state: str = "",
    ) -> None:
        """`state`: more lines for the config after `[state] dir` (`pg_state`'s)."""
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.webhook_port = free_port()
        self.metrics_port = free_port()
        (root / "secret").write_text(WEBHOOK_SECRET + "\n")
        self.config = root / "gitopsd.toml"
        self.config.write_text(
            f'[source]\nurl = "{remote.bare}"\nbranch = "main"\ninterval = "PT1H"\n'
            f"watch = {str(watch).lower()}\n"
            f'[fleet]\ntoken_file = "{token_file}"\n'
            # `agent --count N` gives every endpoint one token: shared, not per-node.
            'token_mode = "shared"\n'
            f'[state]\ndir = "{root / "state"}"\n{state}'
            f'[webhook]\nlisten = "127.0.0.1:{self.webhook_port}"\nsecret_file = "secret"\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
        )
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.deliveries = 0

    def start(self, timeout: float = 120.0) -> None:
        self.proc = subprocess.Popen(
            [*GITOPSD, "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            env=quiet_env(),
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited: {tail(self.log)}")
            return http_ok(f"http://127.0.0.1:{self.metrics_port}/healthz")

        wait_for(up, timeout, "the daemon's metrics endpoint", step=0.05)

    def metric(self, name: str) -> float:
        """Sum of every sample of metric `name` on /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total

    def hook(self) -> int:
        """A signed GitHub push delivery for refs/heads/main; returns the HTTP status."""
        self.deliveries += 1
        delivery = f"bench-{os.getpid()}-{self.deliveries}-{time.time_ns()}"
        # The daemon's replay guard keys on the signed body too (a forge's push payload
        # differs per push: its `after` commit, its id): every delivery's body is its own.
        body = json.dumps({"ref": "refs/heads/main", "delivery": delivery}).encode()
        digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.webhook_port}/hooks/github",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Hub-Signature-256": f"sha256={digest}",
                "X-GitHub-Delivery": delivery,
                "X-GitHub-Event": "push",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pg_state(pg: PgServer, root: Path, lease: str | None = None, db: str | None = None) -> str:
    """Config lines selecting database `db` of `pg` (default: a new one) as `[state] url`,
    its password in a file under `root`, and with `lease` the `[ha]` section: to follow
    `[state] dir`."""
    root.mkdir(parents=True, exist_ok=True)
    password = root / "pg-password"
    password.write_text(pg.password + "\n")
    name = db or pg.create_database("bench")
    lines = f'url = "{pg.url(name)}"\npassword_file = "{password}"\n'
    return lines + (f'[ha]\nlease = "{lease}"\n' if lease else "")


def quiet_env() -> dict[str, str]:
    """The environment of child processes (logs go to a file, JSON, at the default level)."""
    return dict(os.environ)


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def cpu_affinity(cpus: set[int]) -> Iterator[None]:
    """Pin this process (and children started meanwhile) to `cpus`."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
