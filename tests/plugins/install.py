"""Install the test plugin packages the way pip would, without pip or the network: copy the
package next to a `*.dist-info` holding its entry points, in a directory put on sys.path
(and PYTHONPATH for subprocesses). importlib.metadata finds it like any installed
distribution, in CI's fresh clone too."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).parent


def install(project: str, target: Path) -> Path:
    """Lay out tests/plugins/<project> in `target` as an installed distribution."""
    source = HERE / project
    meta = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    for package in source.iterdir():
        if package.is_dir() and (package / "__init__.py").exists():
            shutil.copytree(package, target / package.name, dirs_exist_ok=True)
    dist = target / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    lines = []
    for group, entries in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {value}" for name, value in entries.items())
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return target


def _refresh() -> None:
    from gitopsd.manifest.strategy_plugins import plugin_option_models
    from gitopsd.rollout.strategies import load_plugins

    importlib.invalidate_caches()
    plugin_option_models(refresh=True)
    load_plugins(refresh=True)


@contextmanager
def installed(project: str, target: Path) -> Iterator[dict[str, str]]:
    """The plugin importable in this process; yields the environment for subprocesses."""
    install(project, target)
    sys.path.insert(0, str(target))
    _refresh()
    try:
        path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
        yield {"PYTHONPATH": path}
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.split(".")[0] == "gitopsd_shadow"]:
            del sys.modules[name]
        _refresh()
