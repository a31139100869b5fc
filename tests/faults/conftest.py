"""The reliability battery: sample counts in `make test`, full counts in `make faults`.

`GITOPSD_FAULTS_FULL=1` scales every count from the sample to the figures the issue asks
for (`scale(sample, full)`). Each test records its figures with the `figures` fixture: one
JSON file per test in `$GITOPSD_FAULTS_REPORT` (when set) or under pytest's base temp dir,
plus one `faults <name>: k=v ...` line in the terminal summary of a run without xdist.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FULL = os.environ.get("GITOPSD_FAULTS_FULL", "") not in ("", "0")
_REPORT_DIR: Path | None = None


def scale(sample: int, full: int) -> int:
    """`full` under GITOPSD_FAULTS_FULL=1, else `sample`."""
    return full if FULL else sample


def report_dir(base: Path) -> Path:
    configured = os.environ.get("GITOPSD_FAULTS_REPORT")
    path = Path(configured) if configured else base / "faults-figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Figures(dict[str, Any]):
    """Figures of one test; written out when the test ends, whatever its result."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__()
        self.name = name
        self.path = path

    def add(self, key: str, amount: float = 1) -> None:
        self[key] = self.get(key, 0) + amount

    def peak(self, key: str, value: float) -> None:
        self[key] = max(self.get(key, value), value)

    def write(self) -> None:
        data = {"test": self.name, "full": FULL, **self}
        self.path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Figures]:
    """Record figures: `figures["kills"] = 10`, `figures.add("crashes")`."""
    global _REPORT_DIR
    _REPORT_DIR = report_dir(tmp_path_factory.getbasetemp())
    module = request.node.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"{module}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}"
    recorded = Figures(name, _REPORT_DIR / f"figures-{name}.json")
    yield recorded
    recorded.write()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT_DIR is None or not _REPORT_DIR.exists():
        return
    files = sorted(_REPORT_DIR.glob("figures-*.json"))
    if not files:
        return
    terminalreporter.section(f"fault figures ({'full' if FULL else 'sample'}): {_REPORT_DIR}")
    for file in files:
        data = json.loads(file.read_text())
        name = data.pop("test")
        data.pop("full", None)
        line = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(data.items()))
        terminalreporter.write_line(f"faults {name}: {line}")
