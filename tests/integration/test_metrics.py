"""Metrics and health of a running ``m2m serve``, scraped as Prometheus would while devices send.

The platform runs on NSQ topics of its own, so every count it reports is these tests'
devices' doing: the counters must move by exactly what the devices sent and what landed
in Cassandra.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from m2m.cassandra import Database
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import Devices
from m2m.timeseries import TimeSeries
from tests.conftest import (
    WAIT,
    Platform,
    config_with_own_topics,
    eventually,
    run_m2m,
    start_platform,
)

HOST = "127.0.0.1"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def observed(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """An ``m2m serve`` with every service and its operations port, on topics of its own."""
    directory = tmp_path_factory.mktemp("metrics")
    platform = start_platform(config_with_own_topics(config_file, directory), directory,
                              metrics=True)  # fmt: skip
    yield platform
    platform.stop()


async def scrape(platform: Platform) -> Samples:
    async with httpx.AsyncClient(timeout=WAIT) as client:
        response = await client.get(f"{platform.metrics_url}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every label set that includes ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the series of ``name`` that include ``labels`` grew between two scrapes."""
    return total(after, name, **labels) - total(before, name, **labels)


async def test_counters_move_by_what_m2mp_devices_send_and_what_is_stored(
    observed: Platform, database: Database
) -> None:
    frames = 25
    before = await scrape(observed)
    ident = f"metrics-m2mp-{uuid.uuid4().hex[:10]}"
    async with await M2MPClient.connect(HOST, observed.m2mp_port) as device:
        assert await device.identify(ident)
        for n in range(frames):
            device.send_data("sen:temp", f"{n}".encode())
        await device.ping(1)  # answered once everything before it is on the bus
        during = await scrape(observed)
        assert value(during, "m2m_connections_open", protocol="m2mp") == 1
        assert value(during, "m2m_connections_identified", protocol="m2mp") == 1

    device_id = (await Devices(database).by_ident(ident)).id  # type: ignore[union-attr]
    series = TimeSeries(database)

    async def stored() -> int:
        return len([record async for record in series.records(f"dev-{device_id}")])

    # Its frames' records and the receiver's _server records (identified, connected,
    # disconnected), all in Cassandra.
    in_cassandra = await eventually(stored, lambda n: n >= frames + 3, "records stored")
    after = await eventually(
        lambda: scrape(observed),
        lambda s: (
            value(s, "m2m_records_stored_total") - value(before, "m2m_records_stored_total")
            >= in_cassandra
        ),
        "records counted",
    )
    grown = partial(moved, before, after)

    assert grown("m2m_frames_received_total", protocol="m2mp", kind="data") == frames
    assert grown("m2m_frames_received_total", protocol="m2mp", kind="identification_request") == 1
    assert grown("m2m_frames_received_total", protocol="m2mp", kind="device_ping") == 1
    assert grown("m2m_connections_accepted_total", protocol="m2mp") == 1
    assert value(after, "m2m_connections_open", protocol="m2mp") == 0
    assert value(after, "m2m_connections_identified", protocol="m2mp") == 0
    assert grown("m2m_records_stored_total") == in_cassandra
    assert (
        grown("m2m_consumer_handled_messages_total", topic="storage", channel="storage")
        == in_cassandra
    )
    assert (
        grown("m2m_consumer_handled_messages_total", topic="converter-m2mp", channel="converter")
        == frames
    )
    assert grown("m2m_received_bytes_total", protocol="m2mp") > frames
    assert grown("m2m_publisher_published_messages_total") >= in_cassandra + frames
    assert grown("m2m_cassandra_request_seconds_count") > 0  # rows share batches under load
    assert (
        grown("m2m_consumer_message_age_seconds_count", topic="storage", channel="storage")
        == in_cassandra
    )
    assert (
        grown("m2m_consumer_handler_seconds_count", topic="storage", channel="storage")
        == in_cassandra
    )
    assert grown("m2m_publish_latency_seconds_count") > 0
    assert total(after, "m2m_decode_errors_total") == total(before, "m2m_decode_errors_total")


async def test_alip_lines_and_refusals_are_counted(observed: Platform) -> None:
    before = await scrape(observed)
    ident = f"imei:{uuid.uuid4().hex[:16]}"
    async with await ALIPClient.connect(HOST, observed.alip_port) as device:
        assert await device.identify(ident)
        for n in range(7):
            device.send_line(f"D temp {n}")
        device.send_line("NONSENSE")
        await device.receive_line(prefix="ERR")
        await device.ping("done")
    after = await eventually(
        lambda: scrape(observed),
        lambda s: value(s, "m2m_connections_open", protocol="alip") == 0,
        "the connection closed",
    )
    grown = partial(moved, before, after)

    assert grown("m2m_frames_received_total", protocol="alip", kind="data") == 7
    assert grown("m2m_frames_received_total", protocol="alip", kind="identify") == 1
    assert grown("m2m_decode_errors_total", protocol="alip") == 1
    assert grown("m2m_connections_accepted_total", protocol="alip") == 1


async def test_readiness_and_queue_depths_are_metrics_too(observed: Platform) -> None:
    samples = await eventually(
        lambda: scrape(observed),
        lambda s: (
            value(s, "m2m_ready") == 1
            and (
                "m2m_bus_depth_messages",
                frozenset({("topic", "storage"), ("channel", "storage")}),
            )
            in s
        ),
        "m2m_ready and the storage channel's depth",
    )
    assert value(samples, "m2m_ready_check", check="cassandra") == 1
    assert value(samples, "m2m_ready_check", check="nsqd") == 1


async def test_health_answers_and_readiness_follows_nsqd(observed: Platform) -> None:
    async with httpx.AsyncClient(base_url=observed.metrics_url, timeout=WAIT) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "checks": {"cassandra": "ok", "nsqd": "ok", "receivers": "ok", "web": "ok"},
        }
        try:
            await asyncio.to_thread(run_m2m, "stack", "stop", "nsqd")
            unready = await eventually(
                lambda: client.get("/readyz"), lambda r: r.status_code == 503, "unready"
            )
            checks = unready.json()["checks"]
            assert unready.json()["status"] == "unready"
            assert "nsqd" in checks["nsqd"] and checks["cassandra"] == "ok", checks
            assert (await client.get("/healthz")).status_code == 200
        finally:
            await asyncio.to_thread(run_m2m, "stack", "up")
        await eventually(lambda: client.get("/readyz"), lambda r: r.status_code == 200, "ready")
