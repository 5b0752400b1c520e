"""The registry's journal: which node changed when, for the sync service to send on.

When ``cassandra.registry_journal`` is on, every write of :mod:`m2m.registry.node` carries
one more: an entry naming the node, in ``registry_journal``. The sync service reads the
journal in order and sends each changed node, read back with its cells' write times, to
the other side. Present cells carry their own time there; a removal leaves nothing
readable, so its entry says what went (``removed``, ``erased`` for a whole node) and the
timestamp the removal was written with (``stamp``), which the other side applies it with.

Entries are grouped by the minute they were written in (one partition each) and ordered
by a time UUID. A reader goes over the last :data:`LOOKBACK` seconds again each time, so
entries written by a writer whose clock or request lagged are not skipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cassandra.util import uuid_from_time

from m2m.cassandra import Database

LOOKBACK = 30.0
"""Seconds of the journal a reader reads again each time (writers' clocks and requests)."""

_WRITE = (
    "INSERT INTO registry_journal (minute, time, path, stamp, removed, erased)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_READ = (
    "SELECT time, path, stamp, removed, erased FROM registry_journal"
    " WHERE minute = ? AND time > minTimeuuid(?)"
)


def now_stamp() -> int:
    """A Cassandra write timestamp for now: microseconds since the epoch."""
    return time.time_ns() // 1000


@dataclass(frozen=True)
class JournalEntry:
    time: uuid.UUID
    path: str
    stamp: int
    """The write's timestamp, in microseconds."""
    removed: frozenset[str] = frozenset()
    erased: bool = False
    """The node's rows were deleted (a hard delete): status, values, listing and data."""


def journal_write(
    path: str, stamp: int, removed: Iterable[str] = (), erased: bool = False
) -> tuple[str, tuple[object, ...]]:
    """The write that records a change of ``path`` made with timestamp ``stamp``."""
    seconds = stamp / 1_000_000
    return _WRITE, (
        int(seconds // 60),
        uuid_from_time(seconds),
        path,
        stamp,
        set(removed) or None,
        erased or None,
    )


class JournalReader:
    """Reads the entries written since a time, each once, in time order."""

    def __init__(self, database: Database, since: float) -> None:
        self._database = database
        self._since = since
        """Unix seconds: entries before it were handled (or predate the reader)."""
        self._seen: dict[uuid.UUID, float] = {}
        """The entries read within the lookback, and when each was written."""
        self._read_up_to: float | None = None
        """When the last read started, if it read everything written before then."""

    @property
    def since(self) -> float:
        return self._since

    async def read(self, limit: int = 1000) -> list[JournalEntry]:
        """The entries not read yet, oldest first: about ``limit`` at most (whole pages)."""
        now = time.time()
        start = self._since - LOOKBACK
        entries: list[JournalEntry] = []
        for minute in range(int(start // 60), int(now // 60) + 1):
            async for rows in self._database.pages(
                _READ, (minute, datetime.fromtimestamp(start, UTC)), page_size=limit
            ):
                entries.extend(
                    JournalEntry(
                        row.time,
                        row.path,
                        row.stamp,
                        frozenset(row.removed or ()),
                        bool(row.erased),
                    )
                    for row in rows
                    if row.time not in self._seen
                )
                if len(entries) >= limit:
                    break
            if len(entries) >= limit:
                break
        self._read_up_to = None if len(entries) >= limit else now
        for entry in entries:
            self._seen[entry.time] = entry.stamp / 1_000_000
        return sorted(entries, key=lambda entry: entry.time.time)

    def done(self, entries: list[JournalEntry]) -> None:
        """Those entries (the last read's) were handled: the reader moves past them, and
        past the time that read started if it read everything (an idle journal is not
        read from further back each time)."""
        stamps = (entry.stamp / 1_000_000 for entry in entries)
        self._since = max([self._since, self._read_up_to or 0.0, *stamps])
        self._seen = {key: at for key, at in self._seen.items() if at >= self._since - LOOKBACK}

    def retry(self, entries: list[JournalEntry]) -> None:
        """Those entries could not be handled: they are read again next time."""
        for entry in entries:
            self._seen.pop(entry.time, None)
