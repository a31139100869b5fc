"""systemd's sd_notify protocol: one datagram to $NOTIFY_SOCKET (no library needed)."""

from __future__ import annotations

import os
import socket
import time

# A full receive queue on the manager's side must not stall the event loop for long.
SEND_TIMEOUT_S = 1.0


def _watchdog_interval(usec: str | None, pid: str | None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when the watchdog
    is off or meant for another process ($WATCHDOG_PID, as sd_watchdog_enabled checks)."""
    if not usec or not usec.isascii() or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isascii() and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000


class Notifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1 when running under systemd; a no-op otherwise.

    Every method returns True when the datagram was sent, False when there is no
    $NOTIFY_SOCKET (not under systemd) or it could not be reached.
    """

    def __init__(self, socket_path: str | None = None) -> None:
        self.path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self.watchdog_interval = _watchdog_interval(
            os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        )

    @property
    def enabled(self) -> bool:
        return self.path is not None and self.path[:1] in ("/", "@")

    def notify(self, *lines: str) -> bool:
        if self.path is None or self.path[:1] not in ("/", "@"):
            # Unset, empty, relative, or a transport this does not speak (vsock:...).
            return False
        address = "\0" + self.path[1:] if self.path.startswith("@") else self.path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto("\n".join(lines).encode(), address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def status(self, status: str) -> bool:
        return self.notify(*_status(status))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        """Before re-reading the config on SIGHUP; send `ready()` once done.
        MONOTONIC_USEC is what Type=notify-reload (systemd 253+) requires alongside."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))


def _status(status: str | None) -> tuple[str, ...]:
    # One line: a newline in the text would start a new KEY=value assignment.
    if status is None:
        return ()
    return ("STATUS=" + " ".join(status.splitlines()),)
