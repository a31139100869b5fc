"""P12: an agent restarts with 100 loaded versions of 5 MiB modules → all serving again.

One agent process (`gitopsd agent`, one endpoint) loads 100 functions, each a distinct
5 MiB module (bench/big_modules.py: ~64 KiB of code and a data segment), through its HTTP
API. It is stopped (SIGTERM) and started again; the clock runs from starting the process
to its first `/healthz` answer. The agent restores every version from its data dir before
it listens, so at that moment all 100 serve; one call to each then checks it answers with
its own module (not timed). The agent's `agent.restored` log line says how many modules
came from the compiled-module cache (gitopsd/agent/module_cache.py): all 100 here.

Baseline, in turns with it: the same restart after deleting the agent's compiled-module
cache (`<data-dir>/compiled/*.cwasm`), so every module is compiled again (the cache is
written anew by that start, and the next warm run uses it).

Sizes: `--param P12.versions=N`, `P12.reps=N`.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import big_modules
from bench.harness import Context, Row, median
from bench.support import (
    GITOPSD,
    TOKEN,
    free_port,
    quiet_env,
    sha256,
    tail,
)

LIMITS = {"memoryMiB": 8, "timeoutMs": 1000}


def put(base: str, path: str, body: bytes, ctype: str) -> None:
    req = urllib.request.Request(
        base + path,
        data=body,
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"PUT {path}: {exc.code} {exc.read()[:300]!r}") from exc


def deploy(base: str, function: str, wasm: bytes) -> None:
    """Upload a module and load it as the first version of `function`."""
    digest = sha256(wasm)
    put(base, f"/modules/{digest}", wasm, "application/wasm")
    body = json.dumps({"sha256": digest, "limits": LIMITS}).encode()
    put(base, f"/functions/{function}/versions/1", body, "application/json")


def call(conn: http.client.HTTPConnection, function: str) -> bytes:
    conn.request("POST", f"/fn/{function}", body=b"")
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError(f"POST /fn/{function} -> {r.status} {data[:200]!r}")
    return data


class Agent:
    """One `gitopsd agent` process on a fixed port and data dir, started and stopped."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.data = root / "data"
        self.port = free_port()
        self.token_file = root / "agent-token"
        self.token_file.write_text(TOKEN + "\n")
        self.log = root / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> float:
        """Start the process; seconds until `/healthz` answers (polled every 5 ms)."""
        cmd = [
            *GITOPSD,
            "agent",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--name",
            "p12",
            "--region",
            "r0",
            "--data-dir",
            str(self.data),
            "--token-file",
            str(self.token_file),
        ]
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"), env=quiet_env()
        )
        deadline = start + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {tail(self.log)}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.005)
            finally:
                conn.close()
        raise TimeoutError(f"agent did not answer within {timeout:g}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def restored(self) -> dict[str, object]:
        """The last `agent.restored` log event."""
        found: dict[str, object] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"agent.restored"' in line:
                found = json.loads(line)
        return found


def check_serving(agent: Agent, versions: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    try:
        for i in range(versions):
            got = call(conn, f"fn-{i:03d}")
            if got != big_modules.reply(i):
                raise RuntimeError(f"fn-{i:03d} answered {got[:60]!r}")
    finally:
        conn.close()


def run(ctx: Context) -> list[Row]:
    versions = ctx.size("versions", 5 if ctx.quick else 100)
    reps = ctx.reps(3, 1)
    agent = Agent(ctx.work / "agent")
    warm: list[float] = []
    cold: list[float] = []
    hits: list[object] = []
    restore_warm: list[float] = []
    restore_cold: list[float] = []
    try:
        agent.start()
        t0 = time.monotonic()
        for i in range(versions):
            deploy(agent.url, f"fn-{i:03d}", big_modules.module(i))
        ctx.log(f"P12 {versions} versions of 5 MiB loaded in {time.monotonic() - t0:.0f}s")
        agent.stop()
        for _ in range(reps):
            warm.append(agent.start())
            hits.append(agent.restored().get("compiled_from_cache"))
            restore_warm.append(float(agent.restored()["restore_ms"]))  # type: ignore[arg-type]
            check_serving(agent, versions)
            agent.stop()
            for cached in (agent.data / "compiled").glob("*.cwasm"):
                cached.unlink()
            cold.append(agent.start())
            restore_cold.append(float(agent.restored()["restore_ms"]))  # type: ignore[arg-type]
            check_serving(agent, versions)
            agent.stop()
            ctx.log(
                f"P12 restart with {versions} versions: {warm[-1] * 1000:.0f} ms from the "
                f"compiled-module cache ({hits[-1]} of {versions}), {cold[-1] * 1000:.0f} ms "
                "compiling"
            )
    finally:
        agent.stop()
    if any(h != versions for h in hits):
        raise RuntimeError(f"not every module came from the cache: {hits}")
    m = median(warm)
    return [
        Row(
            id="P12",
            measure=f"agent restart, {versions} loaded 5 MiB versions -> all serving",
            unit="ms",
            median=m * 1000,
            baseline=median(cold) * 1000,
            baseline_measure="the same restart with the compiled-module cache deleted",
            target="<= 1000 ms",
            ok=m <= 1.0,
            samples=[s * 1000 for s in warm],
            baseline_samples=[s * 1000 for s in cold],
            extra={"compiled_from_cache": hits},
            note="process start to first /healthz (the agent restores every version before it "
            "listens; a call to each checks it after); modules from the agent's compiled-module "
            "cache, verified by HMAC; 5 MiB modules of ~64 KiB code and a data segment "
            "(bench/big_modules.py); Python start-up and imports included",
        ),
        Row(
            id="P12",
            measure="  restore alone: state.json -> every version loaded",
            unit="ms",
            median=median(restore_warm),
            baseline=median(restore_cold),
            baseline_measure="the same restore compiling every module",
            target="-",
            ok=None,
            samples=restore_warm,
            baseline_samples=restore_cold,
            note="the agent's own figure (`agent.restored` restore_ms): each module file read "
            "and checked against its sha256, its compiled code copied into a sealed memfd, "
            "HMAC-verified there and mapped by wasmtime (the module's exports, memories and "
            "tables read from the cache entry, not parsed again), linked and instantiated "
            "once under its limits",
        ),
    ]
