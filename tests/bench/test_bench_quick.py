"""`python -m bench --quick` still runs every figure end to end (so the benchmark cannot rot).

No timing is asserted here: the figures and their targets are for `make bench` to judge on
a quiet machine, not for a test suite sharing two cores with other tests.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import FIGURES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(1200)
def test_quick_bench_writes_every_figure_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1140,  # the quick bench takes 3 to 6 minutes on a busy 2-core machine
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    assert doc["errors"] == {}
    seen = {row["id"] for row in doc["rows"]}
    # One id per P figure (some give several rows); the judgment figure J gives rows J1-J6,
    # the status page figure UI rows UI1-UI3, the dial-out figure P11 three ids.
    grouped = {
        "J": {f"J{i}" for i in range(1, 7)},
        "UI": {f"UI{i}" for i in range(1, 4)},
        "P11": {"P11", "P11-cpu", "P11-rss"},
    }
    expected = {f for f in FIGURES if f not in grouped}
    for ids in grouped.values():
        expected |= ids
    assert seen == expected
    for row in doc["rows"]:
        assert row["measure"] and row["unit"] and row["target"]
        assert isinstance(row["median"], float) and math.isfinite(row["median"]), row
        # A rate of false rollbacks may well be 0; every other figure is a positive amount.
        assert row["median"] >= 0 if row["unit"] == "%" else row["median"] > 0, row
        assert row["samples"] and all(isinstance(s, float) for s in row["samples"]), row
        if row["baseline"] is not None and row["unit"] != "%":
            assert math.isfinite(row["baseline"]) and row["baseline"] > 0, row
            assert isinstance(row["ratio"], float), row
        assert row["verdict"] in ("ok", "MISS", "-"), row
    # Quiet: no log line of the daemon, the agents or the in-process engine reached the
    # terminal (they go to files under the scratch directory), only progress and the table.
    printed = (done.stdout + done.stderr).splitlines()
    assert not [line for line in printed if line.lstrip().startswith("{")], printed[:20]
    assert not [line for line in printed if "[info" in line or "[debug" in line], printed[:20]
    # The table went to stdout, one line per row under the header.
    assert re.search(r"^id +measure +median +baseline", done.stdout, re.M), done.stdout[-2000:]
    assert "P1" in done.stdout and "P9" in done.stdout
    # ... and says where the many agent endpoints ran, next to the figures.
    assert "gitopsd agent --count N --base-port P" in done.stdout
    assert "notes:" in done.stdout
    assert doc["fleet"] and doc["machine"]["cpus"]
