"""structlog set-up: logs go to stderr, coloured on a TTY, JSON lines otherwise.

Every line is redacted twice: the values before rendering (`redact_secrets`), and the
rendered line itself (`redact_rendered`, which also covers tracebacks the renderer formats),
so the password of a source URL (`https://user:password@host/...`) never reaches a log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from gitopsd.source.redact import redact


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: URL passwords out of every string value (nested ones too)."""
    for key, value in event_dict.items():
        if key != "exc_info":
            event_dict[key] = _scrub(value)
    return event_dict


def redact_rendered(logger: Any, method_name: str, rendered: Any) -> Any:
    """structlog processor placed after the renderer: the whole line, tracebacks included."""
    return redact(rendered) if isinstance(rendered, str) else rendered


def configure(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once for the process."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
            redact_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**context: object) -> structlog.stdlib.BoundLogger:
    """A logger with bound context (commit, function, node, rollout id)."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger().bind(**context)
    return logger


def configure_for_library() -> None:
    """Send logs to stderr when gitopsd is used as a library (`gitopsd.api`).

    structlog's unconfigured default prints to stdout, which would mix our logs into the
    host script's own output; a host that configured structlog itself keeps its set-up.
    """
    if not structlog.is_configured():
        configure()
