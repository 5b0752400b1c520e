"""What the registry journal costs the platform's registry writes (a site's, a cloud's).

With sync configured every registry write carries one more, the journal entry
(``m2m.registry.journal``). This measures the registry work of devices as a site meets
them: ``--devices`` devices registered (``Devices.create``: one logged batch writing the
device's nodes and its entries by ident and in its domain), each then given two settings
(``define_setting``: three writes, one of them a removal) and acknowledging one
(``ack_setting``). The same work runs on a Database with
the journal off and one with it on, in turns (``--rounds`` each, after a warm-up of
each), on a throw-away keyspace; medians of the wall time per device and of this
process's CPU per device, and the ratios on / off.

Run from the repository root:  .venv/bin/python -m bench.registry_journal [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from bench.keyspace import throwaway_keyspace
from m2m.cassandra import Database
from m2m.config import load_config
from m2m.registry.device import Devices

AT_ONCE = 100
"""Devices worked on concurrently."""


async def registry_work(database: Database, devices: int) -> tuple[float, float]:
    """Wall and CPU seconds per device of registering, configuring and acknowledging."""
    registry = Devices(database)
    run = uuid.uuid4().hex[:8]

    async def one(i: int) -> None:
        device = await registry.create(f"bench:journal-{run}-{i}")
        await device.define_setting("period", "60")
        await device.define_setting("mode", "eco")
        await device.ack_setting("period", "60")

    await one(-1)  # the default domain, once
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, devices, AT_ONCE):
        await asyncio.gather(*(one(i) for i in range(start, min(start + AT_ONCE, devices))))
    return (time.perf_counter() - wall) / devices, (time.process_time() - cpu) / devices


async def run(devices: int, rounds: int) -> None:
    configured = load_config(None).cassandra
    with throwaway_keyspace(configured) as cassandra:
        off = await asyncio.to_thread(Database.connect, cassandra)
        on = Database(off.cluster, off.session, off.keyspace, cassandra.max_in_flight, True)
        try:
            figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for journal in (False, True):  # warm-up: prepared statements, the JIT
                await registry_work(on if journal else off, devices // 4)
            for index in range(rounds):
                for journal in (False, True) if index % 2 == 0 else (True, False):
                    figures[journal].append(await registry_work(on if journal else off, devices))
            medians = {
                journal: (
                    statistics.median(wall for wall, _ in runs),
                    statistics.median(cpu for _, cpu in runs),
                )
                for journal, runs in figures.items()
            }
        finally:
            off.close()
    print(f"{devices:,} devices a round, {rounds} rounds each, in turns; medians per device:")
    for journal, (wall, cpu) in medians.items():
        print(f"  journal {'on ' if journal else 'off'}  {wall * 1e3:6.2f} ms wall, "
              f"{cpu * 1e6:5.0f} µs CPU")  # fmt: skip
    (wall_off, cpu_off), (wall_on, cpu_on) = medians[False], medians[True]
    print(f"  on / off  {wall_on / wall_off:.2f} wall, {cpu_on / cpu_off:.2f} CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000, help="devices a round (2,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (5)")
    arguments = parser.parse_args()
    asyncio.run(run(arguments.devices, arguments.rounds))


if __name__ == "__main__":
    main()
