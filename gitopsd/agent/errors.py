"""Errors of the agent's control plane. Each maps to one HTTP status of docs/agent-api.md.

GitopsdError (gitopsd.errors)
└── AgentRequestError        status 400: the request is malformed or names something invalid
    ├── NotFound             status 404: unknown function, version or module
    ├── Conflict             status 409: the change would leave traffic without a version
    │   └── MemoryBudgetExceeded  a load over the agent's --memory-mib budget
    ├── PayloadTooLarge      status 413: a module over the size cap
    └── Unavailable          status 503: no version has traffic for the request

Module problems (not valid WASM, does not link) are `gitopsd.errors.ModuleError`, answered 400.
"""

from __future__ import annotations

from typing import ClassVar

from gitopsd.errors import GitopsdError


class AgentRequestError(GitopsdError):
    """A control request the agent refuses; the message says what to fix."""

    status: ClassVar[int] = 400


class NotFound(AgentRequestError):
    """The request names a function, version or module the agent does not have."""

    status = 404


class Conflict(AgentRequestError):
    """The change conflicts with the current state (e.g. deleting a version with traffic)."""

    status = 409


class MemoryBudgetExceeded(Conflict):
    """A version whose `limits.memoryMiB` does not fit in what is left of the agent's
    `--memory-mib` budget; the message and the attributes carry the figures (MiB)."""

    def __init__(self, message: str, *, budget: int, used: int, requested: int) -> None:
        super().__init__(message)
        self.budget = budget
        self.used = used
        self.requested = requested


class PayloadTooLarge(AgentRequestError):
    """The body is over the agent's size cap."""

    status = 413


class Unavailable(AgentRequestError):
    """No version can serve the request (traffic does not cover it)."""

    status = 503
