"""A real `python -m gitopsd.agent` process, with its memory read from /proc."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

TOKEN = "bomb-token-0123456789"


class AgentProcess:
    def __init__(self, root: Path, name: str = "edge-bombs") -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "token").write_text(TOKEN + "\n")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gitopsd.agent",
                "--listen",
                "127.0.0.1:0",
                "--name",
                name,
                "--region",
                "r1",
                "--data-dir",
                str(root / "data"),
                "--token-file",
                str(root / "token"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stderr:
            if '"agent.listening"' in line:
                self.url = json.loads(line)["url"]
                break
        assert self.url, "the agent never reported listening"
        self.auth = {"Authorization": f"Bearer {TOKEN}"}
        # Keep reading its log: a full pipe would block the agent's next log line, and with
        # it the agent's event loop (the bombs log a warning per call).
        self.log = root / "agent.log"
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        with self.log.open("a") as out:
            for line in self.proc.stderr:
                out.write(line)

    def kib(self, field: str) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
        assert match, status
        return int(match[1])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    async def upload(self, session: aiohttp.ClientSession, wasm: bytes) -> tuple[int, str]:
        sha = hashlib.sha256(wasm).hexdigest()
        async with session.put(
            f"{self.url}/modules/{sha}",
            data=wasm,
            headers=self.auth | {"Content-Type": "application/wasm"},
        ) as r:
            await r.read()
            return r.status, sha

    async def load(
        self,
        session: aiohttp.ClientSession,
        function: str,
        wasm: bytes,
        memory_mib: int = 16,
        timeout_ms: int = 100,
    ) -> tuple[int, str]:
        status, sha = await self.upload(session, wasm)
        if status != 201:
            return status, f"upload {status}"
        body = {"sha256": sha, "limits": {"memoryMiB": memory_mib, "timeoutMs": timeout_ms}}
        async with session.put(
            f"{self.url}/functions/{function}/versions/1.0.0", json=body, headers=self.auth
        ) as r:
            return r.status, await r.text()

    async def invoke(
        self, session: aiohttp.ClientSession, function: str
    ) -> tuple[int, float, dict[str, Any]]:
        """(status, milliseconds, decoded error body or {})."""
        started = time.perf_counter()
        async with session.post(f"{self.url}/fn/{function}", data=b"") as r:
            raw = await r.read()
            took = (time.perf_counter() - started) * 1000
            data: dict[str, Any] = {}
            if r.status >= 400:
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = {"raw": raw[:200].decode(errors="replace")}
            return r.status, took, data

    async def healthz_ms(self, session: aiohttp.ClientSession) -> float:
        started = time.perf_counter()
        async with session.get(f"{self.url}/healthz") as r:
            await r.read()
        return (time.perf_counter() - started) * 1000


async def gather_limited(coros: list[Any], limit: int = 32) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
