"""The Python API is a library: its logs must never land in the host script's stdout."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_script(source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_api_logs_go_to_stderr_not_the_scripts_stdout() -> None:
    done = run_script(
        """
        import gitopsd.api
        from gitopsd.log import get_logger
        get_logger(function="fn").info("rollout started")
        print("script output")
        """
    )
    assert done.stdout == "script output\n"
    assert "rollout started" in done.stderr


def test_a_host_that_configured_structlog_keeps_its_own_set_up() -> None:
    done = run_script(
        """
        import sys, structlog
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stdout))
        import gitopsd.api
        from gitopsd.log import get_logger
        get_logger().info("host decides")
        """
    )
    assert "host decides" in done.stdout
