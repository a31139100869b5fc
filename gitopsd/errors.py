"""Typed errors. Each carries the exit code the CLI returns and a message a user can act on.

GitopsdError                 exit 2: could not run
├── ConfigError              bad config file, flag or environment variable
├── SourceError              repository unreachable, ref missing, clone/fetch failed
├── ModuleError              module file missing, unreadable or not valid WASM/WAT
├── AgentError               an agent could not be reached or refused a request
│   └── AgentAuthError       the agent answered 401: wrong or missing token
├── StoreError               the state database could not be opened or written
│   └── StateError           the state database is damaged: check it, rebuild it
└── InvalidManifests         exit 1: a negative result, every problem as file:line
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


class GitopsdError(Exception):
    """Base of every error gitopsd raises on purpose."""

    exit_code: ClassVar[int] = 2


class ConfigError(GitopsdError):
    """The configuration (file, flags, environment) is unusable."""


class SourceError(GitopsdError):
    """The Git source could not be read."""


class ModuleError(GitopsdError):
    """A WASM module could not be read or compiled."""


class AgentError(GitopsdError):
    """An edge agent could not be reached or refused a request."""

    def __init__(self, node: str, message: str, status: int | None = None) -> None:
        super().__init__(f"agent {node}: {message}")
        self.node = node
        self.reason = message  # without the node name, for messages that already carry it
        self.status = status


class AgentAuthError(AgentError):
    """The agent refused our bearer token."""


class StoreError(GitopsdError):
    """The state store could not be used."""


class StateError(StoreError):
    """The state database is damaged: the message names it and the way out."""

    def __init__(self, location: str, detail: str) -> None:
        self.location = location
        self.detail = detail
        super().__init__(
            f"state database {location} is damaged ({detail}); "
            "`gitopsd state check` shows the damage, `gitopsd state rebuild` (with the same "
            "--config/--state-dir) moves the file aside and starts a new one from what can "
            "still be read: live state comes back from the agents, desired state from Git"
        )


@dataclass(frozen=True)
class ManifestProblem:
    """One problem in one manifest file, pointing at the line to fix."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class InvalidManifests(GitopsdError):
    """The manifests of a snapshot are invalid; nothing of that snapshot may be applied."""

    exit_code = 1

    def __init__(self, problems: Sequence[ManifestProblem], commit: str = "") -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.path, p.line, p.message)))
        self.commit = commit  # filled in by whoever knows which commit was being loaded
        super().__init__("\n".join(str(p) for p in self.problems))
