"""``/api/v1/series``: a series' record types, its records a page at a time, and plots.

A device's series (``dev-<device id>``) is visible to those who see the device; any other
series (the platform's own) to admins only. Others get 404, as if it did not exist.
Times are ISO 8601 (a time without a zone is UTC), both bounds inclusive.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import Field

from m2m.registry.device_series import device_of_series
from m2m.registry.named import EntityNotFoundError
from m2m.text import utc_text
from m2m.timeseries import JsonValue, Record, TimeRange, TimeSeries
from m2m.timeseries.downsample import Downsampler, numeric_points
from m2m.timeseries.rules import check_series_id
from m2m.web.api.models import Shape
from m2m.web.auth import Principal
from m2m.web.context import WebContext
from m2m.web.deps import Context, CurrentUser, visible_device
from m2m.web.fleet import InvalidCursorError

router = APIRouter(prefix="/series", tags=["series"])

MAX_LIMIT = 1000
MAX_POINTS = 5000
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR_TAG_BYTES = 4

Order = Literal["asc", "desc"]
From = Annotated[
    datetime | None, Query(alias="from", description="Earliest time, inclusive (ISO 8601)")
]
To = Annotated[datetime | None, Query(alias="to", description="Latest time, inclusive (ISO 8601)")]


class SeriesRecord(Shape):
    type: str
    time: str
    uuid: str = Field(description="The record's time UUID: tells apart records of one instant")
    data: JsonValue


class RecordPage(Shape):
    records: list[SeriesRecord]
    next: str | None = Field(description="Cursor of the next page; null at the end")


class PlotPoint(Shape):
    time: str = Field(description="The start of the bucket")
    min: float
    max: float
    avg: float
    last: float = Field(description="The bucket's newest value")
    count: int = Field(description="Records with a number in the bucket")


@router.get("/{key}/types", response_model=list[str])
async def types(key: str, context: Context, who: CurrentUser) -> list[str]:
    """The types of the series' records, sorted."""
    await _check_visible(context, who, key)
    return await context.timeseries.types(key)


@router.get("/{key}/records", response_model=RecordPage)
async def records(
    key: str,
    context: Context,
    who: CurrentUser,
    record_type: Annotated[
        str | None, Query(alias="type", description="Only this type (default: every type)")
    ] = None,
    start: From = None,
    end: To = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    order: Order = "desc",
    cursor: Annotated[str | None, Query(description="The `next` of the previous page")] = None,
) -> dict[str, Any]:
    """Records, newest first by default; ``next`` continues right after the last one given."""
    await _check_visible(context, who, key)
    found = [
        record
        async for record in context.timeseries.records(
            key,
            record_type,
            start=_utc(start),
            end=_utc(end),
            limit=limit + 1,  # one more tells whether there is a next page
            oldest_first=order == "asc",
            after=None if cursor is None else _decode_cursor(cursor, key, record_type, order),
        )
    ]
    page = found[:limit]
    more = len(found) > limit
    return {
        "records": [_record_row(record) for record in page],
        "next": _encode_cursor(page[-1].uuid, key, record_type, order) if more else None,
    }


@router.get("/{key}/downsample", response_model=list[PlotPoint])
async def downsample(
    key: str,
    context: Context,
    who: CurrentUser,
    record_type: Annotated[str, Query(alias="type")],
    field: Annotated[
        str | None, Query(description="The member of JSON object data to plot, e.g. `lat`")
    ] = None,
    start: From = None,
    end: To = None,
    points: Annotated[
        int, Query(ge=1, le=MAX_POINTS, description="Buckets over the range, at most")
    ] = 500,
) -> list[dict[str, Any]]:
    """The records' numbers in buckets of equal width over ``[from, to]`` (default: the
    records' own span): min, max, avg, last and count of each bucket that has any."""
    await _check_visible(context, who, key)
    series = context.timeseries
    span = await _span(series, key, record_type, _utc(start), _utc(end))
    if span is None:
        return []
    first, last = span
    sampler = Downsampler(_microseconds(first), _microseconds(last), points)
    pages = series.data_pages(key, record_type, start=first, end=last)
    async with aclosing(pages):
        async for times, texts in pages:
            sampler.add(*numeric_points(times, texts, field))
    return [
        {
            "time": utc_text(_UNIX_EPOCH + bucket.time * _MICROSECOND),
            "min": bucket.min,
            "max": bucket.max,
            "avg": bucket.avg,
            "last": bucket.last,
            "count": bucket.count,
        }
        for bucket in sampler.buckets()
    ]


async def _check_visible(context: WebContext, who: Principal, key: str) -> None:
    """404 unless ``who`` may read the series ``key`` (422 if no series can be named so)."""
    check_series_id(key)
    if who.admin:
        return
    device_id = device_of_series(key)
    if device_id is None or (await visible_device(context, who, device_id)).id != device_id:
        raise EntityNotFoundError(f"no series {key!r}")


async def _span(
    series: TimeSeries, key: str, record_type: str, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime] | None:
    """``[start, end]``, an open end closed at the oldest or newest record within; None when
    there is no record to close it at."""
    TimeRange(start, end)  # refuses a range that ends before it starts, or out of reach
    if start is None:
        start = await _time_of_first(
            series.records(key, record_type, end=end, limit=1, oldest_first=True)
        )
    if end is None and start is not None:
        end = await _time_of_first(series.records(key, record_type, start=start, limit=1))
    return None if start is None or end is None else (start, end)


async def _time_of_first(found: AsyncGenerator[Record, None]) -> datetime | None:
    async with aclosing(found) as listing:
        async for record in listing:
            return record.time
    return None


def _record_row(record: Record) -> dict[str, Any]:
    return {
        "type": record.type,
        "time": utc_text(record.time),
        "uuid": str(record.uuid),
        "data": record.data,
    }


def _utc(moment: datetime | None) -> datetime | None:
    """A time as asked for; one given without a zone is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _microseconds(moment: datetime) -> int:
    return (moment - _UNIX_EPOCH) // _MICROSECOND


# A cursor is the last record's UUID and a tag of the listing it belongs to (series, type,
# order), so a cursor of another listing is refused rather than followed somewhere else.


def _cursor_tag(key: str, record_type: str | None, order: Order) -> bytes:
    listing = "\0".join((key, record_type or "", order)).encode()
    return hashlib.blake2b(listing, digest_size=_CURSOR_TAG_BYTES).digest()


def _encode_cursor(uuid: UUID, key: str, record_type: str | None, order: Order) -> str:
    raw = uuid.bytes + _cursor_tag(key, record_type, order)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, key: str, record_type: str | None, order: Order) -> UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16 + _CURSOR_TAG_BYTES or raw[16:] != _cursor_tag(key, record_type, order):
        raise InvalidCursorError(
            f"cursor {cursor!r:.80} is not one this API gave for these records "
            "(same series, type and order)"
        )
    return UUID(bytes=raw[:16])
