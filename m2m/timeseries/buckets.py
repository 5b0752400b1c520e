"""Buckets: the ``date`` part of a partition key, which splits a series into periods.

This platform writes month buckets (``YYYY-MM`` of the record's UTC time), as the
original Java platform did; its Go platform wrote day buckets (``YYYY-MM-DD``). Readers
never compute a bucket name: they list the buckets from the index and only use names to
skip those that cannot hold a time range. A name that is a date prefix (``YYYY``,
``YYYY-MM``, ``YYYY-MM-DD``) covers the times whose ISO date starts with it; any other
name might hold anything, so it is always read.
"""

from __future__ import annotations

import re
from datetime import datetime

_DATE_PREFIX = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


def month_bucket(moment: datetime) -> str:
    """The bucket this platform writes a record of ``moment`` (UTC) into."""
    return f"{moment.year:04d}-{moment.month:02d}"


def iso_date(moment: datetime) -> str:
    """``YYYY-MM-DD`` of ``moment``: what date-prefix bucket names are compared with."""
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"


def may_hold(bucket: str, first_date: str | None, last_date: str | None) -> bool:
    """Whether ``bucket`` may hold times between two ISO dates (None: unbounded)."""
    if _DATE_PREFIX.fullmatch(bucket) is None:
        return True
    width = len(bucket)
    if first_date is not None and bucket < first_date[:width]:
        return False
    return last_date is None or bucket <= last_date[:width]
