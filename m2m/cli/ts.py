"""``m2m ts``: save, read and delete time series records from the command line.

Output is for scripts: records are JSON lines on stdout, everything else goes to stderr,
and a bad value is one line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import click

from m2m.cassandra import run_with_database
from m2m.cli.app import App, OneLineErrors, pass_app
from m2m.config import CassandraConfig
from m2m.timeseries import JsonValue, Record, TimeSeries

T = TypeVar("T")

_UNIX_SECONDS = re.compile(r"-?\d+(\.\d+)?")
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIME_HELP = "ISO 8601 (without a zone: UTC) or unix seconds (e.g. 1767225599.5)."


class TimeParam(click.ParamType):
    """A time given as ISO 8601 or unix seconds, read as a timezone-aware UTC datetime."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            if _UNIX_SECONDS.fullmatch(text):
                microseconds = (Decimal(text) * 1_000_000).to_integral_value()
                return _UNIX_EPOCH + timedelta(microseconds=int(microseconds))
            moment = datetime.fromisoformat(text)
        except (ValueError, OverflowError):
            self.fail(f"{text!r} is neither ISO 8601 nor unix seconds", param, ctx)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class JsonParam(click.ParamType):
    """JSON text, decoded."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON ({exc})", param, ctx)


def format_time(moment: datetime) -> str:
    """``2026-01-31T23:59:59.999000Z``: UTC, always to the microsecond, so it sorts as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_json(record: Record) -> str:
    return json.dumps(
        {
            "id": record.id,
            "type": record.type,
            "time": format_time(record.time),
            "uuid": str(record.uuid),
            "data": record.data,
        },
        ensure_ascii=False,
    )


def run_with_timeseries(config: CassandraConfig, work: Callable[[TimeSeries], Awaitable[T]]) -> T:
    """Run ``work`` on a TimeSeries over a fresh connection (see ``run_with_database``)."""
    return run_with_database(config, lambda database: work(TimeSeries(database)))


TIME = TimeParam()


def time_range_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--from`` and ``--to``, as ``start`` and ``end``."""
    command = click.option("--to", "end", type=TIME, help=f"Latest time, inclusive: {TIME_HELP}")(
        command
    )
    return click.option(
        "--from", "start", type=TIME, help=f"Earliest time, inclusive: {TIME_HELP}"
    )(command)


@click.group(cls=OneLineErrors)
def ts() -> None:
    """Time series records: id (KEY), type, time (UTC), JSON data."""


@ts.command()
@click.argument("key")
@click.argument("record_type", metavar="TYPE")
@click.argument("data", metavar="JSON", type=JsonParam())
@click.option("--time", "moment", type=TIME, help=f"The record's time (default now): {TIME_HELP}")
@click.option(
    "--ttl", type=click.IntRange(min=1), help="Expire the record after this many seconds."
)
@pass_app
def put(
    app: App, key: str, record_type: str, data: JsonValue, moment: datetime | None, ttl: int | None
) -> None:
    """Save a record; print its time UUID."""
    record = run_with_timeseries(
        app.config.cassandra,
        lambda series: series.save(key, record_type, data, time=moment, ttl=ttl),
    )
    click.echo(str(record.uuid))


@ts.command()
@click.argument("key")
@click.option("--type", "record_type", help="Only records of this type (default: every type).")
@time_range_options
@click.option("--limit", type=click.IntRange(min=1), help="At most this many records.")
@click.option("--asc", "oldest_first", is_flag=True, help="Oldest first (default: newest first).")
@pass_app
def get(
    app: App,
    key: str,
    record_type: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int | None,
    oldest_first: bool,
) -> None:
    """Print records as JSON lines: {"id", "type", "time", "uuid", "data"}.

    "time" is UTC to the microsecond, e.g. 2026-01-31T23:59:59.999000Z; "data" is the
    record's JSON as it was saved.
    """

    async def print_records(series: TimeSeries) -> None:
        records = series.records(
            key, record_type, start=start, end=end, limit=limit, oldest_first=oldest_first
        )
        async for record in records:
            click.echo(record_json(record))

    run_with_timeseries(app.config.cassandra, print_records)


@ts.command()
@click.argument("key")
@click.option("--type", "record_type", help="Only records of this type (default: every type).")
@time_range_options
@pass_app
def rm(
    app: App, key: str, record_type: str | None, start: datetime | None, end: datetime | None
) -> None:
    """Delete records; with neither a type nor a time, the whole series and its index."""
    deleted = run_with_timeseries(
        app.config.cassandra,
        lambda series: series.delete_range(key, record_type, start=start, end=end),
    )
    click.echo(f"{key}: deleted {deleted} records", err=True)
