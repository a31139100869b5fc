"""P9: `gitopsd --help` in a new process, against `python -c pass` with the same interpreter.

Each run is a new interpreter (nothing imported yet); the OS page cache is warm, and byte
code is cached as after `pip install` (PYTHONDONTWRITEBYTECODE is dropped for the children
and one warm-up run writes the .pyc files, as an installed package has them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import Context, Row, median


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def run(ctx: Context) -> list[Row]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    script = Path(sys.executable).with_name("gitopsd")
    gitopsd = [str(script)] if script.exists() else [sys.executable, "-m", "gitopsd.cli.main"]
    help_cmd = [*gitopsd, "--help"]
    pass_cmd = [sys.executable, "-c", "pass"]
    _time(help_cmd, env)  # writes byte code, as an installed package has it
    reps = ctx.reps(21, 5)
    helps: list[float] = []
    passes: list[float] = []
    for _ in range(reps):  # interleaved, so that load on the machine hits both alike
        passes.append(_time(pass_cmd, env))
        helps.append(_time(help_cmd, env))
    m = median(helps) * 1000
    return [
        Row(
            id="P9",
            measure="gitopsd --help, new process",
            unit="ms",
            median=m,
            baseline=median(passes) * 1000,
            baseline_measure="python -c pass",
            target="<= 150 ms",
            ok=m <= 150,
            samples=[h * 1000 for h in helps],
            baseline_samples=[p * 1000 for p in passes],
            note=f"{' '.join(help_cmd[-2:])}; {reps} runs each, interleaved",
        )
    ]
