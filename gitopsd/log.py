"""structlog set-up: logs go to stderr, coloured on a TTY, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys

import structlog


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
            renderer,
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
