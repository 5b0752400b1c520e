"""The sync service's parts that need no bus: its pace and the status it writes."""

from __future__ import annotations

from m2m.sync.forwarder import Pace
from m2m.sync.status import UplinkStatus


def test_the_pace_gives_calls_turns_evenly_spaced_at_the_rate() -> None:
    pace = Pace(rate=100)
    assert [round(pace.delay(now=10.0), 6) for _ in range(3)] == [0, 0.01, 0.02]
    assert round(pace.delay(now=10.005), 6) == 0.025  # after the turns already taken


def test_a_pace_left_idle_owes_nothing() -> None:
    pace = Pace(rate=100)
    pace.delay(now=10.0)
    assert pace.delay(now=20.0) == 0  # no burst saved up either: the next turn is 10 ms on
    assert round(pace.delay(now=20.0), 6) == 0.01


def test_the_status_reads_back_as_written() -> None:
    for status in (
        UplinkStatus("10.0.0.5:4150", True, 12, None, 1_700_000_000.5),
        UplinkStatus("a:1, b:2", False, 0, 1_699_999_000.25, 1_700_000_000.0),
    ):
        assert UplinkStatus.of_values(status.values()) == status


def test_a_status_older_than_three_intervals_is_stale() -> None:
    status = UplinkStatus("x:1", True, 0, None, updated=100.0)
    assert not status.is_stale(interval=5, now=115.0)
    assert status.is_stale(interval=5, now=115.1)
