"""How fast ``m2m registry fsck`` checks a large registry, and in how much memory.

A registry of ``--devices`` devices laid out as ``Devices.create`` lays them out (the
device node with its ten children, its by-ident entry, its place in the default domain),
every tenth device with records in two month buckets, a few files, and one corruption
of each kind fsck knows, written in bulk (``Database.write_rows``: four times the rate of
``execute_all`` for rows this small). Then ``m2m registry fsck`` runs as a subprocess, as
a person runs it: its wall time and peak RSS are printed beside the floor of any full
check, the bare driver paging through the three tables fsck reads (``registrynode``,
``registrynodechildren``, ``timeseries_index``), and beside the peak RSS of a command
that reads one node; ``fsck --repair`` runs after it.

Everything happens in a throw-away keyspace (the configured one with a random suffix),
dropped at the end.

Run from the repository root:  .venv/bin/python -m bench.fsck [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.keyspace import throwaway_keyspace
from m2m.blobstore import open_blob
from m2m.cassandra import Database
from m2m.config import CassandraConfig, Config, dump_with_secrets, load_config
from m2m.registry import RegistryNode
from m2m.registry.device import BY_IDENT, DEVICE_CHILDREN, DEVICES, device_id_for
from m2m.registry.domain import DEFAULT_DOMAIN, Domains
from m2m.timeseries import TimeSeries

M2M = str(Path(sys.executable).parent / "m2m")
TIME = "/usr/bin/time"
"""GNU time: the peak RSS of the command itself (a forked child's rusage would count the
pages it shared with this process before it ran ``m2m``)."""
DEVICES_PER_WRITE = 1_000
"""Devices whose rows are written at once."""
SERIES_EVERY = 10
"""Every this many devices has records."""
MONTHS = (datetime(2025, 1, 15, tzinfo=UTC), datetime(2025, 2, 15, tzinfo=UTC))
FILES = 5
FILE_BYTES = 1024 * 1024
PAGE_SIZE = 1000

_NODE = "INSERT INTO registrynode (path, status, values) VALUES (?, 100, ?)"
_LISTING = "INSERT INTO registrynodechildren (path, name) VALUES (?, ?)"
_DOMAIN_MEMBER = "UPDATE registrynode SET values = values + ? WHERE path = ?"

Request = tuple[str, Sequence[Any]]


def ident(i: int) -> str:
    return f"imei:{i:015d}"


def device_rows(i: int, domain_id: str) -> Iterator[Request]:
    """The rows of device ``i``, as ``Devices.create`` writes them (its domain's aside)."""
    name = ident(i)
    device_id = device_id_for(name)
    path = f"{DEVICES}{device_id}/"
    yield _NODE, (path, {"ident": name, "domain": domain_id})
    yield _LISTING, (DEVICES, device_id)
    for child in DEVICE_CHILDREN:
        values = {"interval": "60"} if child == "settings" else {}
        yield _NODE, (f"{path}{child}/", values)
        yield _LISTING, (path, child)
    yield _NODE, (f"{BY_IDENT}{name}/", {"id": device_id})
    yield _LISTING, (BY_IDENT, name)


async def build(database: Database, devices: int) -> None:
    domain = await Domains(database).get_or_create(DEFAULT_DOMAIN)
    await RegistryNode(database, BY_IDENT).create()
    for start in range(0, devices, DEVICES_PER_WRITE):
        chunk = range(start, min(start + DEVICES_PER_WRITE, devices))
        members = {device_id_for(ident(i)): "" for i in chunk}
        await database.write_rows(
            [
                (_DOMAIN_MEMBER, (members, domain.devices_node.path)),
                *(request for i in chunk for request in device_rows(i, domain.id)),
            ]
        )
    series = TimeSeries(database)
    for start in range(0, devices, SERIES_EVERY * 100):
        await asyncio.gather(
            *(
                series.save(f"dev-{device_id_for(ident(i))}", "sen:loc", {"v": i}, time=moment)
                for i in range(start, min(start + SERIES_EVERY * 100, devices), SERIES_EVERY)
                for moment in MONTHS
            )
        )
    for k in range(FILES):
        async with open_blob(database, f"/firmware/bench-{k}/file/", "w") as blob:
            await blob.write(os.urandom(FILE_BYTES))


def corruptions() -> list[tuple[str, Request]]:
    """One corruption of each kind (what fsck should find, and the CQL that breaks it)."""
    device = [f"{DEVICES}{device_id_for(ident(i))}/" for i in range(3)]
    return [
        ("orphan-child", (_LISTING, (device[0], "ghost"))),
        ("deleted-listed", ("UPDATE registrynode SET status = 5 WHERE path = ?",
                            (f"{device[1]}commands/",))),
        ("unlisted-node", ("DELETE FROM registrynodechildren WHERE path = ? AND name = ?",
                           (device[2], "status"))),
        ("ident-missing + deleted-listed", ("UPDATE registrynode SET status = 5 WHERE path = ?",
                           (f"{BY_IDENT}{ident(3)}/",))),
        ("orphan-child + ident-missing", ("DELETE FROM registrynode WHERE path = ?",
                                          (f"{BY_IDENT}{ident(4)}/",))),
        ("ident-mismatch + ident-dangling", (
            "UPDATE registrynode SET values['id'] = ? WHERE path = ?",
            (str(uuid.uuid4()), f"{BY_IDENT}{ident(5)}/"),
        )),
        ("blob-blocks-missing", ("DELETE FROM registrynodedata WHERE path = ? AND block = ?",
                                 ("/firmware/bench-0/file/", 1))),
        ("blob-size-mismatch", ("UPDATE registrynodedata SET data = ? WHERE path = ? AND block = ?",
                                (b"short", "/firmware/bench-1/file/", 1))),
        ("ts-index-orphan", ("INSERT INTO timeseries_index (id, type, date) VALUES (?, ?, ?)",
                             (f"dev-{device_id_for(ident(0))}", "sen:loc", "2020-01"))),
        ("blob-metadata-invalid", ("UPDATE registrynode SET values['fsize'] = ? WHERE path = ?",
                                   ("many", "/firmware/bench-2/file/"))),
        ("invalid-path", (_NODE, ("no-slash", {}))),
    ]  # fmt: skip


def bare_paging(database: Database) -> dict[str, tuple[int, float]]:
    """Each table fsck reads, paged through whole by the bare driver: rows and seconds."""
    session = database.session
    spent = {}
    for table, columns in (
        ("registrynode", "path, status"),
        ("registrynodechildren", "path, name"),
        ("timeseries_index", "id, type, date"),
    ):
        statement = session.prepare(f"SELECT {columns} FROM {database.keyspace}.{table}").bind(())
        statement.fetch_size = PAGE_SIZE
        started = time.perf_counter()
        rows = sum(1 for _ in session.execute(statement))
        spent[table] = rows, time.perf_counter() - started
    return spent


def run_m2m(config_file: Path, *args: str) -> tuple[float, int, int, str]:
    """``m2m --config FILE ARGS``: wall seconds, peak RSS (KiB, from ``/usr/bin/time``),
    exit status, and what it printed on stderr but progress lines."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        command = [TIME, "-f", "%M", "-o", str(rss_file), M2M, "--config", str(config_file)]
        started = time.perf_counter()
        done = subprocess.run([*command, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - started
        rss = int(rss_file.read_text().split()[-1])
    lines = done.stderr.decode().splitlines()
    summary = "\n".join(f"  {line}" for line in lines if "resume with" not in line)
    return wall, rss, done.returncode, summary


async def run(configured: CassandraConfig, devices: int) -> None:
    with throwaway_keyspace(configured) as cassandra, tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "m2m.yaml"
        config_file.touch(mode=0o600)  # it may hold the Cassandra password
        settings = dump_with_secrets(Config(cassandra=cassandra), include={"cassandra"})
        config_file.write_text(yaml.safe_dump(settings))
        database = Database.connect(cassandra)
        try:
            print(f"building {devices:,} devices in {cassandra.keyspace}…", flush=True)
            started = time.perf_counter()
            await build(database, devices)
            print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
            for what, (cql, params) in corruptions():
                await database.execute(cql, params)
                print(f"  corrupted: {what}")
            baseline = await asyncio.to_thread(bare_paging, database)
        finally:
            database.close()
        floor = sum(seconds for _, seconds in baseline.values())
        print("\nbare driver, paging whole tables (the floor of a full check):")
        for table, (rows, seconds) in baseline.items():
            print(f"  {table:<22} {rows:>10,} rows  {seconds:6.1f} s")
        print(f"  {'together':<22} {'':>10}       {floor:6.1f} s")
        *_, rss, _, _ = run_m2m(config_file, "registry", "get", BY_IDENT)
        print(f"\nm2m registry get {BY_IDENT}: peak RSS {rss / 1024:.0f} MiB")
        for args in (("registry", "fsck"), ("registry", "fsck", "--repair")):
            wall, rss, status, summary = run_m2m(config_file, *args)
            print(
                f"\nm2m {' '.join(args)}: exit {status}, {wall:.1f} s "
                f"({wall / floor:.1f} times the floor), peak RSS {rss / 1024:.0f} MiB"
            )
            print(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: as the m2m command)")
    parser.add_argument("--devices", type=int, default=100_000, help="registry size (100,000)")
    arguments = parser.parse_args()
    asyncio.run(run(load_config(arguments.config).cassandra, arguments.devices))


if __name__ == "__main__":
    main()
