"""When a leader must stop acting, on its own monotonic clock.

The lease's expiry is set by the database (`now() + lease` when the renewal's transaction
starts), which is never earlier than the moment the renewal was sent. So a leader that counts
from the send time of its last successful renewal and stops at `lease - margin` stops before
any standby can see the lease expired, whatever its wall clock says and however long the
renewal's answer took to come back. Pure: the caller passes the monotonic readings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Fractions of the lease: renew five times per lease, stop acting a quarter lease early.
RENEW_FRACTION = 0.2
MARGIN_FRACTION = 0.25


@dataclass
class LeaseTimer:
    """Tracks one lease on the local monotonic clock."""

    lease: float
    _valid_from: float | None = field(default=None, init=False)

    @property
    def renew_interval(self) -> float:
        """How often to renew: well below the lease, so a few lost renewals are survived."""
        return self.lease * RENEW_FRACTION

    @property
    def margin(self) -> float:
        """How long before the database's expiry the leader stops acting."""
        return self.lease * MARGIN_FRACTION

    def renewed(self, sent_at: float) -> None:
        """A renewal (or the acquisition) sent at monotonic `sent_at` succeeded."""
        if self._valid_from is None or sent_at > self._valid_from:
            self._valid_from = sent_at

    def lost(self) -> None:
        """The lease is gone (renewal refused, released): stop acting at once."""
        self._valid_from = None

    def acting_until(self) -> float | None:
        """The monotonic time after which this process must not act (None: not leading)."""
        if self._valid_from is None:
            return None
        return self._valid_from + self.lease - self.margin

    def acting(self, now: float) -> bool:
        """May this process act for the lease at monotonic `now`?"""
        until = self.acting_until()
        return until is not None and now < until
