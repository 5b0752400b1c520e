"""A range of record times, both ends inclusive, as the queries and the index need it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from m2m.timeseries.buckets import iso_date, may_hold
from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.timeuuids import EARLIEST, LATEST, highest_timeuuid, lowest_timeuuid, utc


@dataclass(frozen=True)
class TimeRange:
    """From ``start`` to ``end`` (UTC, inclusive); None leaves that end open."""

    start: datetime | None = None
    end: datetime | None = None
    lowest_uuid: UUID = field(init=False, repr=False, compare=False)
    """The smallest time UUID in the range: the query's ``time >=`` bound."""
    highest_uuid: UUID = field(init=False, repr=False, compare=False)
    """The largest time UUID in the range: the query's ``time <=`` bound."""

    def __post_init__(self) -> None:
        start = None if self.start is None else utc(self.start, "start")
        end = None if self.end is None else utc(self.end, "end")
        if start is not None and end is not None and start > end:
            raise TimeSeriesError(
                f"the range starts ({start.isoformat()}) after it ends ({end.isoformat()})"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "lowest_uuid", lowest_timeuuid(start or EARLIEST))
        object.__setattr__(self, "highest_uuid", highest_timeuuid(end or LATEST))

    @classmethod
    def instant(cls, moment: datetime) -> TimeRange:
        return cls(moment, moment)

    @property
    def unbounded(self) -> bool:
        return self.start is None and self.end is None

    def may_be_in(self, bucket: str) -> bool:
        """Whether records of this range may lie in ``bucket`` (see ``buckets``)."""
        return may_hold(
            bucket,
            None if self.start is None else iso_date(self.start),
            None if self.end is None else iso_date(self.end),
        )
