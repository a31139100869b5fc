"""When a leader stops acting: counted from the send time of its last successful renewal."""

from __future__ import annotations

from gitopsd.ha.timer import LeaseTimer


def test_a_leader_acts_until_lease_minus_margin_after_the_renewal_was_sent() -> None:
    timer = LeaseTimer(lease=5.0)
    assert not timer.acting(0.0)  # never acquired
    timer.renewed(sent_at=100.0)
    assert timer.renew_interval < timer.margin < timer.lease
    stop = 100.0 + 5.0 - timer.margin
    assert timer.acting_until() == stop
    assert timer.acting(stop - 0.001)
    assert not timer.acting(stop)  # stops before the database's expiry (>= 105.0)
    assert stop < 105.0


def test_a_late_answer_to_an_older_renewal_does_not_extend_and_a_loss_stops_at_once() -> None:
    timer = LeaseTimer(lease=2.0)
    timer.renewed(sent_at=10.0)
    timer.renewed(sent_at=9.0)  # answered late: its expiry is earlier
    assert timer.acting_until() == 10.0 + 2.0 - timer.margin
    timer.lost()
    assert not timer.acting(10.1)
    assert timer.acting_until() is None
