"""Which receiver processes the web service takes for alive, from their heartbeats alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from m2m.web.liveness import MISSED_BEATS, ReceiverLiveness

INTERVAL = 1.0
TIMEOUT = MISSED_BEATS * INTERVAL


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watching() -> tuple[ReceiverLiveness, Clock]:
    clock = Clock()
    return ReceiverLiveness(INTERVAL, clock), clock


def test_a_receiver_is_alive_until_it_misses_its_beats() -> None:
    liveness, clock = watching()
    liveness.beat("r1")
    clock.now += TIMEOUT - 0.01
    assert liveness.alive("r1")
    clock.now += 0.01
    assert not liveness.alive("r1")
    liveness.beat("r1")
    assert liveness.alive("r1")


def test_a_receiver_never_heard_of_has_the_same_time_from_the_start() -> None:
    liveness, clock = watching()
    clock.now += TIMEOUT - 0.01
    assert liveness.alive("unknown")
    clock.now += 0.01
    assert not liveness.alive("unknown")


def test_records_older_than_heartbeats_name_no_receiver_and_are_believed() -> None:
    liveness, clock = watching()
    clock.now += 100 * TIMEOUT
    assert liveness.alive(None)


def test_a_lost_receiver_is_reported_once_and_again_only_after_it_came_back() -> None:
    liveness, clock = watching()
    liveness.beat("r2")
    liveness.beat("r1")
    assert liveness.newly_lost() == []
    clock.now += TIMEOUT
    assert liveness.newly_lost() == ["r1", "r2"]
    assert liveness.newly_lost() == []
    liveness.beat("r1")
    assert liveness.newly_lost() == []
    clock.now += TIMEOUT
    assert liveness.newly_lost() == ["r1"]


def test_receivers_never_heard_of_are_not_reported_lost() -> None:
    liveness, clock = watching()
    clock.now += 10 * TIMEOUT
    assert not liveness.alive("never-beat")
    assert liveness.newly_lost() == []


@given(
    st.lists(st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.floats(0, 2 * TIMEOUT)), max_size=40)
)
def test_alive_means_a_beat_within_the_timeout(beats: list[tuple[str, float]]) -> None:
    liveness, clock = watching()
    last_beat: dict[str, float] = {}
    reported: list[str] = []
    for receiver, wait in beats:
        clock.now += wait
        reported += liveness.newly_lost()
        liveness.beat(receiver)
        last_beat[receiver] = clock.now
    clock.now += TIMEOUT / 2
    for receiver, at in last_beat.items():
        assert liveness.alive(receiver) == (clock.now - at < TIMEOUT)
    reported += liveness.newly_lost()
    assert set(reported) <= set(last_beat)
