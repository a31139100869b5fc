"""What every figure shares: the result row, medians, the table, bench/results.json."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")

FLEET_NOTE = (
    "large fleets run on one 2-core machine: every agent endpoint is a full agent (own state, "
    "data dir, token and port) and many endpoints share one process (`gitopsd agent --count N "
    "--base-port P`: one asyncio loop, one wasmtime Engine and module cache); the daemon, the "
    "agents and the load generators share the same 2 cores"
)


@dataclass
class Context:
    """What a figure's `run` is given."""

    quick: bool
    work: Path  # a scratch directory of this run
    log: Callable[[str], None]
    params: dict[str, str] = field(default_factory=dict)  # `--param FIGURE.KEY=VALUE`
    used: set[str] = field(default_factory=set)

    def reps(self, full: int, quick: int = 1) -> int:
        return self.size("reps", quick if self.quick else full)

    def size(self, key: str, default: int) -> int:
        """`default`, or the `--param FIGURE.key=N` of this run (development runs)."""
        self.used.add(key)
        value = self.params.get(key)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"--param {key}={value!r}: expected a whole number") from None
        if number < 1:
            raise ValueError(f"--param {key}={value!r}: must be at least 1")
        return number


@dataclass
class Row:
    """One line of the table. `median` and `baseline` are in `unit`; `ok` is the verdict."""

    id: str
    measure: str
    unit: str
    median: float
    target: str
    ok: bool | None
    baseline: float | None = None
    baseline_measure: str = ""
    samples: list[float] = field(default_factory=list)
    baseline_samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    was: str = ""  # the target of an earlier benchmark issue, met and kept for comparison

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.median / self.baseline

    @property
    def verdict(self) -> str:
        return "-" if self.ok is None else ("ok" if self.ok else "MISS")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no samples")
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def ms(seconds: float) -> float:
    return seconds * 1000.0


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(rows: Sequence[Row]) -> str:
    """The `id  measure  median  baseline  ratio  target  was  verdict` table."""
    head = ("id", "measure", "median", "baseline", "ratio", "target", "was", "verdict")
    lines = [head]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(
            (
                r.id,
                r.measure,
                _num(r.median, r.unit),
                _num(r.baseline, r.unit),
                ratio,
                r.target,
                r.was or "-",
                r.verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def notes(rows: Sequence[Row]) -> str:
    """How each figure was taken (where its agents ran, sizes, runs), under the table."""
    out = ["notes:"]
    for r in rows:
        parts = [r.note.rstrip(".")] if r.note else []
        if r.baseline_measure:
            parts.append(f"baseline: {r.baseline_measure}")
        parts.append(f"{len(r.samples)} runs")
        out.append(f"  {r.id} {r.measure}: {'; '.join(parts)}")
    cpus = os.cpu_count()
    out.append(f"  machine: {cpus} CPUs, Python {sys.version.split()[0]}; {FLEET_NOTE}")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(
    path: Path, rows: Sequence[Row], quick: bool, seconds: float, errors: dict[str, str]
) -> None:
    doc = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "seconds": round(seconds, 1),
        "machine": machine(),
        "fleet": FLEET_NOTE,
        "rows": [r.to_json() for r in rows],
        "errors": errors,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
