"""The time series' pure helpers: time UUIDs, bucket names, ranges, the index-row memory."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from m2m.timeseries import TimeRange, TimeSeriesError
from m2m.timeseries.buckets import may_hold, month_bucket
from m2m.timeseries.index_rows import MAX_TTL, IndexRowsWritten, index_ttl
from m2m.timeseries.timeuuids import (
    EARLIEST,
    LATEST,
    highest_timeuuid,
    lowest_timeuuid,
    new_timeuuid,
    time_of,
    utc,
)

NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)
LAST_INSTANT_OF_2025 = NEW_YEAR - timedelta(microseconds=1)


def cassandra_order(value: uuid.UUID) -> tuple[int, bytes]:
    """How Cassandra sorts timeuuids: by time, then the last 8 bytes as signed bytes."""
    signed = bytes(byte ^ 0x80 for byte in value.bytes[8:])
    return value.time, signed


@pytest.mark.parametrize(
    ("moment", "bucket"),
    [
        (LAST_INSTANT_OF_2025, "2025-12"),
        (NEW_YEAR, "2026-01"),
        (datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC), "2026-01"),
        (datetime(2026, 2, 1, tzinfo=UTC), "2026-02"),
        (datetime(987, 6, 5, tzinfo=UTC), "0987-06"),
    ],
)
def test_month_bucket_is_the_utc_year_and_month(moment: datetime, bucket: str) -> None:
    assert month_bucket(moment) == bucket


@pytest.mark.parametrize(
    "moment",
    [NEW_YEAR, LAST_INSTANT_OF_2025, EARLIEST, LATEST, datetime(1969, 7, 20, 20, 17, tzinfo=UTC)],
)
def test_a_new_timeuuid_carries_its_time_to_the_microsecond(moment: datetime) -> None:
    value = new_timeuuid(moment)
    assert value.version == 1
    assert value.variant == uuid.RFC_4122
    assert time_of(value) == moment
    assert time_of(value).tzinfo is UTC


def test_timeuuids_of_one_instant_are_distinct() -> None:
    assert len({new_timeuuid(NEW_YEAR) for _ in range(10_000)}) == 10_000


def test_time_of_reads_uuids_made_elsewhere() -> None:
    made_by_python = uuid.uuid1()
    assert abs(time_of(made_by_python) - datetime.now(UTC)) < timedelta(minutes=1)


def test_time_of_refuses_a_uuid_that_is_not_version_1() -> None:
    with pytest.raises(TimeSeriesError, match="not a time UUID"):
        time_of(uuid.uuid4())


def test_bounds_enclose_every_uuid_of_their_microsecond_in_cassandras_order() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    low, high = lowest_timeuuid(moment), highest_timeuuid(moment)
    for _ in range(1000):
        value = new_timeuuid(moment)
        assert cassandra_order(low) <= cassandra_order(value) <= cassandra_order(high)
    neighbours = (moment - timedelta(microseconds=1), moment + timedelta(microseconds=1))
    before, after = (new_timeuuid(m) for m in neighbours)
    assert cassandra_order(before) < cassandra_order(low)
    assert cassandra_order(high) < cassandra_order(after)


def test_naive_times_are_refused() -> None:
    with pytest.raises(TimeSeriesError, match="no timezone"):
        new_timeuuid(datetime(2026, 1, 1))
    with pytest.raises(TimeSeriesError, match="no timezone"):
        TimeRange(start=datetime(2026, 1, 1))


def test_times_in_other_zones_become_utc() -> None:
    paris_winter = timezone(timedelta(hours=1))
    assert utc(datetime(2026, 1, 1, 0, 30, tzinfo=paris_winter)) == datetime(
        2025, 12, 31, 23, 30, tzinfo=UTC
    )
    assert utc(datetime(2026, 1, 1, 0, 30, tzinfo=paris_winter)).tzinfo is UTC


@pytest.mark.parametrize(
    "moment", [EARLIEST - timedelta(microseconds=1), LATEST + timedelta(microseconds=1)]
)
def test_times_a_uuid_cannot_carry_are_refused(moment: datetime) -> None:
    with pytest.raises(TimeSeriesError, match="outside what a time UUID can carry"):
        new_timeuuid(moment)


@pytest.mark.parametrize(
    ("bucket", "first", "last", "expected"),
    [
        ("2026-01", "2026-01-31", "2026-02-01", True),
        ("2026-02", "2026-01-31", "2026-02-01", True),
        ("2025-12", "2026-01-31", "2026-02-01", False),
        ("2026-03", "2026-01-31", "2026-02-01", False),
        ("2026-01", None, None, True),
        ("2026-03", "2026-01-31", None, True),
        ("2025-12", None, "2026-02-01", True),
        ("2014-03-05", "2014-03-05", "2014-03-05", True),  # day buckets (the Go platform)
        ("2014-03-04", "2014-03-05", "2014-03-31", False),
        ("2014", "2014-03-05", "2015-01-01", True),
        ("2013", "2014-03-05", "2015-01-01", False),
        ("week-11", "2014-03-05", "2014-03-05", True),  # unknown names are always read
    ],
)
def test_may_hold(bucket: str, first: str | None, last: str | None, expected: bool) -> None:
    assert may_hold(bucket, first, last) is expected


def test_a_range_is_inclusive_and_may_be_open() -> None:
    start, end = NEW_YEAR, NEW_YEAR + timedelta(days=40)
    bounded = TimeRange(start, end)
    assert bounded.lowest_uuid == lowest_timeuuid(start)
    assert bounded.highest_uuid == highest_timeuuid(end)
    assert [bounded.may_be_in(b) for b in ("2025-12", "2026-01", "2026-02", "2026-03")] == [
        False,
        True,
        True,
        False,
    ]
    assert not bounded.unbounded
    open_range = TimeRange()
    assert open_range.unbounded
    assert time_of(open_range.lowest_uuid) == EARLIEST
    assert time_of(open_range.highest_uuid) == LATEST


def test_a_range_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(TimeSeriesError, match="after it ends"):
        TimeRange(NEW_YEAR, LAST_INSTANT_OF_2025)


def test_an_instant_is_a_range_of_one_microsecond() -> None:
    instant = TimeRange.instant(NEW_YEAR)
    assert instant.start == instant.end == NEW_YEAR


ROW = ("dev-1", "sen:loc", "2026-01")


def test_an_index_row_is_needed_until_written() -> None:
    written = IndexRowsWritten()
    assert written.needed(ROW, 0)
    written.written(ROW, 0)
    assert not written.needed(ROW, 0)
    assert not written.needed(ROW, 3600)
    assert written.needed(("dev-1", "", "2026-01"), 0)


def test_an_expiring_index_row_is_rewritten_for_a_record_that_outlives_it() -> None:
    written = IndexRowsWritten()
    written.written(ROW, index_ttl(60))
    assert not written.needed(ROW, 60)
    assert written.needed(ROW, 1000)
    assert written.needed(ROW, 0)  # a record that never expires
    written.written(ROW, 0)
    assert not written.needed(ROW, 1000)
    written.written(ROW, 10)  # a shorter TTL written later does not shorten the memory
    assert not written.needed(ROW, 0)


def test_index_ttl_doubles_the_records_and_stays_within_cassandras_maximum() -> None:
    assert index_ttl(0) == 0
    assert index_ttl(60) == 120
    assert index_ttl(MAX_TTL) == MAX_TTL


def test_the_memory_is_bounded_and_forgets_its_oldest_rows() -> None:
    written = IndexRowsWritten(capacity=2)
    rows = [("dev-1", "", f"2026-0{month}") for month in (1, 2, 3)]
    for row in rows:
        written.written(row, 0)
    assert [written.needed(row, 0) for row in rows] == [True, False, False]


def test_forgetting_a_series_forgets_only_its_rows() -> None:
    written = IndexRowsWritten()
    other = ("dev-2", "", "2026-01")
    written.written(ROW, 0)
    written.written(other, 0)
    written.forget("dev-1")
    assert written.needed(ROW, 0)
    assert not written.needed(other, 0)
