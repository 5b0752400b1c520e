"""How fast the time series write and read, against the configured Cassandra.

Writes: ``TimeSeries.save`` against its ceiling, the same two INSERTs per record issued
straight from the driver's ``execute_async`` with its callbacks, as many in flight as the
Database allows (``cassandra.max_in_flight``). ``save`` pays for the asyncio bridge and
the record handling, and gains from its rows sharing unlogged batches when many saves
are under way (``Database.write_rows``), so the ratio can pass 100 %. Reads: a series of
many records over twelve months, read whole, newest first then oldest first.

Everything happens in a throw-away keyspace (the configured one with a random suffix),
dropped at the end.

Run from the repository root:  .venv/bin/python -m bench.timeseries [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cassandra.cluster import Session
from cassandra.query import UNSET_VALUE, PreparedStatement

from bench.keyspace import throwaway_keyspace
from m2m.cassandra import Database
from m2m.config import CassandraConfig, load_config
from m2m.timeseries import TimeSeries
from m2m.timeseries.buckets import month_bucket
from m2m.timeseries.store import INSERT_ROW
from m2m.timeseries.timeuuids import new_timeuuid

START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)
DEVICES = 100
DATA = {"lat": 48.8566, "lon": 2.3522, "speed": 12.5, "sats": 9}


class Timer:
    """Wall time and this process's CPU time (both threads: the loop's and the driver's).

    On a small machine Cassandra and the client share the cores, so the wall time
    wobbles; the client's CPU per record is the steadier figure.
    """

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def report(self, label: str, count: int) -> Timer:
        rate = count / self.wall
        print(
            f"{label:<48} {rate:>9,.0f} records/s  {self.cpu / count * 1e6:>5.0f} µs CPU/record"
            f"  ({count:,} in {self.wall:.1f} s)",
            flush=True,
        )
        return self


def spread(count: int, span: timedelta) -> Iterator[datetime]:
    """``count`` times evenly over ``span`` from START."""
    step = span / count
    return (START + i * step for i in range(count))


async def save_records(
    series: TimeSeries, records: list[tuple[str, datetime]], workers: int
) -> None:
    """Save every record with ``workers`` saves at a time (each save is two requests)."""
    queue = iter(records)

    async def worker() -> None:
        for series_id, moment in queue:
            await series.save(series_id, "sen:loc", DATA, time=moment)

    await asyncio.gather(*(worker() for _ in range(workers)))


def bare_driver_writes(
    session: Session, statement: PreparedStatement, rows: list[tuple[Any, ...]], in_flight: int
) -> None:
    """The ceiling: ``statement`` for each row from driver callbacks, ``in_flight`` at a time."""
    pending = iter(rows)
    lock = threading.Lock()
    finished = threading.Event()
    outstanding = [0]
    failures: list[BaseException] = []

    def issue_next() -> None:
        with lock:
            row = next(pending, None)
            if row is None:
                if outstanding[0] == 0:
                    finished.set()
                return
            outstanding[0] += 1
        session.execute_async(statement, row).add_callbacks(completed, failed)

    def completed(_: object) -> None:
        with lock:
            outstanding[0] -= 1
        issue_next()

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        completed(None)

    for _ in range(in_flight):
        issue_next()
    finished.wait()
    if failures:
        raise failures[0]


def two_rows_per_record(records: list[tuple[str, datetime]]) -> list[tuple[Any, ...]]:
    """The rows ``save`` writes for ``records``, ready to bind (made before the clock runs)."""
    text = json.dumps(DATA, separators=(",", ":"))
    rows: list[tuple[Any, ...]] = []
    for series_id, moment in records:
        time_uuid, bucket = new_timeuuid(moment), month_bucket(moment)
        rows.append((series_id, bucket, time_uuid, "sen:loc", text, 0))
        rows.append((f"{series_id}!sen:loc", bucket, time_uuid, UNSET_VALUE, text, 0))
    return rows


async def bench_writes(database: Database, count: int, rounds: int, in_flight: int) -> None:
    """Alternate the two ways ``rounds`` times; compare the best of each."""
    records = [(f"dev-{i % DEVICES}", moment) for i, moment in enumerate(spread(count, YEAR))]
    series = TimeSeries(database)
    # Warm up, and write the index rows of every bucket: the timed saves then write the
    # same two rows per record as the bare loop.
    every_bucket = [
        (f"dev-{d}", START + timedelta(days=31 * m)) for d in range(DEVICES) for m in range(13)
    ]
    await save_records(series, every_bucket, in_flight // 2)
    rows = two_rows_per_record(records)
    # The inputs are the bench's, not the writers': keep them out of the collector's scans.
    gc.freeze()

    insert = database.prepare(INSERT_ROW)
    saves: list[Timer] = []
    bares: list[Timer] = []
    for _ in range(rounds):
        with Timer() as timer:
            await save_records(series, records, in_flight // 2)
        saves.append(timer.report("write: TimeSeries.save", count))
        with Timer() as timer:
            await asyncio.to_thread(bare_driver_writes, database.session, insert, rows, in_flight)
        bares.append(timer.report("write: bare execute_async, same two INSERTs", count))
    best_save = min(saves, key=lambda t: t.wall)
    best_bare = min(bares, key=lambda t: t.wall)
    print(
        f"write: save / bare, best of {rounds}: {best_bare.wall / best_save.wall:.0%} of the "
        f"records/s, bare needs {best_bare.cpu / best_save.cpu:.0%} of save's CPU/record"
    )


async def bench_reads(database: Database, count: int, in_flight: int) -> None:
    series = TimeSeries(database)
    series_id = f"dev-read-{uuid.uuid4()}"
    await save_records(series, [(series_id, m) for m in spread(count, YEAR)], in_flight // 2)
    for oldest_first in (False, True):
        read = 0
        with Timer() as timer:
            async for _ in series.records(series_id, oldest_first=oldest_first):
                read += 1
        assert read == count, f"read {read} of {count} records"
        order = "oldest" if oldest_first else "newest"
        timer.report(f"read: {count:,} records over 12 months, {order} first", read)


async def run(config: CassandraConfig, write_count: int, rounds: int, read_count: int) -> None:
    database = Database.connect(config)
    try:
        await bench_writes(database, write_count, rounds, config.max_in_flight)
        await bench_reads(database, read_count, config.max_in_flight)
    finally:
        database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: as the m2m command)")
    parser.add_argument(
        "--records", type=int, default=5_000, help="records written per round, each way"
    )
    parser.add_argument("--rounds", type=int, default=5, help="write rounds, each way")
    parser.add_argument(
        "--read-records", type=int, default=100_000, help="records of the read series"
    )
    arguments = parser.parse_args()

    with throwaway_keyspace(load_config(arguments.config).cassandra) as config:
        print(f"keyspace {config.keyspace}, {config.max_in_flight} requests in flight", flush=True)
        asyncio.run(run(config, arguments.records, arguments.rounds, arguments.read_records))


if __name__ == "__main__":
    main()
