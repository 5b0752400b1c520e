"""TimeSeries against the real Cassandra: layout, order, bounds, limits, TTL, deletes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from m2m.cassandra import Database, Row
from m2m.timeseries import Record, TimeSeries, TimeSeriesError
from m2m.timeseries.timeuuids import new_timeuuid

NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@pytest.fixture
def series(database: Database) -> TimeSeries:
    return TimeSeries(database)


@pytest.fixture
def series_id() -> str:
    return f"dev-{uuid.uuid4()}"


async def read(
    series: TimeSeries, series_id: str, record_type: str | None = None, **options: Any
) -> list[Record]:
    return [record async for record in series.records(series_id, record_type, **options)]


async def times(
    series: TimeSeries, series_id: str, record_type: str | None = None, **options: Any
) -> list[datetime]:
    return [record.time for record in await read(series, series_id, record_type, **options)]


async def index_buckets(database: Database, series_id: str, index_type: str) -> list[str]:
    rows = await database.execute(
        "SELECT date FROM timeseries_index WHERE id = ? AND type = ?", (series_id, index_type)
    )
    return [row.date for row in rows]


async def partition(database: Database, key: str, bucket: str) -> list[Row]:
    return await database.execute(
        "SELECT time, type, data FROM timeseries WHERE id = ? AND date = ?", (key, bucket)
    )


async def save_all(
    series: TimeSeries, series_id: str, moments: Sequence[datetime], record_type: str = "sen:t"
) -> list[Record]:
    return list(
        await asyncio.gather(
            *(series.save(series_id, record_type, {"n": i}, time=m) for i, m in enumerate(moments))
        )
    )


async def test_a_saved_record_reads_back_as_it_was_saved(
    series: TimeSeries, series_id: str
) -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    saved = await series.save(series_id, "sen:loc", {"lat": 48.85, "lon": 2.35}, time=moment)
    assert saved == Record(series_id, "sen:loc", moment, saved.uuid, {"lat": 48.85, "lon": 2.35})
    assert await read(series, series_id) == [saved]
    assert await read(series, series_id, "sen:loc") == [saved]
    assert await series.last(series_id) == saved


async def test_the_layout_is_the_original_platforms(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    saved = await series.save(series_id, "sen:loc", [1, "two"], time=NEW_YEAR)
    assert [tuple(r) for r in await partition(database, series_id, "2026-01")] == [
        (saved.uuid, "sen:loc", '[1,"two"]')
    ]
    assert [tuple(r) for r in await partition(database, f"{series_id}!sen:loc", "2026-01")] == [
        (saved.uuid, None, '[1,"two"]')
    ]
    assert await index_buckets(database, series_id, "") == ["2026-01"]
    assert await index_buckets(database, series_id, "sen:loc") == ["2026-01"]


async def test_records_on_the_edges_of_months_land_in_their_month_across_a_year_change(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    edges = [
        datetime(2025, 12, 1, tzinfo=UTC),
        NEW_YEAR - MICROSECOND,
        NEW_YEAR,
        datetime(2026, 2, 1, tzinfo=UTC) - MICROSECOND,
        datetime(2026, 2, 1, tzinfo=UTC),
    ]
    await save_all(series, series_id, edges)
    assert await index_buckets(database, series_id, "") == ["2026-02", "2026-01", "2025-12"]
    assert len(await partition(database, series_id, "2025-12")) == 2
    assert len(await partition(database, series_id, "2026-01")) == 2
    assert len(await partition(database, series_id, "2026-02")) == 1
    assert await times(series, series_id) == edges[::-1]
    assert await times(series, series_id, oldest_first=True) == edges
    assert await times(series, series_id, start=NEW_YEAR - MICROSECOND, end=NEW_YEAR) == [
        NEW_YEAR,
        NEW_YEAR - MICROSECOND,
    ]


async def test_bounds_are_inclusive_both_ways(series: TimeSeries, series_id: str) -> None:
    moments = [NEW_YEAR + timedelta(days=9 * i) for i in range(10)]  # four months
    await save_all(series, series_id, moments)
    start, end = moments[2], moments[6]
    assert await times(series, series_id, start=start, end=end) == moments[6:1:-1]
    assert await times(series, series_id, start=start, end=end, oldest_first=True) == moments[2:7]
    assert await times(series, series_id, start=moments[7]) == moments[:6:-1]
    assert await times(series, series_id, end=moments[1], oldest_first=True) == moments[:2]
    assert await times(series, series_id, start=start, end=start) == [start]
    assert (
        await times(series, series_id, start=start + MICROSECOND, end=end - MICROSECOND)
        == (moments[5:2:-1])
    )


async def test_records_of_one_type_and_of_all_types(series: TimeSeries, series_id: str) -> None:
    temperatures = await save_all(series, series_id, [NEW_YEAR, NEW_YEAR + 2 * MICROSECOND])
    locations = await save_all(series, series_id, [NEW_YEAR + MICROSECOND], "sen:loc")
    assert await read(series, series_id, "sen:t") == temperatures[::-1]
    assert await read(series, series_id, "sen:loc") == locations
    assert [r.type for r in await read(series, series_id)] == ["sen:t", "sen:loc", "sen:t"]
    assert await read(series, series_id, "sen:other") == []
    assert await series.last(series_id, "sen:loc") == locations[0]
    assert await series.last(series_id) == temperatures[1]


async def test_limits_span_buckets(series: TimeSeries, series_id: str) -> None:
    moments = [NEW_YEAR + timedelta(days=20 * i) for i in range(6)]  # four months
    await save_all(series, series_id, moments)
    assert await times(series, series_id, limit=4) == moments[:1:-1]
    assert await times(series, series_id, limit=4, oldest_first=True) == moments[:4]
    assert await times(series, series_id, "sen:t", limit=1) == [moments[-1]]
    assert await times(series, series_id, limit=100) == moments[::-1]


async def test_an_empty_series_has_no_records(series: TimeSeries, series_id: str) -> None:
    assert await read(series, series_id) == []
    assert await series.last(series_id) is None


async def test_equal_times_make_distinct_records(series: TimeSeries, series_id: str) -> None:
    saved = await save_all(series, series_id, [NEW_YEAR] * 20)
    assert len({record.uuid for record in saved}) == 20
    read_back = await read(series, series_id, start=NEW_YEAR, end=NEW_YEAR)
    assert sorted(r.data["n"] for r in read_back) == list(range(20))
    assert {r.time for r in read_back} == {NEW_YEAR}


async def test_a_given_uuid_is_the_records_identity(series: TimeSeries, series_id: str) -> None:
    date_uuid = new_timeuuid(NEW_YEAR - MICROSECOND)
    first = await series.save(series_id, "sen:t", {"v": 1}, uuid=date_uuid)
    again = await series.save(series_id, "sen:t", {"v": 2}, uuid=date_uuid)
    assert first.time == again.time == NEW_YEAR - MICROSECOND
    assert await read(series, series_id) == [again]
    python_uuid = uuid.uuid1()
    assert (await series.save(series_id, "sen:t", None, uuid=python_uuid)).uuid == python_uuid


async def test_times_in_other_zones_are_stored_in_utc(series: TimeSeries, series_id: str) -> None:
    tokyo = timezone(timedelta(hours=9))
    saved = await series.save(series_id, "sen:t", 1, time=datetime(2026, 1, 1, 8, tzinfo=tokyo))
    assert saved.time == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert (await read(series, series_id))[0].time.tzinfo is UTC
    assert await times(series, series_id, start=NEW_YEAR) == []


async def test_a_record_with_a_ttl_expires(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    await series.save(series_id, "sen:t", "short-lived", time=NEW_YEAR, ttl=2)
    lasting = await series.save(series_id, "sen:t", "lasting", time=NEW_YEAR + MICROSECOND)
    saved_at = time.monotonic()
    for _ in range(100):
        if [r.data for r in await read(series, series_id)] == ["lasting"]:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the record with a 2 s TTL is still there after 20 s")
    # The bucket's index rows were first written with a TTL; the lasting record must
    # still be found once they would have expired.
    await asyncio.sleep(max(0.0, saved_at + 2 * 2 + 1 - time.monotonic()))
    assert await read(series, series_id) == [lasting]
    assert await read(series, series_id, "sen:t") == [lasting]
    assert await read(TimeSeries(database), series_id) == [lasting]


async def test_delete_one_record_removes_both_rows(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    kept, deleted = await save_all(series, series_id, [NEW_YEAR, NEW_YEAR])
    await series.delete(series_id, "sen:t", deleted.uuid)
    assert await read(series, series_id) == [kept]
    assert await read(series, series_id, "sen:t") == [kept]
    assert len(await partition(database, f"{series_id}!sen:t", "2026-01")) == 1
    await series.delete(series_id, "sen:t", deleted.uuid)  # already gone: nothing happens


async def test_delete_a_range_of_one_type(series: TimeSeries, series_id: str) -> None:
    moments = [NEW_YEAR + timedelta(days=20 * i) for i in range(5)]
    await save_all(series, series_id, moments, "sen:t")
    locations = await save_all(series, series_id, moments, "sen:loc")
    deleted = await series.delete_range(series_id, "sen:t", start=moments[1], end=moments[3])
    assert deleted == 3
    kept = [moments[4], moments[0]]
    assert await times(series, series_id, "sen:t") == kept
    assert await read(series, series_id, "sen:loc") == locations[::-1]
    all_types = await read(series, series_id)
    assert [r.time for r in all_types if r.type == "sen:t"] == kept
    assert [r for r in all_types if r.type == "sen:loc"] == locations[::-1]


async def test_delete_a_range_of_all_types(series: TimeSeries, series_id: str) -> None:
    moments = [NEW_YEAR + timedelta(days=20 * i) for i in range(5)]
    await save_all(series, series_id, moments, "sen:t")
    await save_all(series, series_id, moments, "sen:loc")
    deleted = await series.delete_range(series_id, start=moments[1], end=moments[3])
    assert deleted == 6
    kept = [moments[4], moments[0]]
    assert await times(series, series_id, "sen:t") == kept
    assert await times(series, series_id, "sen:loc") == kept
    assert await times(series, series_id) == [moments[4], moments[4], moments[0], moments[0]]


async def test_delete_all_of_one_type_drops_its_index_rows(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    await save_all(series, series_id, [NEW_YEAR], "sen:t")
    locations = await save_all(series, series_id, [NEW_YEAR], "sen:loc")
    assert await series.delete_range(series_id, "sen:t") == 1
    assert await index_buckets(database, series_id, "sen:t") == []
    assert await read(series, series_id) == locations


async def test_delete_a_whole_series_with_its_index(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    moments = [NEW_YEAR + timedelta(days=20 * i) for i in range(4)]
    await save_all(series, series_id, moments, "sen:t")
    await save_all(series, series_id, moments, "sen:loc")
    other = f"dev-{uuid.uuid4()}"
    kept = await save_all(series, other, moments[:1])
    assert await series.delete_series(series_id) == 8
    assert await read(series, series_id) == []
    for index_type in ("", "sen:t", "sen:loc"):
        assert await index_buckets(database, series_id, index_type) == []
    for key in (series_id, f"{series_id}!sen:t", f"{series_id}!sen:loc"):
        for bucket in ("2026-01", "2026-02", "2026-03"):
            assert await partition(database, key, bucket) == []
    assert await read(series, other) == kept
    # The same process saving again must write the index rows again.
    again = await series.save(series_id, "sen:t", "again", time=NEW_YEAR)
    assert await read(series, series_id) == [again]


class PageCountingDatabase(Database):
    """The real Database, counting the pages it fetched: shows what a read asked for."""

    pages_fetched = 0

    async def pages(
        self, cql: str, params: Sequence[Any] = (), page_size: int = 1000
    ) -> AsyncGenerator[list[Row], None]:
        async for page in super().pages(cql, params, page_size):
            self.pages_fetched += 1
            yield page


async def test_a_series_of_more_than_a_year_reads_lazily_page_by_page(
    database: Database, series_id: str
) -> None:
    counting = PageCountingDatabase(database.cluster, database.session, database.keyspace, 64)
    series = TimeSeries(counting, page_size=25)
    start = datetime(2025, 1, 15, tzinfo=UTC)
    moments = [start + timedelta(hours=18 * i) for i in range(14 * 40)]  # 2025-01 … 2026-03
    await save_all(series, series_id, moments)
    assert len(await index_buckets(database, series_id, "")) == 15
    assert counting.pages_fetched == 0

    newest = series.records(series_id)
    first = await anext(newest)
    assert first.time == moments[-1]
    assert counting.pages_fetched == 2  # one page of the index, one of the newest bucket
    await newest.aclose()

    assert await times(series, series_id) == moments[::-1]
    assert await times(series, series_id, "sen:t", oldest_first=True) == moments
    assert counting.pages_fetched > 2 * len(moments) // 25


async def test_buckets_of_another_width_still_read(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    """Day buckets, as the original Go platform wrote them, beside this platform's months."""
    day_records = [NEW_YEAR - timedelta(days=1), NEW_YEAR - timedelta(days=2)]
    insert = "INSERT INTO timeseries (id, date, time, type, data) VALUES (?, ?, ?, ?, ?)"
    for moment in day_records:
        bucket, time_uuid = moment.strftime("%Y-%m-%d"), new_timeuuid(moment)
        await database.execute(insert, (series_id, bucket, time_uuid, "sen:t", '{"old":1}'))
        await database.execute(insert, (f"{series_id}!sen:t", bucket, time_uuid, None, '{"old":1}'))
        for index_type in ("", "sen:t"):
            await database.execute(
                "INSERT INTO timeseries_index (id, type, date) VALUES (?, ?, ?)",
                (series_id, index_type, bucket),
            )
    await save_all(series, series_id, [NEW_YEAR])
    expected = [NEW_YEAR, *day_records]
    assert await times(series, series_id) == expected
    assert await times(series, series_id, "sen:t", oldest_first=True) == expected[::-1]
    assert await times(series, series_id, end=day_records[0]) == day_records
    await series.delete(series_id, "sen:t", (await read(series, series_id, limit=2))[1].uuid)
    assert await times(series, series_id) == [NEW_YEAR, day_records[1]]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"time": datetime(2026, 1, 1)}, "no timezone"),
        ({"data": {1, 2}}, "not JSON"),
        ({"data": float("nan")}, "not JSON"),
        ({"series_id": "dev!1"}, "without '!'"),
        ({"series_id": ""}, "non-empty"),
        ({"record_type": ""}, "type must be non-empty"),
        ({"ttl": 0}, "ttl must be"),
        ({"uuid": uuid.uuid4()}, "not a time UUID"),
        ({"uuid": uuid.uuid1(), "time": NEW_YEAR}, "not both"),
    ],
)
async def test_bad_records_are_refused(
    series: TimeSeries, series_id: str, options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"series_id": series_id, "record_type": "sen:t", "data": {}}
    arguments.update(options)
    with pytest.raises(TimeSeriesError, match=message):
        await series.save(**arguments)
    assert await read(series, series_id) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"start": datetime(2026, 1, 1)}, "no timezone"),
        ({"end": datetime(2026, 1, 1)}, "no timezone"),
        ({"start": NEW_YEAR, "end": NEW_YEAR - MICROSECOND}, "after it ends"),
        ({"limit": 0}, "limit must be"),
    ],
)
async def test_bad_reads_are_refused_when_asked(
    series: TimeSeries, series_id: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(TimeSeriesError, match=message):
        series.records(series_id, **options)


async def test_stored_data_that_is_not_json_is_a_clear_error(
    series: TimeSeries, database: Database, series_id: str
) -> None:
    await database.execute(
        "INSERT INTO timeseries (id, date, time, type, data) VALUES (?, ?, ?, ?, ?)",
        (series_id, "2026-01", new_timeuuid(NEW_YEAR), "sen:t", "{oops"),
    )
    await database.execute(
        "INSERT INTO timeseries_index (id, type, date) VALUES (?, '', '2026-01')", (series_id,)
    )
    with pytest.raises(TimeSeriesError, match="invalid JSON"):
        await read(series, series_id)


async def test_concurrent_saves_share_batches_land_whole_and_raise_no_server_warning(
    series: TimeSeries, caplog: pytest.LogCaptureFixture
) -> None:
    """Many saves at once go out as unlogged batches: every record lands, in both of its
    partitions, and no batch crosses Cassandra's warning thresholds for batches ("Batch
    for [...] is of size", "Unlogged batch covering N partitions"), which the driver logs."""
    caplog.set_level(logging.WARNING, logger="cassandra")
    ids = [f"dev-{uuid.uuid4()}" for _ in range(40)]
    large = {"text": "x" * 1500}  # a few of these fill a batch's byte budget
    saves = [
        series.save(ids[n % len(ids)], "sen:t", large if n % 2 == 0 else {"n": n},
                    time=NEW_YEAR + n * MICROSECOND)
        for n in range(2000)
    ]  # fmt: skip
    await asyncio.gather(*saves)
    for series_id in ids:
        assert len(await read(series, series_id)) == 50
        assert len(await read(series, series_id, "sen:t")) == 50
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [text for text in warnings if "batch" in text.lower()] == []
