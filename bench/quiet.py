"""Keep the terminal to progress and the table: every log of the bench goes to a file.

Child processes (daemon, agents) already write their stderr to a log file each (support.py).
What runs in the bench's own process (the daemon's reconcile pass in P3, the engine in P5
and P6, the in-process agents of P1) logs through structlog and the standard `logging`
module; `to_file` sends both to one JSON-lines file under the bench's scratch directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import IO

import structlog

from gitopsd.log import redact_rendered, redact_secrets


def to_file(path: Path) -> IO[str]:
    """Send this process's structlog and stdlib logs to `path` (appended); returns the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = path.open("a", buffering=1)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
            redact_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return out
