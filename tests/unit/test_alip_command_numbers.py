"""The short numbers an ALIP connection gives the commands it sends, bounded per connection."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.receivers.alip.command_numbers import CommandNumbers


def test_each_command_sent_gets_the_next_number_from_zero() -> None:
    numbers = CommandNumbers(limit=10)
    assert [numbers.number(f"id-{n}") for n in range(3)] == [0, 1, 2]
    assert len(numbers) == 3


def test_a_command_sent_again_gets_a_new_number_and_the_old_one_still_stands_for_it() -> None:
    numbers = CommandNumbers(limit=10)
    first = numbers.number("reboot")
    again = numbers.number("reboot")
    assert (first, again) == (0, 1)
    assert numbers.acknowledged(first) == "reboot"
    assert numbers.acknowledged(again) == "reboot"


def test_an_acknowledged_number_is_forgotten() -> None:
    numbers = CommandNumbers(limit=10)
    number = numbers.number("reboot")
    assert numbers.acknowledged(number) == "reboot"
    assert numbers.acknowledged(number) is None
    assert len(numbers) == 0


def test_a_number_never_given_stands_for_nothing() -> None:
    numbers = CommandNumbers(limit=10)
    numbers.number("reboot")
    assert numbers.acknowledged(1) is None
    assert numbers.acknowledged(-1) is None
    assert len(numbers) == 1


def test_numbers_keep_growing_after_acknowledgements() -> None:
    numbers = CommandNumbers(limit=10)
    numbers.acknowledged(numbers.number("a"))
    assert numbers.number("b") == 1


def test_past_the_limit_the_oldest_number_is_forgotten_first() -> None:
    numbers = CommandNumbers(limit=3)
    for n in range(5):
        numbers.number(f"id-{n}")
    assert len(numbers) == 3
    assert numbers.acknowledged(0) is None
    assert numbers.acknowledged(1) is None
    assert [numbers.acknowledged(n) for n in (2, 3, 4)] == ["id-2", "id-3", "id-4"]


def test_an_acknowledgement_makes_room_so_nothing_else_is_forgotten() -> None:
    numbers = CommandNumbers(limit=2)
    numbers.number("a")
    numbers.number("b")
    assert numbers.acknowledged(0) == "a"
    numbers.number("c")
    assert len(numbers) == 2
    assert numbers.acknowledged(1) == "b"
    assert numbers.acknowledged(2) == "c"


def test_the_oldest_remaining_is_forgotten_not_the_oldest_ever_given() -> None:
    numbers = CommandNumbers(limit=3)
    for name in "abc":
        numbers.number(name)
    numbers.acknowledged(0)  # "a"
    numbers.number("d")  # room: nothing forgotten
    numbers.number("e")  # full: "b" (number 1) goes
    assert numbers.acknowledged(1) is None
    assert [numbers.acknowledged(n) for n in (2, 3, 4)] == ["c", "d", "e"]


def test_a_limit_of_one_remembers_the_last_number_only() -> None:
    numbers = CommandNumbers(limit=1)
    numbers.number("a")
    numbers.number("b")
    assert numbers.acknowledged(0) is None
    assert numbers.acknowledged(1) == "b"


@pytest.mark.parametrize("limit", [0, -1])
def test_a_connection_must_remember_at_least_one_number(limit: int) -> None:
    with pytest.raises(ValueError, match="at least one command number"):
        CommandNumbers(limit)


_OPERATIONS = st.lists(st.tuples(st.sampled_from(["send", "ack"]), st.integers(0, 30)), max_size=60)


@given(st.integers(1, 6), _OPERATIONS)
def test_numbers_behave_like_a_bounded_table_oldest_out(
    limit: int, operations: list[tuple[str, int]]
) -> None:
    numbers = CommandNumbers(limit)
    expected: OrderedDict[int, str] = OrderedDict()
    given_so_far = 0
    for operation, value in operations:
        if operation == "send":
            command_id = f"id-{value}"
            assert numbers.number(command_id) == given_so_far
            expected[given_so_far] = command_id
            if len(expected) > limit:
                expected.popitem(last=False)
            given_so_far += 1
        else:
            assert numbers.acknowledged(value) == expected.pop(value, None)
        assert len(numbers) == len(expected) <= limit
