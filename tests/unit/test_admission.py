"""Which new device connections a receiver lets in: bounded in all and per peer address."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from m2m.config import LimitsConfig
from m2m.receivers.admission import LOG_EVERY, Admission


def admission(connections: int, per_address: int) -> Admission:
    return Admission(LimitsConfig(connections=connections, connections_per_address=per_address))


def test_connections_are_admitted_up_to_the_total_limit() -> None:
    gate = admission(connections=3, per_address=10)
    assert [gate.admit(f"10.0.0.{n}") for n in range(4)] == [True, True, True, False]
    assert gate.open == 3
    assert gate.refused == 1


def test_one_address_is_admitted_up_to_its_own_limit_and_others_still_get_in() -> None:
    gate = admission(connections=10, per_address=2)
    assert [gate.admit("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert gate.admit("10.0.0.2")
    assert gate.open == 3
    assert gate.refused == 1


def test_a_refused_connection_is_not_counted_open() -> None:
    gate = admission(connections=1, per_address=1)
    assert gate.admit("10.0.0.1")
    assert not gate.admit("10.0.0.1")
    assert not gate.admit("10.0.0.2")
    assert gate.open == 1
    gate.left("10.0.0.1")
    assert gate.open == 0
    assert gate.admit("10.0.0.2")


def test_a_connection_that_left_frees_its_place_in_all_and_for_its_address() -> None:
    gate = admission(connections=2, per_address=2)
    assert gate.admit("a") and gate.admit("a")
    assert not gate.admit("a")
    assert not gate.admit("b")
    gate.left("a")
    assert gate.open == 1
    assert gate.admit("a")
    gate.left("a")
    assert gate.admit("b")
    assert gate.refused == 2


def test_an_address_whose_connections_all_left_starts_again_from_zero() -> None:
    gate = admission(connections=10, per_address=1)
    assert gate.admit("a")
    gate.left("a")
    assert gate.admit("a")
    assert not gate.admit("a")


def test_refusals_keep_being_counted() -> None:
    gate = admission(connections=1, per_address=1)
    gate.admit("a")
    for _ in range(5):
        gate.admit("a")
        gate.admit("b")
    assert gate.refused == 10


def test_the_first_refusal_then_every_thousandth_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = admission(connections=1, per_address=1)
    gate.admit("10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="m2m.receivers.admission"):
        for _ in range(2 * LOG_EVERY):
            gate.admit("10.0.0.2")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert messages[0] == (
        "connection from 10.0.0.2 refused: 1 connections are open, the limit (1 refused so far)"
    )
    assert messages[1].endswith(f"({LOG_EVERY} refused so far)")
    assert messages[2].endswith(f"({2 * LOG_EVERY} refused so far)")


def test_a_refusal_for_the_address_says_so(caplog: pytest.LogCaptureFixture) -> None:
    gate = admission(connections=10, per_address=1)
    gate.admit("10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="m2m.receivers.admission"):
        gate.admit("10.0.0.1")
    assert "1 connections from it are open, the limit" in caplog.text


@pytest.mark.parametrize("limits", [{"connections": 0}, {"connections_per_address": 0}])
def test_a_limit_must_let_at_least_one_connection_in(limits: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        LimitsConfig(**limits)


_EVENTS = st.lists(st.tuples(st.booleans(), st.sampled_from("abcd")), max_size=80)


@given(st.integers(1, 6), st.integers(1, 4), _EVENTS)
def test_open_connections_never_exceed_either_limit(
    connections: int, per_address: int, events: list[tuple[bool, str]]
) -> None:
    gate = admission(connections, per_address)
    open_from: Counter[str] = Counter()
    refused = 0
    for arrives, host in events:
        if arrives:
            expected = sum(open_from.values()) < connections and open_from[host] < per_address
            assert gate.admit(host) is expected
            if expected:
                open_from[host] += 1
            else:
                refused += 1
        elif open_from[host]:  # only a connection that was admitted can leave
            gate.left(host)
            open_from[host] -= 1
        assert gate.open == sum(open_from.values()) <= connections
        assert gate.refused == refused
