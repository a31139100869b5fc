"""The README's five-minute tour, run as written: every ```sh block of the section, in order,
in one shell, in a fresh directory, with real agents, a real daemon and real Git.

What a block shows as output is checked against what it printed: in a block, a line that is
only a comment (`# ...`) is expected output of that block, in order (other output may come
between). In an expected line, `...` stands for any text and a hex id for any hex id; a line
that is only `# ...` stands for lines left out. A comment after a command on the same line is
an explanation, not output.

The tour's fixed ports (agents 9101-9107, webhook 9300, metrics 9400, status page 9500,
dial-out listener 9600) are moved to free ones,
in the blocks and in the copy of manifests-example/ the tour starts from, so the test can run
next to anything else on this machine; nothing else is changed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOUR = "## A five-minute tour"
PORTS = (9101, 9102, 9103, 9104, 9105, 9106, 9107, 9300, 9400, 9500, 9600)
MARK = "@@tour-block@@"
TIMEOUT_S = 280
_HEX = re.compile(r"[0-9a-f]{7,64}")


@dataclass(frozen=True)
class Block:
    """One ```sh block of the tour: its script and the output it shows."""

    index: int
    script: str
    expected: tuple[str, ...]


def tour_blocks(text: str) -> list[Block]:
    """The ```sh blocks of the tour section, in order."""
    start = text.index(TOUR)
    end = text.find("\n## ", start + len(TOUR))
    section = text[start : end if end != -1 else len(text)]
    blocks = []
    for index, match in enumerate(re.finditer(r"^```sh\n(.*?)^```$", section, re.M | re.S)):
        script = match[1]
        expected = []
        heredoc = None  # the terminator of the here-document being read: its lines are data
        for line in script.splitlines():
            if heredoc is not None:
                heredoc = None if line == heredoc else heredoc
            elif opened := re.search(r"<<-?'?(\w+)'?", line):
                heredoc = opened[1]
            elif line.startswith("# ") and line.strip() != "# ...":
                expected.append(line[2:].rstrip())
        blocks.append(Block(index, script, tuple(expected)))
    return blocks


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on now (bound once, then released)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


def remap(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"\b(\d{4})\b", lambda m: str(ports.get(int(m[1]), m[1])), text)


def pattern(expected: str) -> re.Pattern[str]:
    """An expected line as a regex: `...` any text, a hex id any hex id."""
    parts = []
    for piece in re.split(r"(\.\.\.|[0-9a-f]{7,64})", expected):
        if piece == "...":
            parts.append(".*")
        elif _HEX.fullmatch(piece):
            parts.append("[0-9a-f]{7,64}")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def missing_lines(expected: tuple[str, ...], output: str) -> list[str]:
    """The expected lines not found in `output`, in order (a subsequence match)."""
    lines = [line.rstrip() for line in output.splitlines()]
    missing = []
    at = 0
    for want in expected:
        regex = pattern(want)
        for i in range(at, len(lines)):
            if regex.fullmatch(lines[i]):
                at = i + 1
                break
        else:
            missing.append(want)
    return missing


def scratch_root(tmp: Path, ports: dict[int, int]) -> Path:
    """A stand-in for the repository root: manifests-example/ (ports moved) and .venv."""
    root = tmp / "repo"
    for src in (ROOT / "manifests-example").rglob("*"):
        if src.is_file():
            dst = root / "manifests-example" / src.relative_to(ROOT / "manifests-example")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(remap(src.read_text(), ports))
    (root / ".venv").symlink_to(ROOT / ".venv")
    return root


@pytest.mark.timeout(TIMEOUT_S + 20)
def test_the_readme_tour_runs_and_prints_what_it_shows(tmp_path: Path) -> None:
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    blocks = tour_blocks(README.read_text())
    assert len(blocks) >= 8, "the tour lost its shell blocks"
    root = scratch_root(tmp_path, ports)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = "set -e\n" + "".join(
        f"printf '\\n%s\\n' \"{MARK} {b.index} $(date +%s.%N)\"\n{remap(b.script, ports)}\n"
        for b in blocks
    )
    (tmp_path / "tour.sh").write_text(script)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Tour Reader\n\temail = reader@example.test\n"
    )
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",  # the tour puts .venv/bin first itself
        "HOME": str(home),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", str(tmp_path / "tour.sh")],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # agents and daemon in one process group, for the teardown
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
        leftover = _stopped_within(proc.pid, 15.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"the tour failed (exit {proc.returncode}):\n{out}\n{err}"
    outputs = out.split(MARK)[1:]
    starts = [float(o.split(maxsplit=2)[1]) for o in outputs]
    took = [round(b - a, 1) for a, b in zip(starts, [*starts[1:], time.time()], strict=True)]
    print(f"seconds per block: {took}")
    assert len(outputs) == len(blocks), out
    for block, output in zip(blocks, outputs, strict=True):
        missing = missing_lines(block.expected, output)
        assert not missing, (
            f"block {block.index} of the tour printed something else than the README shows:\n"
            f"missing {missing}\n--- block ---\n{block.script}\n--- printed ---\n{output}"
        )
    # The tour's own clean-up stopped what it started (agents and daemon).
    assert not leftover, f"still running after the tour's clean-up: {leftover}"
    print(f"tour: {len(blocks)} blocks in {elapsed:.1f}s")


def _stopped_within(pgid: int, seconds: float) -> list[str]:
    """What of the tour's group is still running once `seconds` have passed (agents take a
    moment to exit after SIGTERM): [] as soon as nothing is."""
    deadline = time.monotonic() + seconds
    while (alive := _still_running(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _still_running(pgid: int) -> list[str]:
    """Processes of the tour's group still alive (its clean-up should have stopped them)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except (OSError, ProcessLookupError):
            continue
        found.append(cmd)
    return found
