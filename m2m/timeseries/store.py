"""The time series on Cassandra: save, read and delete records in the platform's layout.

The layout (``spec/storage.md``) is the original platform's, so both can share a keyspace.
A record is two rows in its bucket's partitions: ``(id, bucket)`` holds every type, with
the type in a column; ``(id!type, bucket)`` holds one type, its type column left unset.
The index lists the buckets of ``(id, "")`` and of ``(id, type)``; readers and deleters
walk it (newest bucket first, or oldest), so buckets of any width read the same.

Reads are lazy: one page of rows is in memory at a time, and the next bucket is only
asked for when the previous one is exhausted. A listing read a page at a time continues
after the last record it gave (``after``), so records of the same instant are neither
skipped nor repeated between pages. A record's rows are written with
``Database.write_rows``: they share unlogged batches with other records' rows when many
are written at once; how many requests are out at once is the Database's business.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from cassandra.query import UNSET_VALUE

from m2m.cassandra import Database, Row
from m2m.metrics import RECORDS_STORED
from m2m.timeseries.buckets import month_bucket
from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.index_rows import MAX_TTL, IndexRowsWritten, index_ttl
from m2m.timeseries.record import JsonValue, Record
from m2m.timeseries.rules import TYPE_SEPARATOR, check_record_type, check_series_id, encode_data
from m2m.timeseries.timerange import TimeRange
from m2m.timeseries.timeuuids import new_timeuuid, time_of, utc

Page = TypeVar("Page")

ALL_TYPES = ""
"""The index's type for the buckets of a series whatever the type."""

INSERT_ROW = (
    "INSERT INTO timeseries (id, date, time, type, data) VALUES (?, ?, ?, ?, ?) USING TTL ?"
)
"""Writes one of a record's two rows (public for ``bench/timeseries.py``, its yardstick)."""
_INSERT_INDEX_ROW = "INSERT INTO timeseries_index (id, type, date) VALUES (?, ?, ?) USING TTL ?"
_SELECT_BUCKETS = {
    False: "SELECT date FROM timeseries_index WHERE id = ? AND type = ?",
    True: "SELECT date FROM timeseries_index WHERE id = ? AND type = ? ORDER BY date ASC",
}
_ROWS_IN_RANGE = "FROM timeseries WHERE id = ? AND date = ? AND time >= ? AND time <= ?"
_SELECT_ROWS = {
    False: f"SELECT time, type, data {_ROWS_IN_RANGE}",
    True: f"SELECT time, type, data {_ROWS_IN_RANGE} ORDER BY time ASC",
}
_ROWS_BEFORE = "FROM timeseries WHERE id = ? AND date = ? AND time >= ? AND time < ?"
_ROWS_AFTER = "FROM timeseries WHERE id = ? AND date = ? AND time > ? AND time <= ?"
_SELECT_ROWS_AFTER = {  # past a cursor, strictly: newest first, before it; oldest first, after
    False: f"SELECT time, type, data {_ROWS_BEFORE}",
    True: f"SELECT time, type, data {_ROWS_AFTER} ORDER BY time ASC",
}
_SELECT_DATA = f"SELECT timeuuidAsBlob(time), data {_ROWS_IN_RANGE} ORDER BY time ASC"
_SELECT_ROW_KEYS = f"SELECT time, type {_ROWS_IN_RANGE}"
_SELECT_INDEXED_TYPES = (
    "SELECT DISTINCT id, type FROM timeseries_index WHERE id = ? ALLOW FILTERING"
)
_DELETE_ROW = "DELETE FROM timeseries WHERE id = ? AND date = ? AND time = ?"
_DELETE_ROWS_IN_RANGE = f"DELETE {_ROWS_IN_RANGE}"
_DELETE_PARTITION = "DELETE FROM timeseries WHERE id = ? AND date = ?"
_DELETE_INDEX = "DELETE FROM timeseries_index WHERE id = ? AND type = ?"
_TIME_FIELDS = struct.Struct(">IHH8x")
"""A time UUID's ``time_low``, ``time_mid`` and ``time_hi_and_version``, as bytes hold them."""
_UNIX_EPOCH_MICROSECONDS = 12_219_292_800_000_000
"""1970-01-01 in microseconds since 1582-10-15, the time UUIDs' epoch."""
DATA_PAGE_SIZE = 2_500
"""Records per page of ``data_pages``. Larger pages mean fewer round trips, but the driver
makes an object per row, and rows that live through the collection of the garbage
collector's middle generation (every ~7 000 new objects) reach the oldest one, whose
collections scan the whole heap: with 10 000 a page, a scan of 100 000 records set off
four full collections in a heap like the web service's, one or two with 2 500."""


class TimeSeries:
    """Records of every series in one keyspace; share one instance per process.

    The instance remembers the index rows it wrote (see ``index_rows``), which is what
    makes saving cost two writes per record instead of four.
    """

    def __init__(self, database: Database, page_size: int = 1000) -> None:
        self._database = database
        self._page_size = page_size
        self._index_rows = IndexRowsWritten()

    async def save(
        self,
        series_id: str,
        record_type: str,
        data: JsonValue,
        *,
        time: datetime | None = None,
        uuid: UUID | None = None,
        ttl: int | None = None,
    ) -> Record:
        """Save a record and return it; its time is ``uuid``'s, else ``time``, else now.

        ``uuid`` is for records that already have one (the bus carries ``date_uuid``);
        saving the same uuid again overwrites the record. ``ttl`` (seconds) makes every
        row written expire.
        """
        check_series_id(series_id)
        check_record_type(record_type)
        record = Record(series_id, record_type, *_time_and_uuid(time, uuid), data)
        ttl_seconds = _ttl_seconds(ttl)
        text = encode_data(data)
        bucket = month_bucket(record.time)
        typed_key = records_partition(series_id, record_type)
        requests: list[tuple[str, Sequence[Any]]] = [
            (INSERT_ROW, (series_id, bucket, record.uuid, record_type, text, ttl_seconds)),
            (INSERT_ROW, (typed_key, bucket, record.uuid, UNSET_VALUE, text, ttl_seconds)),
        ]
        index_rows = [
            row
            for row in ((series_id, ALL_TYPES, bucket), (series_id, record_type, bucket))
            if self._index_rows.needed(row, ttl_seconds)
        ]
        row_ttl = index_ttl(ttl_seconds)
        requests += [(_INSERT_INDEX_ROW, (*row, row_ttl)) for row in index_rows]
        await self._database.write_rows(requests)
        RECORDS_STORED.inc()
        for row in index_rows:
            self._index_rows.written(row, row_ttl)
        return record

    def records(
        self,
        series_id: str,
        record_type: str | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
        page_size: int | None = None,
        after: UUID | None = None,
    ) -> AsyncGenerator[Record, None]:
        """The records between ``start`` and ``end`` (inclusive), newest first by default.

        ``record_type`` None means every type. The iterator fetches a page at a time
        (``page_size`` records, else the instance's); leave it early (``break``) and the
        rest is never asked for. ``after``, a record's UUID, continues a listing past that
        record in the order asked (whether or not it still exists): Cassandra compares
        the UUIDs, so records of the same instant are told apart exactly.
        """
        _check_key(series_id, record_type)
        if limit is not None and limit < 1:
            raise TimeSeriesError(f"limit must be at least 1, not {limit}")
        if page_size is not None and page_size < 1:
            raise TimeSeriesError(f"page_size must be at least 1, not {page_size}")
        time_range = TimeRange(start, end)
        return self._records(
            series_id,
            record_type,
            _rows_query(time_range, oldest_first)
            if after is None
            else _rows_query_after(time_range, after, oldest_first),
            limit,
            oldest_first,
            page_size or self._page_size,
        )

    def data_pages(
        self,
        series_id: str,
        record_type: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        page_size: int = DATA_PAGE_SIZE,
    ) -> AsyncGenerator[tuple[list[int], list[str]], None]:
        """The records of one type between ``start`` and ``end`` (inclusive), page by page:
        their times (microseconds since the Unix epoch) and their data as stored (JSON text).

        For scans over many records, such as downsampling a year of them: no Record, UUID
        or datetime is made and no JSON decoded per record, which is most of what
        ``records`` costs, and the next page is asked for as soon as one is handed out, so
        Cassandra reads it while the caller works on this one. Each page is oldest first;
        pages come in the index's bucket order, oldest first (overlapping only if buckets
        of different widths do).
        """
        _check_key(series_id, record_type)
        if page_size < 1:
            raise TimeSeriesError(f"page_size must be at least 1, not {page_size}")
        return _read_ahead(
            self._data_pages(series_id, record_type, TimeRange(start, end), page_size)
        )

    async def types(self, series_id: str) -> list[str]:
        """The types the series has records of, sorted.

        The index is keyed by ``(id, type)``, so Cassandra cannot look up a series' types
        by its id alone: the query filters the index's partition keys. Schema 002's
        storage-attached index on ``timeseries_index (id)`` answers it in milliseconds;
        without it (a keyspace whose schema is older), Cassandra reads the keys of the
        whole index (one per series and type, about 0.3 s per 100 000 on one node), never
        records. An index row may outlive its records (a range deleted, a TTL run out): a
        type is listed only if its newest record is still there.
        """
        check_series_id(series_id)
        candidates = sorted(
            {
                row_type
                async for rows in self._database.pages(_SELECT_INDEXED_TYPES, (series_id,))
                for _, row_type in rows
            }
            - {ALL_TYPES}
        )
        newest = await asyncio.gather(*(self.last(series_id, t) for t in candidates))
        return [t for t, record in zip(candidates, newest, strict=True) if record is not None]

    async def last(self, series_id: str, record_type: str | None = None) -> Record | None:
        """The newest record of the series (of one type, or of any), if there is one."""
        async with aclosing(self.records(series_id, record_type, limit=1)) as newest:
            async for record in newest:
                return record
        return None

    async def delete(self, series_id: str, record_type: str, uuid: UUID) -> None:
        """Delete one record (both of its rows); deleting a missing record does nothing."""
        _check_key(series_id, record_type)
        moment = time_of(uuid)
        async for bucket in self._buckets(series_id, record_type, TimeRange.instant(moment)):
            await self._database.execute_all(
                [
                    (_DELETE_ROW, (series_id, bucket, uuid)),
                    (_DELETE_ROW, (records_partition(series_id, record_type), bucket, uuid)),
                ]
            )

    async def delete_range(
        self,
        series_id: str,
        record_type: str | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> int:
        """Delete the records between ``start`` and ``end`` (inclusive); how many there were.

        ``record_type`` None means every type. With both ends open, the index rows of
        what was deleted go too: all of the series' without a type, the type's with one.
        """
        _check_key(series_id, record_type)
        time_range = TimeRange(start, end)
        deleted = 0
        types_seen: set[str] = set()
        async for bucket in self._buckets(series_id, record_type, time_range):
            if record_type is None:
                deleted += await self._delete_all_types(series_id, bucket, time_range, types_seen)
            else:
                deleted += await self._delete_one_type(series_id, record_type, bucket, time_range)
        if time_range.unbounded:
            index_types = types_seen | {record_type or ALL_TYPES}
            await self._database.execute_all(
                (_DELETE_INDEX, (series_id, index_type)) for index_type in index_types
            )
            self._index_rows.forget(series_id)
        return deleted

    async def delete_series(self, series_id: str) -> int:
        """Delete every record of the series and its index rows; how many records there were."""
        return await self.delete_range(series_id)

    async def _records(
        self,
        series_id: str,
        record_type: str | None,
        query: _RowsQuery | None,
        limit: int | None,
        oldest_first: bool,
        page_size: int,
    ) -> AsyncGenerator[Record, None]:
        if query is None:
            return
        partition_key = records_partition(series_id, record_type)
        remaining = limit
        async with aclosing(
            self._buckets(series_id, record_type, query.time_range, oldest_first)
        ) as buckets:
            async for bucket in buckets:
                pages = self._database.pages(
                    query.cql,
                    (partition_key, bucket, *query.bounds),
                    page_size if remaining is None else min(remaining, page_size),
                )
                async with aclosing(pages):
                    async for rows in pages:
                        for uuid, row_type, text in rows:
                            yield Record(
                                series_id,
                                row_type if record_type is None else record_type,
                                time_of(uuid),
                                uuid,
                                _decode(text, series_id, uuid),
                            )
                            if remaining is not None:
                                remaining -= 1
                                if remaining == 0:
                                    return

    async def _data_pages(
        self, series_id: str, record_type: str, time_range: TimeRange, page_size: int
    ) -> AsyncGenerator[tuple[list[int], list[str]], None]:
        bounds = (time_range.lowest_uuid, time_range.highest_uuid)
        typed_key = records_partition(series_id, record_type)
        async with aclosing(self._buckets(series_id, record_type, time_range, True)) as buckets:
            async for bucket in buckets:
                pages = self._database.pages(_SELECT_DATA, (typed_key, bucket, *bounds), page_size)
                async with aclosing(pages):
                    async for rows in pages:
                        yield (
                            _unix_microseconds(b"".join(row[0] for row in rows)),
                            [row[1] for row in rows],
                        )

    async def _buckets(
        self,
        series_id: str,
        record_type: str | None,
        time_range: TimeRange,
        oldest_first: bool = False,
    ) -> AsyncGenerator[str, None]:
        """The index's buckets of the series (or of one type) that may hold the range."""
        pages = self._database.pages(
            _SELECT_BUCKETS[oldest_first], (series_id, record_type or ALL_TYPES)
        )
        async with aclosing(pages):
            async for rows in pages:
                for (bucket,) in rows:
                    if time_range.may_be_in(bucket):
                        yield bucket

    async def _delete_all_types(
        self, series_id: str, bucket: str, time_range: TimeRange, types_seen: set[str]
    ) -> int:
        """Delete a bucket's records of any type; ``types_seen`` gains their types."""
        deleted = 0
        types_in_bucket: set[str] = set()
        async for rows in self._row_keys(series_id, bucket, time_range):
            deleted += len(rows)
            types_in_bucket.update(row_type for _, row_type in rows)
            if not time_range.unbounded:  # else whole partitions go, below
                await self._database.execute_all(
                    (_DELETE_ROW, (records_partition(series_id, row_type), bucket, uuid))
                    for uuid, row_type in rows
                )
        if time_range.unbounded:
            keys = [series_id, *(records_partition(series_id, t) for t in types_in_bucket)]
            await self._database.execute_all((_DELETE_PARTITION, (key, bucket)) for key in keys)
        else:
            await self._delete_rows_in_range(series_id, bucket, time_range)
        types_seen |= types_in_bucket
        return deleted

    async def _delete_one_type(
        self, series_id: str, record_type: str, bucket: str, time_range: TimeRange
    ) -> int:
        """Delete a bucket's records of one type: the type's rows and their twins."""
        typed_key = records_partition(series_id, record_type)
        deleted = 0
        async for rows in self._row_keys(typed_key, bucket, time_range):
            deleted += len(rows)
            await self._database.execute_all(
                (_DELETE_ROW, (series_id, bucket, uuid)) for uuid, _ in rows
            )
        await self._delete_rows_in_range(typed_key, bucket, time_range)
        return deleted

    def _row_keys(
        self, partition_key: str, bucket: str, time_range: TimeRange
    ) -> AsyncGenerator[list[Row], None]:
        return self._database.pages(
            _SELECT_ROW_KEYS,
            (partition_key, bucket, time_range.lowest_uuid, time_range.highest_uuid),
            self._page_size,
        )

    async def _delete_rows_in_range(
        self, partition_key: str, bucket: str, time_range: TimeRange
    ) -> None:
        await self._database.execute(
            _DELETE_ROWS_IN_RANGE,
            (partition_key, bucket, time_range.lowest_uuid, time_range.highest_uuid),
        )


@dataclass(frozen=True)
class _RowsQuery:
    """How a listing reads: the buckets that may hold ``time_range``, and in each the
    rows of ``cql`` between ``bounds`` (two time UUIDs)."""

    time_range: TimeRange
    cql: str
    bounds: tuple[UUID, UUID]


def _rows_query(time_range: TimeRange, oldest_first: bool) -> _RowsQuery:
    bounds = (time_range.lowest_uuid, time_range.highest_uuid)
    return _RowsQuery(time_range, _SELECT_ROWS[oldest_first], bounds)


def _rows_query_after(time_range: TimeRange, after: UUID, oldest_first: bool) -> _RowsQuery | None:
    """The rows of ``time_range`` that come after ``after`` in the order read (None: none).

    The bound on the cursor's side becomes the cursor itself, exclusive, unless the
    cursor lies beyond the range's own bound on that side: then every row of the range
    comes after it.
    """
    moment = time_of(after)
    start, end = time_range.start, time_range.end
    if oldest_first:
        if end is not None and moment > end:
            return None
        if start is not None and moment < start:
            return _rows_query(time_range, oldest_first)
        narrowed = TimeRange(moment, end)
        return _RowsQuery(narrowed, _SELECT_ROWS_AFTER[True], (after, narrowed.highest_uuid))
    if start is not None and moment < start:
        return None
    if end is not None and moment > end:
        return _rows_query(time_range, oldest_first)
    narrowed = TimeRange(start, moment)
    return _RowsQuery(narrowed, _SELECT_ROWS_AFTER[False], (narrowed.lowest_uuid, after))


async def _read_ahead(pages: AsyncGenerator[Page, None]) -> AsyncGenerator[Page, None]:
    """The pages of ``pages``, each asked for as soon as the one before it is handed out."""
    ahead = asyncio.ensure_future(anext(pages, None))
    try:
        while (page := await ahead) is not None:
            ahead = asyncio.ensure_future(anext(pages, None))
            yield page
    finally:
        ahead.cancel()
        await asyncio.gather(ahead, return_exceptions=True)  # a page nobody will read
        await pages.aclose()


def _unix_microseconds(time_uuids: bytes) -> list[int]:
    """The times of time UUIDs (their 16 bytes each, end to end), in microseconds since the
    Unix epoch: what ``time_of`` gives, without a UUID or a datetime per record."""
    return [
        ((high & 0x0FFF) << 48 | mid << 32 | low) // 10 - _UNIX_EPOCH_MICROSECONDS
        for low, mid, high in _TIME_FIELDS.iter_unpack(time_uuids)
    ]


def _check_key(series_id: str, record_type: str | None) -> None:
    check_series_id(series_id)
    if record_type is not None:
        check_record_type(record_type)


def records_partition(series_id: str, record_type: str | None) -> str:
    """The partition key of a series' records: of every type (None), or of one type."""
    return series_id if record_type is None else f"{series_id}{TYPE_SEPARATOR}{record_type}"


def _time_and_uuid(time: datetime | None, uuid: UUID | None) -> tuple[datetime, UUID]:
    if uuid is not None:
        if time is not None:
            raise TimeSeriesError("give a record's time or its uuid, not both")
        return time_of(uuid), uuid
    moment = datetime.now(UTC) if time is None else utc(time)
    return moment, new_timeuuid(moment)


def _ttl_seconds(ttl: int | None) -> int:
    """The TTL as CQL takes it: 0 for none."""
    if ttl is None:
        return 0
    if not 1 <= ttl <= MAX_TTL:
        raise TimeSeriesError(f"ttl must be 1 to {MAX_TTL} seconds, not {ttl}")
    return ttl


def _decode(text: str, series_id: str, uuid: UUID) -> JsonValue:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as exc:
        raise TimeSeriesError(f"record {uuid} of {series_id} holds invalid JSON: {exc}") from None
