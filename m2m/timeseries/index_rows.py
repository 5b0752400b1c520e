"""Which index rows this process has written, so each is written once per bucket.

Every record needs its bucket listed in the index under ``(id, "")`` and ``(id, type)``;
writing those rows for every record would triple the writes. Forgetting is harmless (a
rewrite changes nothing), so the memory is bounded and forgets its oldest entries.

With TTLs, an index row must outlive the records it lists, or they become unreachable.
An index row written for a record with a TTL gets twice that TTL, and is written again
once a new record would outlive it; a record without TTL gets an index row without TTL.
(A row written by another process with a shorter TTL can still shorten one of ours:
mixing expiring and lasting records in one series across processes is not supported.)
"""

from __future__ import annotations

import math
import time

MAX_TTL = 630_720_000
"""The longest TTL Cassandra takes: 20 years, in seconds."""

IndexRow = tuple[str, str, str]
"""``(id, type or "", bucket)``."""


def index_ttl(record_ttl: int) -> int:
    """The TTL to write an index row with for a record of ``record_ttl`` (0: none)."""
    return min(2 * record_ttl, MAX_TTL)


class IndexRowsWritten:
    """The index rows this process wrote, with when each will expire."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._expiry: dict[IndexRow, float] = {}

    def needed(self, row: IndexRow, record_ttl: int) -> bool:
        """Whether ``row`` must be written for a record with ``record_ttl`` (0: none)."""
        expiry = self._expiry.get(row)
        return expiry is None or expiry < _expiry(record_ttl)

    def written(self, row: IndexRow, ttl: int) -> None:
        """Remember that ``row`` was written with ``ttl`` (0: none)."""
        expiry = _expiry(ttl)
        if row not in self._expiry and len(self._expiry) >= self._capacity:
            del self._expiry[next(iter(self._expiry))]
        self._expiry[row] = max(expiry, self._expiry.get(row, expiry))

    def forget(self, series_id: str) -> None:
        """Forget the rows of a series whose index rows were deleted."""
        for row in [row for row in self._expiry if row[0] == series_id]:
            del self._expiry[row]


def _expiry(ttl: int) -> float:
    return math.inf if ttl == 0 else time.monotonic() + ttl
