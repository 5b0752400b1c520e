"""Losing a Cassandra node loses no accepted record (run with ``make test-cluster``).

Three real Cassandra nodes on 127.0.0.1-3 (``m2m stack up --nodes 3``), a keyspace with
three replicas, ``m2m serve`` in front. Simulated devices send records while one node is
killed (SIGKILL) and later restarted; afterwards every record a device sent is read back at
QUORUM, counted, not sampled. The single-node development stack must be down (the Makefile
target stops it), since the cluster takes its addresses and ports.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import yaml

from m2m.cassandra import Database
from m2m.config import load_config
from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import Devices, device_id_for
from m2m.timeseries import TimeSeries
from tests.conftest import run_m2m, start_platform

pytestmark = pytest.mark.cluster

DEVICES = 20
RECORDS_PER_DEVICE = 300
SEND_INTERVAL = 0.02
RECORD_TYPE = "sen:count"
IDENTIFY_TIMEOUT = 60.0
"""A first identification creates the device: about fifteen writes at quorum, with three
JVMs on this machine's two cores."""


def _cluster_config(tmp_path: Path) -> Path:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cassandra": {
                    "contact_points": ["127.0.0.1", "127.0.0.2", "127.0.0.3"],
                    "keyspace": f"m2m_cluster_{uuid.uuid4().hex[:8]}",
                    "replication": {"class": "NetworkTopologyStrategy", "datacenter1": 3},
                },
                "nsq": {"topic_prefix": "cluster-test-"},
                "stack": {"state_dir": str(tmp_path / "state")},
            }
        )
    )
    return config


async def _device(ident: str, port: int, sent: list[int], node_events: asyncio.Event) -> None:
    async with await M2MPClient.connect("127.0.0.1", port) as client:
        assert await client.identify(ident, timeout=IDENTIFY_TIMEOUT)
        for n in range(RECORDS_PER_DEVICE):
            client.send_data(RECORD_TYPE, str(n).encode())
            sent.append(n)
            await asyncio.sleep(SEND_INTERVAL)
        await client.drain()
        await node_events.wait()  # stay connected until the node is back, as a device would


async def _count(database: Database, ident: str) -> tuple[int, int]:
    """(records, distinct values) of one device's series, read at the config's consistency."""
    series = TimeSeries(database)
    values = [r.data async for r in series.records(f"dev-{device_id_for(ident)}", RECORD_TYPE)]
    return len(values), len(set(values))


def test_killing_a_node_mid_stream_loses_no_accepted_record(tmp_path: Path) -> None:
    config_file = _cluster_config(tmp_path)
    started = time.monotonic()
    run_m2m("stack", "up", "--nodes", "3", config=config_file)
    try:
        run_m2m("schema", "apply", config=config_file)
        assert "nodes agree" in run_m2m("schema", "status", config=config_file).stdout.decode()
        platform = start_platform(config_file, tmp_path)
        try:
            sent = asyncio.run(_ingest_while_a_node_dies(config_file, platform.m2mp_port))
        finally:
            platform.stop()
        read = asyncio.run(_read_back(config_file))
    finally:
        run_m2m("stack", "down", config=config_file)
    total_sent = sum(len(values) for values in sent.values())
    total_read = sum(records for records, _ in read.values())
    print(
        f"cluster test: {total_sent} records sent and accepted, {total_read} read back at "
        f"QUORUM, in {time.monotonic() - started:.0f} s"
    )
    assert total_sent == DEVICES * RECORDS_PER_DEVICE
    for ident, values in sent.items():
        assert read[ident] == (len(values), len(values)), ident


async def _ingest_while_a_node_dies(config_file: Path, port: int) -> dict[str, list[int]]:
    sent: dict[str, list[int]] = {f"clu:{uuid.uuid4().hex[:12]}": [] for _ in range(DEVICES)}
    node_back = asyncio.Event()
    devices = [
        asyncio.create_task(_device(ident, port, values, node_back))
        for ident, values in sent.items()
    ]
    duration = RECORDS_PER_DEVICE * SEND_INTERVAL
    await asyncio.sleep(duration / 3)
    await asyncio.to_thread(run_m2m, "stack", "stop", "cassandra2", "--kill", config=config_file)
    await asyncio.sleep(duration / 3)
    await asyncio.to_thread(run_m2m, "stack", "start", "cassandra2", config=config_file)
    node_back.set()
    await asyncio.gather(*devices)
    return sent


async def _read_back(config_file: Path) -> dict[str, tuple[int, int]]:
    config = load_config(config_file)
    quorum = config.cassandra.model_copy(update={"consistency": "QUORUM"})
    database = Database.connect(quorum)
    try:
        idents = await _idents(database)
        expected = DEVICES * RECORDS_PER_DEVICE
        deadline = time.monotonic() + 120
        while True:  # the workers may still be draining NSQ
            counts = {ident: await _count(database, ident) for ident in idents}
            if sum(c for c, _ in counts.values()) >= expected or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(2)
    finally:
        database.close()


async def _idents(database: Database) -> list[str]:
    return [await device.ident() for device in await Devices(database).all()]
