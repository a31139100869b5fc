"""workerd (Cloudflare's Workers runtime) serving the same WASM handler as the agent, for P7.

`make bench` installs the npm package `workerd` (which ships the binary) into
bench/.cache/workerd when `npm` is present. A worker (ES module) imports the handler's
`.wasm` and answers every request by calling its `_start` export, with `fd_write` on
stdout collected into the response body: the agent's WAGI contract, minus what the trivial
handler does not use. Two variants, as the issue asks:

- `shared`: one instance made when the worker loads, an export call per request (state
  left by one request is visible to the next: no isolation between requests);
- `per-request`: a new instance per request, as the agent does.

Each runs as its own `workerd serve` process pinned to one core (taskset).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from bench.support import free_port, http_ok, tail, wait_for

CACHE = Path(__file__).with_name(".cache") / "workerd"
MODES = ("shared", "per-request")

_WORKER = """import wasm from "handler.wasm";
let out = [];
let memory = null;
const imports = {
  wasi_snapshot_preview1: {
    fd_write(fd, iovs, count, written) {
      const view = new DataView(memory.buffer);
      let total = 0;
      for (let i = 0; i < count; i++) {
        const ptr = view.getUint32(iovs + 8 * i, true);
        const len = view.getUint32(iovs + 8 * i + 4, true);
        if (fd === 1) out.push(new Uint8Array(memory.buffer, ptr, len).slice());
        total += len;
      }
      view.setUint32(written, total, true);
      return 0;
    },
  },
};
const instantiate = () => new WebAssembly.Instance(wasm, imports);
const shared = SHARED ? instantiate() : null;
export default {
  async fetch(request) {
    await request.arrayBuffer();
    const instance = shared ?? instantiate();
    memory = instance.exports.memory;
    out = [];
    instance.exports._start();
    const body = out.length === 1 ? out[0] : new Uint8Array(await new Blob(out).arrayBuffer());
    return new Response(body, { headers: { "X-Gitopsd-Version": "1.0.0" } });
  },
};
"""

_CONFIG = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .worker) ],
  sockets = [ ( name = "http", address = "127.0.0.1:PORT", http = (), service = "main" ) ],
);
const worker :Workerd.Worker = (
  modules = [
    (name = "worker", esModule = embed "worker.js"),
    (name = "handler.wasm", wasm = embed "handler.wasm"),
  ],
  compatibilityDate = "2024-01-01",
);
"""


def binary() -> tuple[Path | None, str]:
    """(the workerd binary, "") or (None, why there is none)."""
    found = CACHE / "node_modules" / ".bin" / "workerd"
    if found.exists():
        return found, ""
    if shutil.which("npm") is None:
        return None, "npm is not installed, so `make bench` could not install workerd"
    return None, f"workerd is not installed under {CACHE} (`make bench` installs it with npm)"


def version(path: Path) -> str:
    """The npm package's version and what the binary says, e.g. `1.20261123.1 (2026-11-23)`."""
    done = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    said = (done.stdout or done.stderr).strip().splitlines()
    binary = said[0].removeprefix("workerd ").strip() if done.returncode == 0 and said else "?"
    package = CACHE / "node_modules" / "workerd" / "package.json"
    try:
        npm = str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        npm = "?"
    return f"{npm} ({binary})"


class Workerd:
    """One `workerd serve` of the handler in one mode, pinned to `cpu`."""

    def __init__(self, root: Path, path: Path, wasm: bytes, mode: str, cpu: int) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.root = root / f"workerd-{mode}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.mode = mode
        self.cpu = cpu
        self.port = free_port()
        self.log = self.root / "workerd.log"
        shared = "true" if mode == "shared" else "false"
        (self.root / "worker.js").write_text(_WORKER.replace("SHARED", shared))
        (self.root / "handler.wasm").write_bytes(wasm)
        (self.root / "config.capnp").write_text(_CONFIG.replace("PORT", str(self.port)))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fn/hello"

    def start(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(self.cpu), str(self.path), "serve", "config.capnp"],
            cwd=self.root,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"workerd exited: {tail(self.log)}")
            return http_ok(f"http://127.0.0.1:{self.port}/healthz", timeout=2)

        wait_for(up, timeout, f"workerd ({self.mode})", step=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
