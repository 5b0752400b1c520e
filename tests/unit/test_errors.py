"""Errors sorted by whether trying again can help: refused input, or a service unavailable."""

from __future__ import annotations

import pytest

from m2m.bus.envelope import InvalidMessage
from m2m.bus.publisher import PublishDropped, PublishTimeout
from m2m.cassandra import DatabaseError, DatabaseUnavailable
from m2m.errors import InvalidInput, M2MError, Unavailable
from m2m.receivers.alip.commands import AlipError
from m2m.registry.paths import InvalidPathError
from m2m.timeseries.errors import TimeSeriesError

REFUSED_INPUT = [InvalidMessage, TimeSeriesError, InvalidPathError, AlipError]
OUTAGES = [PublishDropped, PublishTimeout, DatabaseUnavailable]


def test_both_kinds_are_the_platform_s_own_errors_and_neither_is_the_other() -> None:
    assert issubclass(InvalidInput, M2MError)
    assert issubclass(Unavailable, M2MError)
    assert not issubclass(InvalidInput, Unavailable)
    assert not issubclass(Unavailable, InvalidInput)


@pytest.mark.parametrize("error", REFUSED_INPUT)
def test_input_a_rule_refuses_is_never_worth_retrying(error: type[Exception]) -> None:
    assert issubclass(error, InvalidInput)
    assert not issubclass(error, Unavailable)


@pytest.mark.parametrize("error", OUTAGES)
def test_a_service_that_did_not_do_its_part_may_do_it_later(error: type[Exception]) -> None:
    assert issubclass(error, Unavailable)
    assert not issubclass(error, InvalidInput)


def test_a_time_series_error_is_also_a_value_error_for_generic_validation() -> None:
    with pytest.raises(ValueError, match="bad record"):
        raise TimeSeriesError("bad record")


def test_cassandra_unavailable_is_still_a_database_error() -> None:
    assert issubclass(DatabaseUnavailable, DatabaseError)
    assert not issubclass(DatabaseError, Unavailable)  # a bad request is not an outage


def test_each_kind_is_caught_by_its_root_with_its_message_unchanged() -> None:
    path_error = InvalidPathError("/a//b", "it contains an empty segment ('//')")
    with pytest.raises(InvalidInput) as caught:
        raise path_error
    assert str(caught.value) == "invalid registry path '/a//b': it contains an empty segment ('//')"
    with pytest.raises(Unavailable, match=r"^nsqd did not answer$"):
        raise PublishTimeout("nsqd did not answer")
