"""Input that can never be stored is refused where it enters, and stalls nothing.

Each case of the issue "One hostile line must never stall the platform", over TCP (or on
the bus) against an ``m2m serve`` of its own: the hostile device is answered ``ERR`` (or
its M2MP frame is dropped, its connection kept), a hostile bus message is finished, and
a well-behaved device's record sent right after it is stored within seconds. The workers
never requeue anything: nsqd's counters for their channels say so.
"""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from m2m.bus import topics
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import device_id_for
from m2m.services import CONVERTER_CHANNEL, STORAGE_CHANNEL
from m2m.timeseries import Record, TimeSeries
from tests.conftest import (
    Platform,
    channel_stats,
    config_with_own_topics,
    eventually,
    start_platform,
)

STORED_WITHIN = 15.0
"""Seconds a well-behaved device's record may take to be readable: a stalled storage
worker takes minutes (its backoff grew past a minute in the issue's run)."""
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def own_platform(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose workers handle only this module's traffic (topics of its own)."""
    directory = tmp_path_factory.mktemp("refused")
    running = start_platform(config_with_own_topics(config_file, directory), directory)
    yield running
    running.stop()


@pytest.fixture
async def publisher(own_platform: Platform) -> AsyncIterator[Publisher]:
    publisher = Publisher(own_platform.config.nsq)
    publisher.start()
    yield publisher
    publisher.close()


def _ident(kind: str) -> str:
    return f"{kind}:{uuid.uuid4().hex[:20]}"


async def _well_behaved_record_stored(platform: Platform, database: Database) -> None:
    """A new device sends ``D T 22.5``; it must be readable within STORED_WITHIN s."""
    ident = _ident("good")
    async with await ALIPClient.connect(HOST, platform.alip_port) as client:
        assert await client.identify(ident)
        client.send_line("D T 22.5")
        series = f"dev-{device_id_for(ident)}"
        timeseries = TimeSeries(database)

        async def records() -> list[Record]:
            return [record async for record in timeseries.records(series, "sen:temp")]

        found = await eventually(records, bool, "the good device's record", STORED_WITHIN)
        assert [record.data for record in found] == ["22.5"]


async def _nothing_requeued(platform: Platform) -> None:
    for topic, channel in ((topics.STORAGE, STORAGE_CHANNEL),
                           (topics.CONVERTER_M2MP, CONVERTER_CHANNEL)):  # fmt: skip
        stats = await channel_stats(platform.config.nsq, topic, channel)
        assert (stats["requeue_count"], stats["timeout_count"]) == (0, 0), (topic, stats)


async def test_a_listed_sensor_named_dot_dot_is_refused_and_stalls_nothing(
    own_platform: Platform, database: Database
) -> None:
    async with await ALIPClient.connect(HOST, own_platform.alip_port) as hostile:
        assert await hostile.identify(_ident("bad"))
        hostile.send_line("D LS:.. 1")
        answer = await hostile.receive_line(prefix="ERR ")
        assert answer == """ERR Invalid listed sensor "LS:..": it contains a '..' segment"""
        await hostile.ping("still-here")  # the connection stays
        await _well_behaved_record_stored(own_platform, database)
    await _nothing_requeued(own_platform)


async def test_an_m2mp_frame_on_a_listed_sensor_named_dot_dot_is_dropped(
    own_platform: Platform, database: Database
) -> None:
    ident = _ident("bad")
    async with await M2MPClient.connect(HOST, own_platform.m2mp_port) as hostile:
        assert await hostile.identify(ident)
        hostile.send_data("lsen:..", b"1")
        hostile.send_array("lsen:..", [struct.pack(">I", 1_700_000_000), b"1"])
        hostile.send_data("lsen:ok", b"2")
        await hostile.ping(7)  # answered: the connection stays, and what came before is safe
        await _well_behaved_record_stored(own_platform, database)
        timeseries = TimeSeries(database)
        series = f"dev-{device_id_for(ident)}"

        async def sensor_records() -> list[Record]:
            return [record async for record in timeseries.records(series)
                    if record.type.startswith("lsen:")]  # fmt: skip

        found = await eventually(sensor_records, bool, "the lsen:ok record", STORED_WITHIN)
        assert [(record.type, record.data) for record in found] == [("lsen:ok", "2")]
    await _nothing_requeued(own_platform)


async def test_a_json_value_with_a_lone_surrogate_is_answered_err_not_internal_error(
    own_platform: Platform, database: Database
) -> None:
    async with await ALIPClient.connect(HOST, own_platform.alip_port) as hostile:
        assert await hostile.identify(_ident("bad"))
        hostile.send_line('J 1700000000 sen:x {"a\\ud800": 1}')
        answer = await hostile.receive_line(prefix="ERR ")
        assert answer.startswith("ERR Invalid JSON: ") and "surrogate" in answer
        hostile.send_line('J 1700000000 sen:x {"a": "\\udfff"}')
        assert "surrogate" in await hostile.receive_line(prefix="ERR ")
        hostile.send_line("J 1700000000 sen:x " + "[" * 100 + "]" * 100)
        assert "nested deeper" in await hostile.receive_line(prefix="ERR ")
        await _well_behaved_record_stored(own_platform, database)
    assert "Internal error" not in own_platform.log.read_text()
    await _nothing_requeued(own_platform)


DATE_UUID = "3435c6ca-e6e4-11f1-a02f-02fc00000001"
NESTED = b"[" * 2000 + b"]" * 2000


def _store_ts(**fields: object) -> bytes:
    """A store_ts message, valid but for ``fields``; JSON escapes its lone surrogates."""
    body = {
        "_to": "storage",
        "_from": "tests/refused",
        "_call": "store_ts",
        "key": f"dev-{uuid.uuid4()}",
        "type": "sen:x",
        "date_uuid": DATE_UUID,
        "data": 1,
    }
    return json.dumps({**body, **fields}).encode()


def _data_simple(**fields: object) -> bytes:
    """A data_simple message, valid but for ``fields``."""
    body = {
        "_to": "converter-m2mp",
        "_from": "tests/refused",
        "_call": "data_simple",
        "device_id": str(uuid.uuid4()),
        "connection_id": "1",
        "channel": "sen:x",
        "data": "31",
    }
    return json.dumps({**body, **fields}).encode()


@pytest.mark.parametrize(
    ("topic", "body"),
    [
        (topics.STORAGE, b'{"_to":"/x","_from":"a/b","_call":"store_ts"}'),
        (topics.STORAGE, NESTED),
        (topics.STORAGE, _store_ts()[:-1] + b',"x":' + NESTED + b"}"),
        (topics.STORAGE, _store_ts(data="\ud800")),
        (topics.STORAGE, _store_ts(key="dev-\udfff")),
        (topics.STORAGE, _store_ts(type="lsen:..")),
        (topics.CONVERTER_M2MP, _data_simple(channel="sen:\ud800")),
        (topics.CONVERTER_M2MP, _data_simple(channel="lsen:..")),
    ],
    ids=[
        "to-names-no-topic",
        "nested-2000-deep",
        "field-nested-2000-deep",
        "surrogate-in-data",
        "surrogate-in-key",
        "listed-sensor-dot-dot",
        "surrogate-in-channel",
        "channel-lsen-dot-dot",
    ],
)
async def test_a_message_that_can_never_succeed_is_finished_and_stalls_nothing(
    own_platform: Platform, database: Database, publisher: Publisher, topic: str, body: bytes
) -> None:
    assert publisher.publish_body(topic, body)
    await asyncio.sleep(0.5)  # let it reach the worker first
    await _well_behaved_record_stored(own_platform, database)
    await _nothing_requeued(own_platform)
