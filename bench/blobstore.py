"""How fast the blobstore moves a big file, next to the bare driver moving the same blocks.

The blobstore adds files on top of block rows: positions, the current block, asyncio
bridging, completeness flags. This measures what that costs: a 64 MiB file put and got
through ``open_blob``, against the same block INSERTs and SELECTs sent with the driver's
``execute_async``, as many in flight as the blobstore keeps (its write and read windows).
The goal is a ratio of at least 80 %. Client CPU per MB is printed too: the server shares
the machine, so wall-clock figures wander from run to run while CPU figures hold still.

It runs in a throw-away keyspace (created from the configuration, ``$M2M_CONFIG`` or the
defaults, under another name, and dropped at the end) against the running local stack.

Run from the repository root:  .venv/bin/python -m bench.blobstore
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cassandra.cluster import NoHostAvailable, ResponseFuture
from cassandra.connection import ConnectionBusy

from bench.keyspace import throwaway_keyspace
from m2m.blobstore import DEFAULT_BLOCK_SIZE, open_blob
from m2m.blobstore.file import READ_WINDOW, WRITE_WINDOW
from m2m.cassandra import Database
from m2m.config import CassandraConfig, load_config

FILE_SIZE = 64 * 1024 * 1024
REPEATS = 3
PAUSE_SECONDS = 2.0
"""Between runs, for the server to flush what the previous one wrote."""
MB = 1_000_000
BLOB_PATH = "/bench/blob/"
BARE_PATH = "/bench/bare/"


@dataclass(frozen=True)
class Timing:
    seconds: float
    cpu_seconds: float
    """Of this whole process: the driver's I/O thread included."""


def timed(run: Callable[[], object]) -> Timing:
    time.sleep(PAUSE_SECONDS)
    started, started_cpu = time.perf_counter(), time.process_time()
    run()
    return Timing(time.perf_counter() - started, time.process_time() - started_cpu)


def compare(label: str, blobstore: Callable[[], object], bare: Callable[[], object]) -> None:
    """Best of a few runs of each, taking turns so both meet the same server state."""
    runs = [(timed(blobstore), timed(bare)) for _ in range(REPEATS)]
    blobstore_best = min(run[0].seconds for run in runs)
    bare_best = min(run[1].seconds for run in runs)
    blobstore_cpu = min(run[0].cpu_seconds for run in runs)
    bare_cpu = min(run[1].cpu_seconds for run in runs)
    megabytes = FILE_SIZE / MB
    print(
        f"{label:<4} blobstore {megabytes / blobstore_best:7.1f} MB/s "
        f"({blobstore_cpu / megabytes * 1000:5.2f} ms CPU/MB)   "
        f"bare driver {megabytes / bare_best:7.1f} MB/s "
        f"({bare_cpu / megabytes * 1000:5.2f} ms CPU/MB)   "
        f"ratio {bare_best / blobstore_best:6.1%}"
    )


async def put_through_blobstore(database: Database, blocks: list[bytes]) -> None:
    async with open_blob(database, BLOB_PATH, "w") as blob:
        for block in blocks:
            await blob.write(block)


async def get_through_blobstore(database: Database) -> None:
    received = 0
    async with open_blob(database, BLOB_PATH) as blob:
        async for chunk in blob.chunks():
            received += len(chunk)
    assert received == FILE_SIZE


def in_window(
    database: Database, cql: str, requests: Iterable[tuple[Any, ...]], window: int
) -> list[Any]:
    """Send ``cql`` prepared with ``execute_async``, ``window`` requests outstanding at most.

    A request the driver could not send (its connection's buffer full) is sent again, as
    the blobstore does.
    """
    session = database.session
    statement = database.prepare(cql)
    outstanding: deque[tuple[tuple[Any, ...], ResponseFuture]] = deque()
    results = []

    def settle_oldest() -> None:
        params, future = outstanding.popleft()
        try:
            results.append(future.result())
        except NoHostAvailable as exc:
            if not all(isinstance(error, ConnectionBusy) for error in exc.errors.values()):
                raise
            time.sleep(0.001)
            results.append(session.execute(statement, params))

    for params in requests:
        if len(outstanding) >= window:
            settle_oldest()
        outstanding.append((params, session.execute_async(statement, params)))
    while outstanding:
        settle_oldest()
    return results


def put_bare(database: Database, blocks: list[bytes]) -> None:
    insert = "INSERT INTO registrynodedata (path, block, data) VALUES (?, ?, ?)"
    requests = ((BARE_PATH, index, block) for index, block in enumerate(blocks))
    in_window(database, insert, requests, WRITE_WINDOW)


def get_bare(database: Database, count: int) -> None:
    select = "SELECT data FROM registrynodedata WHERE path = ? AND block = ?"
    results = in_window(database, select, ((BARE_PATH, i) for i in range(count)), READ_WINDOW)
    assert sum(len(result.one().data) for result in results) == FILE_SIZE


def main() -> None:
    with throwaway_keyspace(load_config().cassandra) as config:
        compare_with_bare_driver(config)


def compare_with_bare_driver(config: CassandraConfig) -> None:
    blocks = [os.urandom(DEFAULT_BLOCK_SIZE) for _ in range(FILE_SIZE // DEFAULT_BLOCK_SIZE)]
    print(
        f"{FILE_SIZE // (1024 * 1024)} MiB in {len(blocks)} blocks of {DEFAULT_BLOCK_SIZE} bytes, "
        f"{WRITE_WINDOW} writes / {READ_WINDOW} reads in flight, best of {REPEATS}"
    )
    loop = asyncio.new_event_loop()
    database = Database.connect(config)
    try:
        compare(
            "put",
            lambda: loop.run_until_complete(put_through_blobstore(database, blocks)),
            lambda: put_bare(database, blocks),
        )
        compare(
            "get",
            lambda: loop.run_until_complete(get_through_blobstore(database)),
            lambda: get_bare(database, len(blocks)),
        )
    finally:
        database.close()
        loop.close()


if __name__ == "__main__":
    main()
