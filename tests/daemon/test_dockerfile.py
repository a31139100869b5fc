"""The Dockerfile's key properties, read statically (no Docker engine in the test set-up).

This does not build the image; it pins what the image promises: a slim Python base, the
package installed from this repository, a non-root user, `gitopsd` as the entry point for
both the daemon (default command) and the agent, a state volume, the three ports.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_every_stage_is_python_3_11_slim() -> None:
    bases = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert bases and all(b == "python:3.11-slim" for b in bases), bases


def test_installs_this_package() -> None:
    steps = instructions()
    assert any(w == "COPY" and a.split()[0] == "gitopsd" for w, a in steps)
    assert any(w == "RUN" and re.search(r"pip wheel .*--no-deps.* \.$", a) for w, a in steps)
    assert any(w == "RUN" and "pip install" in a and ".whl" in a for w, a in final_stage())


def test_runs_as_a_non_root_user() -> None:
    users = [a for w, a in final_stage() if w == "USER"]
    assert users, "no USER in the final stage: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0", ""} and group not in {"root", "0"}, users[-1]
    # The same uid owns the state directory.
    assert any(
        w == "RUN" and f"-o {user}" in a and "/var/lib/gitopsd" in a for w, a in final_stage()
    )


def test_entrypoint_and_default_command() -> None:
    stage = dict(final_stage())
    entrypoint = json.loads(stage["ENTRYPOINT"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert entrypoint == ["gitopsd"] and "gitopsd" in project["scripts"]
    assert json.loads(stage["CMD"]) == ["run", "--config", "/etc/gitopsd/gitopsd.toml"]


def test_state_volume_and_ports() -> None:
    stage = final_stage()
    volumes = [v for w, a in stage if w == "VOLUME" for v in json.loads(a)]
    assert volumes == ["/var/lib/gitopsd"]
    env = " ".join(a for w, a in stage if w == "ENV")
    assert "GITOPSD_STATE_DIR=/var/lib/gitopsd" in env
    ports = {p for w, a in stage if w == "EXPOSE" for p in a.split()}
    assert ports == {"9300", "9400", "9101"}


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # an allow list: .venv, .git, tests and caches stay out
    assert "!pyproject.toml" in lines and "!gitopsd/" in lines
