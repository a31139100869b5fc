"""How the `gitopsd run` process ends: promptly and always, once the daemon has stopped.

After SIGTERM the daemon drains (the current step finishes, the publisher and the servers
close, leases are released) and `Daemon.run()` returns its exit code. What is left after
that is the interpreter's own shutdown: joining every non-daemon thread, running atexit
hooks and freeing the big structures of a long run. None of it is needed (every store write
was committed when it was made), it is where the time between "stopped" and the process's
end went, and one thread a library leaves behind makes it last forever: systemd would wait
its stop timeout and SIGKILL the daemon. So the process closes the store, flushes the logs,
stdout and stderr, and ends with `os._exit(code)`, keeping the exit codes of the CLI
contract (0 stopped cleanly, 2 could not run, 1 an unexpected error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from gitopsd.errors import GitopsdError

__all__ = ["end_process", "run_daemon_process"]


def run_daemon_process(
    config_path: Path,
    state_dir: Path | None,
    token_file: Path | None,
    report_error: Callable[[GitopsdError], None],
) -> NoReturn:
    """Run the daemon to its end, close its store and end the process with its exit code.

    A GitopsdError (a config or store that cannot be used) is reported by `report_error`
    (the CLI's `error: ...` line) and ends the process with its exit code; any other
    exception prints its traceback, as the interpreter would, and ends it with 1."""
    from gitopsd.daemon.service import Daemon

    started: list[Daemon] = []

    async def main() -> int:
        daemon = Daemon(config_path, state_dir, token_file)
        started.append(daemon)
        return await daemon.run()

    try:
        code = asyncio.run(main())
    except GitopsdError as exc:
        report_error(exc)
        code = exc.exit_code
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:  # before the daemon's own SIGINT handler is in place
        code = 1  # design.md: exit codes are 0, 1 or 2
    except BaseException:  # a bug: reported, and the process still ends
        traceback.print_exc()
        code = 1
    for daemon in started:
        try:
            daemon.store.close()
        except Exception as exc:  # the exit code already says how it ended
            print(f"gitopsd: closing the state store failed: {exc}", file=sys.stderr)
    end_process(code)


def end_process(code: int) -> NoReturn:
    """Flush logging, stdout and stderr, then end the process at once with `code`: no
    thread is joined, no atexit hook runs, nothing is garbage-collected."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe must not change the exit code, nor stop the exit.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
