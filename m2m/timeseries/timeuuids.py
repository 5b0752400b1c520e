"""Version-1 time UUIDs: the clustering key of every record, and the bounds of a range.

A record's UUID carries its time (100 ns ticks since 1582-10-15) and random clock
sequence and node bits, so two records of the same instant stay distinct and no MAC
address leaks. Times here are timezone-aware UTC datetimes, which count microseconds: a
UUID made from a datetime has the sub-microsecond digit 0, and reading a UUID back
drops that digit.

Cassandra orders a timeuuid by its time, then by its last 8 bytes compared as signed
bytes; the smallest UUID of an instant has 0x80 in each of those bytes and the largest
0x7f (as CQL's ``minTimeuuid``/``maxTimeuuid``). The upper bound of an instant spans its
whole microsecond, so every UUID that reads back as that instant lies within the bounds.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from uuid import UUID

from m2m.timeseries.errors import TimeSeriesError

_UUID_EPOCH = datetime(1582, 10, 15, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)
_TICKS_PER_MICROSECOND = 10
_LATEST_MICROSECONDS = (1 << 60) // _TICKS_PER_MICROSECOND - 1  # its whole microsecond fits 60 bits
_VERSION_1 = 0x1000
_RFC_4122_VARIANT = 0x8000_0000_0000_0000
_RANDOM_BITS = 62  # the 64 low bits less the variant's two
_MULTICAST_NODE = 0x0100_0000_0000  # marks a node that is not a MAC address (RFC 4122 4.5)
_LOWEST_CLOCK_AND_NODE = 0x8080_8080_8080_8080
_HIGHEST_CLOCK_AND_NODE = 0x7F7F_7F7F_7F7F_7F7F

EARLIEST = _UUID_EPOCH
"""The earliest time a time UUID can carry."""
LATEST = _UUID_EPOCH + timedelta(microseconds=_LATEST_MICROSECONDS)
"""The latest time a time UUID can carry (in the year 5236)."""


def utc(moment: datetime, what: str = "time") -> datetime:
    """``moment`` in UTC; a naive datetime is refused, since its zone would be a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise TimeSeriesError(
            f"{what} {moment.isoformat()} has no timezone: give an aware datetime (UTC)"
        )
    return moment.astimezone(UTC)


def new_timeuuid(moment: datetime) -> UUID:
    """A fresh version-1 UUID carrying ``moment``, distinct from any other of that instant."""
    clock_and_node = _RFC_4122_VARIANT | _MULTICAST_NODE | random.getrandbits(_RANDOM_BITS)
    return _timeuuid(_ticks(moment), clock_and_node)


def seeded_timeuuid(moment: datetime, seed: bytes) -> UUID:
    """The time UUID at ``moment`` whose clock sequence and node are a hash of ``seed``.

    Deterministic: the same message, delivered again, yields the same record UUID and so
    overwrites its own record, while different seeds keep records of one instant apart.
    """
    digest = int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest())
    clock_and_node = _RFC_4122_VARIANT | _MULTICAST_NODE | (digest >> 2)
    return _timeuuid(_ticks(moment), clock_and_node)


def lowest_timeuuid(moment: datetime) -> UUID:
    """The smallest time UUID, in Cassandra's order, of any record at ``moment``."""
    return _timeuuid(_ticks(moment), _LOWEST_CLOCK_AND_NODE)


def highest_timeuuid(moment: datetime) -> UUID:
    """The largest time UUID, in Cassandra's order, of any record at ``moment``."""
    return _timeuuid(_ticks(moment) + _TICKS_PER_MICROSECOND - 1, _HIGHEST_CLOCK_AND_NODE)


def time_of(uuid: UUID) -> datetime:
    """The UTC time a version-1 UUID carries, to the microsecond."""
    if (uuid.int >> 76) & 0xF != 1:  # the version nibble alone, as Cassandra checks it
        raise TimeSeriesError(f"{uuid} is not a time UUID (version 1)")
    return _UUID_EPOCH + timedelta(microseconds=uuid.time // _TICKS_PER_MICROSECOND)


def _ticks(moment: datetime) -> int:
    microseconds = (utc(moment) - _UUID_EPOCH) // _ONE_MICROSECOND
    if not 0 <= microseconds <= _LATEST_MICROSECONDS:
        raise TimeSeriesError(
            f"time {moment.isoformat()} is outside what a time UUID can carry "
            f"({EARLIEST.isoformat()} to {LATEST.isoformat()})"
        )
    return microseconds * _TICKS_PER_MICROSECOND


def _timeuuid(ticks: int, clock_and_node: int) -> UUID:
    time_low = ticks & 0xFFFF_FFFF
    time_mid = (ticks >> 32) & 0xFFFF
    time_high = (ticks >> 48) & 0x0FFF
    most_significant = (time_low << 32) | (time_mid << 16) | _VERSION_1 | time_high
    return UUID(int=(most_significant << 64) | clock_and_node)
