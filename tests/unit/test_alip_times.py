"""The three ALIP time formats, their edges, and the clear refusal of everything else."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.receivers.alip.times import parse_device_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("0000000000", datetime(1970, 1, 1, tzinfo=UTC)),
        ("10000000000", datetime(2286, 11, 20, 17, 46, 40, tzinfo=UTC)),
        ("231114221320", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("000101000000", datetime(2000, 1, 1, tzinfo=UTC)),
        ("681231235959", datetime(2068, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("690101000000", datetime(1969, 1, 1, tzinfo=UTC)),
        ("240229120000", datetime(2024, 2, 29, 12, tzinfo=UTC)),
        ("20231114221320", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("20240229235959", datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)),
        ("20000229000000", datetime(2000, 2, 29, tzinfo=UTC)),
        ("20231114221320.5", datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        ("20231114221320,123", datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
        ("20231114221320.1234567", datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)),
    ],
)
def test_each_format_reads_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_device_time(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected unix seconds"),
        ("170000000", "expected unix seconds"),  # 9 digits
        ("1700000000000", "expected unix seconds"),  # 13 characters
        ("17000x0000", "expected unix seconds"),
        ("-170000000", "expected unix seconds"),
        ("+170000000", "expected unix seconds"),
        ("17000000٣٣", "expected unix seconds"),  # non-ASCII digits
        ("23111422132x", "expected unix seconds"),
        ("2023111422132x", "expected unix seconds"),
        ("231314221320", "month must be in 1..12"),
        ("20231314221320", "month must be in 1..12"),
        ("20230001000000", "month must be in 1..12"),
        ("230229120000", "day is out of range for month"),  # 2023 is no leap year
        ("19000229000000", "day is out of range for month"),  # nor is 1900
        ("20231114241320", "hour must be in 0..23"),
        ("20231114226000", "minute must be in 0..59"),
        ("20231114221360", "second must be in 0..59"),
        ("202311142213201", "only a fraction of a second"),
        ("20231114221320.", "only a fraction of a second"),
        ("20231114221320.12a", "only a fraction of a second"),
        ("20231114221320Z", "only a fraction of a second"),
    ],
)
def test_anything_else_is_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        parse_device_time(text)
    assert str(raised.value).startswith(f'Invalid time "{text}": ')


_TIMES = st.datetimes(
    min_value=datetime(2001, 9, 9, 1, 46, 40),  # the first 10-digit unix second
    max_value=datetime(2068, 12, 31, 23, 59, 59),  # the last year YYMMDD places in 20xx
    timezones=st.just(UTC),
).map(lambda moment: moment.replace(microsecond=0))


@given(_TIMES)
def test_the_three_formats_agree(moment: datetime) -> None:
    assert parse_device_time(str(int(moment.timestamp()))) == moment
    assert parse_device_time(moment.strftime("%y%m%d%H%M%S")) == moment
    assert parse_device_time(moment.strftime("%Y%m%d%H%M%S")) == moment


@given(st.text() | st.text(alphabet="0123456789.,", max_size=20))
def test_arbitrary_text_is_a_datetime_or_a_value_error(text: str) -> None:
    try:
        parsed = parse_device_time(text)
    except ValueError as error:
        assert str(error).startswith("Invalid time")
    else:
        assert parsed.tzinfo is UTC
