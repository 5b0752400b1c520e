"""How long ``m2m sync check`` takes on an edge site of 10,000 devices when nothing differs.

Two throw-away keyspaces in the running Cassandra, the cloud's and the edge's, each with
an NSQ topic prefix of its own on the stack's nsqd. ``--devices`` devices are created at
the edge (``Devices.create``, two settings each, value ``site`` set on each device's
node), then every synced node's cells are copied to the cloud's keyspace with their write
times (``read_cells``, ``cell_writes``): both sides hold the same cells, as after a sync
that missed nothing. The cloud runs ``m2m serve --only sync`` (``sync.sites``), which
answers checks; the edge runs nothing, as a person who types the command finds it.

Each round times ``m2m --config EDGE sync check --json`` as a subprocess (start-up,
connections and all: the wall time a person waits), with the ``seconds`` its report gives
(the check alone: the edge's scan and the cloud's, at the same time, and the messages),
the command's CPU and the cloud serve's CPU over it. Against it, in the same round, the
lower bound of any check: one scan of the site's registry on one side,
``site_tree(database, config.sync, site, at_cloud=False)`` timed in this process. Medians
over ``--rounds`` are printed, and the ratio check / scan.

Everything is thrown away at the end, on failure too: the keyspaces, the cloud serve, the
run's files and the NSQ topics of both prefixes.

Run from the repository root:  .venv/bin/python -m bench.sync_check [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.keyspace import throwaway_keyspace
from bench.receivers import M2M, Serve
from m2m.cassandra import Database
from m2m.config import Config, dump_with_secrets, load_config, parse_config
from m2m.registry import RegistryNode
from m2m.registry.device import DEVICES, Devices
from m2m.stack import nsq
from m2m.sync.cells import cell_writes, read_cells
from m2m.sync.check import site_tree
from m2m.sync.rules import synced_node
from m2m.sync.status import SYNC_CHANNEL

SITE = "depot"
SETTINGS = {"period": "60", "mode": "eco"}
"""The settings each device is given (``define_setting``)."""
DEVICES_AT_ONCE = 200
"""Devices created concurrently, a chunk after another."""
PATHS_AT_ONCE = 2000
"""Nodes whose cells are copied at once…"""
PATHS_PER_READ = 100
"""…read by concurrent ``read_cells`` calls of this many each (one by itself asks for
100 paths at a time, one request after the other)."""
SERVE_TIMEOUT = 60.0
CHECK_TIMEOUT = 600.0


def ident(i: int) -> str:
    return f"bench:check{i:05d}"


# --- The two platforms' configurations --------------------------------------------------


@dataclass(frozen=True)
class Platforms:
    cloud: Config
    edge: Config
    cloud_file: Path
    edge_file: Path
    prefix: str
    """Every NSQ topic of the run starts with it."""


def write_config(settings: dict[str, Any], path: Path) -> Config:
    path.touch(mode=0o600)  # it may hold the Cassandra password
    path.write_text(yaml.safe_dump(settings))
    return parse_config(settings, str(path))


@contextmanager
def platforms(configured: Config, directory: Path) -> Iterator[Platforms]:
    """The cloud's and the edge's configurations, each on a throw-away keyspace (dropped
    afterwards) and a topic prefix of its own; written to files for ``m2m`` commands."""
    prefix = f"bench-check-{uuid.uuid4().hex[:8]}"
    base = dump_with_secrets(configured, exclude_defaults=True)
    for section in ("sync", "metrics", "receivers", "web"):  # nothing of the configured
        base.pop(section, None)  # platform's that would listen or link
    nsq_settings = {**base.get("nsq", {}), "nsqd_tcp_addresses": configured.nsq.nsqd_tcp_addresses}
    cloud_prefix = f"{prefix}."
    with (
        throwaway_keyspace(configured.cassandra) as cloud_cassandra,
        throwaway_keyspace(configured.cassandra) as edge_cassandra,
    ):
        cloud_settings = {
            **base,
            "cassandra": dump_with_secrets(Config(cassandra=cloud_cassandra))["cassandra"],
            "nsq": {**nsq_settings, "topic_prefix": cloud_prefix},
            "sync": {"sites": [SITE]},
        }
        edge_settings = {
            **base,
            "cassandra": dump_with_secrets(Config(cassandra=edge_cassandra))["cassandra"],
            "nsq": {**nsq_settings, "topic_prefix": f"{prefix}-edge."},
            "sync": {
                "site": SITE,
                "upstream": {
                    "nsqd_tcp_addresses": configured.nsq.nsqd_tcp_addresses,
                    "topic_prefix": cloud_prefix,
                },
            },
        }
        cloud_file, edge_file = directory / "cloud.yaml", directory / "edge.yaml"
        yield Platforms(
            write_config(cloud_settings, cloud_file),
            write_config(edge_settings, edge_file),
            cloud_file,
            edge_file,
            prefix,
        )


# --- Populating both sides ---------------------------------------------------------------


async def create_devices(database: Database, count: int) -> list[str]:
    """``count`` devices at the edge, each with its settings and ``site``; their ids."""
    devices = Devices(database)

    async def create(i: int) -> str:
        device = await devices.create(ident(i))
        for name, value in SETTINGS.items():
            await device.define_setting(name, value)
        await RegistryNode(database, f"{DEVICES}{device.id}/").set_values({"site": SITE})
        return device.id

    ids = [await create(0)]  # the default domain, once
    started = time.perf_counter()
    for start in range(1, count, DEVICES_AT_ONCE):
        chunk = range(start, min(start + DEVICES_AT_ONCE, count))
        ids += await asyncio.gather(*(create(i) for i in chunk))
        if (start // DEVICES_AT_ONCE) % 10 == 9 or len(ids) == count:
            elapsed = time.perf_counter() - started
            print(f"  {len(ids):,} devices created ({elapsed:.0f} s)", flush=True)
    return ids


async def copy_synced_cells(edge: Database, cloud: Database) -> int:
    """Every synced node of the edge written at the cloud, each cell with its write time;
    how many nodes."""
    paths: list[str] = []
    async for rows in edge.pages("SELECT path FROM registrynode", page_size=5000):
        paths += (row.path for row in rows if synced_node(row.path) is not None)
    for start in range(0, len(paths), PATHS_AT_ONCE):
        chunk = paths[start : start + PATHS_AT_ONCE]
        read = await asyncio.gather(*(
            read_cells(edge, chunk[i : i + PATHS_PER_READ])
            for i in range(0, len(chunk), PATHS_PER_READ)
        ))  # fmt: skip
        await cloud.execute_all(
            write for cells in read for node in cells.values() for write in cell_writes(node)
        )
        if (start // PATHS_AT_ONCE) % 10 == 9:
            print(f"  {start + len(chunk):,} of {len(paths):,} nodes copied", flush=True)
    return len(paths)


# --- The cloud's serve --------------------------------------------------------------------


def nsqd_stats() -> dict[str, Any]:
    url = f"http://{nsq.HOST}:{nsq.NSQD_HTTP_PORT}/stats?format=json"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats = json.load(response)
    return {topic["topic_name"]: topic for topic in stats.get("topics") or []}


def subscribed(topic: str, channel: str) -> bool:
    """Whether a consumer is on ``topic/channel`` of the stack's nsqd."""
    for entry in (nsqd_stats().get(topic) or {}).get("channels") or []:
        if entry["channel_name"] == channel and entry.get("clients"):
            return True
    return False


def start_cloud(platform: Platforms, directory: Path) -> Serve:
    """``m2m serve --only sync`` with the cloud's config, once it consumes ``sync-up``."""
    log = directory / "cloud-serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [M2M, "--config", str(platform.cloud_file), "serve", "--only", "sync"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    serve = Serve(process, {}, log, None)
    topic = f"{platform.cloud.nsq.topic_prefix}sync-up"
    deadline = time.monotonic() + SERVE_TIMEOUT
    while not subscribed(topic, SYNC_CHANNEL):
        if process.poll() is not None or time.monotonic() > deadline:
            serve.stop()
            raise RuntimeError(f"m2m serve --only sync did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return serve


# --- The measurements ---------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    wall: float
    report: dict[str, Any]
    cpu: float
    """The command's user + system CPU seconds."""
    cloud_cpu: float
    """The cloud serve's over the command."""


def run_check(platform: Platforms, cloud: Serve) -> Check:
    """``m2m sync check --json`` at the edge, as a person runs it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cloud_before = cloud.cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        [M2M, "--config", str(platform.edge_file), "sync", "check", "--json"],
        capture_output=True, timeout=CHECK_TIMEOUT,
    )  # fmt: skip
    wall = time.perf_counter() - started
    cloud_cpu = cloud.cpu_seconds() - cloud_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"m2m sync check: exit {done.returncode}, no report:\n"
            f"{done.stdout.decode()[-2000:]}{done.stderr.decode()[-3000:]}"
        ) from None
    return Check(wall, report, cpu, cloud_cpu)


async def scan_seconds(database: Database, platform: Platforms) -> tuple[float, int]:
    """One scan of the site's registry at the edge, as a check makes it: seconds, devices."""
    started = time.perf_counter()
    tree = await site_tree(database, platform.edge.sync, SITE, at_cloud=False)
    return time.perf_counter() - started, len(tree.devices)


def verify(check: Check, devices: int) -> None:
    report = check.report
    if not (
        report.get("in_sync") is True
        and report.get("devices") == devices
        and report.get("cloud_devices") == devices
    ):
        raise RuntimeError(f"the sides should hold the same {devices:,} devices:\n"
                           f"{json.dumps(report, indent=2)[:3000]}")  # fmt: skip


async def run(configured: Config, devices: int, rounds: int) -> None:
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="m2m-bench-")))
        platform = stack.enter_context(platforms(configured, directory))
        stack.callback(nsq.delete_topics, platform.prefix)
        print(f"cloud keyspace {platform.cloud.cassandra.keyspace}, edge keyspace "
              f"{platform.edge.cassandra.keyspace}, topics {platform.prefix}…, "
              f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
        edge = await asyncio.to_thread(Database.connect, platform.edge.cassandra)
        stack.callback(edge.close)
        cloud_database = await asyncio.to_thread(Database.connect, platform.cloud.cassandra)
        stack.callback(cloud_database.close)

        print(f"creating {devices:,} devices at the edge…", flush=True)
        started = time.perf_counter()
        await create_devices(edge, devices)
        print(f"  created in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        nodes = await copy_synced_cells(edge, cloud_database)
        print(f"  {nodes:,} synced nodes copied to the cloud with their write times in "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip

        cloud = await asyncio.to_thread(start_cloud, platform, directory)
        stack.callback(cloud.stop)
        first = await asyncio.to_thread(run_check, platform, cloud)
        verify(first, devices)
        await scan_seconds(edge, platform)  # its statement prepared, as in a check
        print(f"first check (not timed): in sync, {first.wall:.2f} s", flush=True)

        checks: list[Check] = []
        scans: list[float] = []
        for index in range(rounds):
            scan, scanned = await scan_seconds(edge, platform)
            if scanned != devices:
                raise RuntimeError(f"the scan found {scanned:,} devices, not {devices:,}")
            check = await asyncio.to_thread(run_check, platform, cloud)
            verify(check, devices)
            checks.append(check)
            scans.append(scan)
            reported = float(check.report["seconds"])
            print(f"round {index + 1}: check {check.wall:.2f} s (report {reported:.2f} s, "
                  f"CPU {check.cpu:.2f} s, cloud serve CPU {check.cloud_cpu:.2f} s), "
                  f"scan {scan:.2f} s", flush=True)  # fmt: skip

        check_wall = statistics.median(check.wall for check in checks)
        reported = statistics.median(float(check.report["seconds"]) for check in checks)
        scan = statistics.median(scans)
        print(f"\nmedians of {rounds} rounds, {devices:,} devices ({nodes:,} synced nodes) "
              f"on each side, nothing differing:")  # fmt: skip
        print(f"  m2m sync check --json (wall)   {check_wall:7.2f} s")
        print(f"  its report's seconds           {reported:7.2f} s")
        print(f"  one scan of the site (edge)    {scan:7.2f} s")
        print(f"  check / scan                   {check_wall / scan:7.2f}")
        print(f"  report's seconds / scan        {reported / scan:7.2f}")
        print(json.dumps({
            "devices": devices,
            "nodes": nodes,
            "rounds": rounds,
            "check_s": round(check_wall, 3),
            "report_s": round(reported, 3),
            "scan_s": round(scan, 3),
            "check_over_scan": round(check_wall / scan, 2),
            "check_cpu_s": round(statistics.median(check.cpu for check in checks), 3),
            "cloud_serve_cpu_s": round(statistics.median(check.cloud_cpu for check in checks), 3),
        }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: as the m2m command)")
    parser.add_argument("--devices", type=int, default=10_000, help="the site's devices (10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed checks (3), medians printed")
    arguments = parser.parse_args()
    asyncio.run(run(load_config(arguments.config), arguments.devices, arguments.rounds))


if __name__ == "__main__":
    main()
