"""ALIP end to end: real TCP into a running ``m2m serve``, real NSQ, results read from Cassandra.

Every test plays one or more devices with :class:`ALIPClient` against the shared
``platform`` (fast timings: identification timeout 2 s, pings after 2 s of silence,
disconnection after 4 s), each with an ident of its own, and reads back what the
platform stored: records through :class:`TimeSeries`, settings, commands and listed
sensors through :class:`Device`. Nothing is timed for speed; stored results are polled
for (up to 30 s) because they travel through NSQ and the storage worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from m2m import __version__
from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database, run_with_database
from m2m.config import Config
from m2m.receivers.alip.client import ALIPClient
from m2m.registry.device import Device, Devices, device_id_for
from m2m.registry.firmware import Firmwares
from m2m.timeseries import JsonValue, Record, TimeSeries
from tests.conftest import Platform, start_platform

POLL_TIMEOUT = 30.0
"""Seconds to wait for a result that travels through NSQ and Cassandra."""
SHORT = 0.3
"""Seconds to wait for something that must not happen."""
LONG = 10.0
"""Seconds to wait for what the session timers do (a few seconds with the fast timing)."""

NOT_IDENTIFIED = "ERR You need to identify first !"
FIRMWARE_SIZE = 1024 * 1024 + 3
"""Two whole 512 KiB blocks and a few bytes of a third."""
BLOCK = 524288

_T = TypeVar("_T")


def new_ident() -> str:
    """A fresh ident (as ALIP wants them: ``alip:`` and 20 hex digits), one device per test."""
    return f"alip:{uuid.uuid4().hex[:20]}"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


async def eventually(probe: Callable[[], Awaitable[_T | None]], what: str) -> _T:
    """Poll `probe` until it returns something (not None, not empty), for up to 30 s."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        found = await probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not there after {POLL_TIMEOUT} s")
        await asyncio.sleep(0.1)


def unordered(values: list[JsonValue]) -> list[str]:
    """Values to compare regardless of order: records sent within one microsecond of each
    other are ordered by the random bits of their time UUIDs, not by arrival."""
    return sorted(json.dumps(value, sort_keys=True) for value in values)


async def stored(
    database: Database, device: Device, record_type: str, count: int = 1
) -> list[Record]:
    """The device's records of `record_type`, oldest first, once there are `count` of them."""
    timeseries = TimeSeries(database)

    async def probe() -> list[Record] | None:
        records = timeseries.records(device.series_id, record_type, oldest_first=True)
        found = [record async for record in records]
        return found if len(found) >= count else None

    return await eventually(probe, f"{count} {record_type} record(s) of {device.id}")


async def data_of(
    database: Database, device: Device, record_type: str, count: int = 1
) -> list[JsonValue]:
    """The data of the device's records of `record_type`, oldest first, once there are `count`."""
    return [record.data for record in await stored(database, device, record_type, count)]


# --- Devices ------------------------------------------------------------------------------


@dataclass
class Connected:
    """A device that identified: its connection and its registry entity."""

    client: ALIPClient
    ident: str
    device: Device


class Connect(Protocol):
    async def __call__(self, *, answer_server_pings: bool = True) -> ALIPClient: ...


@pytest.fixture
async def connect(platform: Platform) -> AsyncIterator[Connect]:
    """Open connections to the platform's ALIP port; all closed after the test."""
    clients: list[ALIPClient] = []

    async def open_connection(*, answer_server_pings: bool = True) -> ALIPClient:
        client = await ALIPClient.connect(
            "127.0.0.1", platform.alip_port, answer_server_pings=answer_server_pings
        )
        clients.append(client)
        return client

    yield open_connection
    for client in clients:
        async with client:
            pass


class Identified(Protocol):
    async def __call__(self, *, answer_server_pings: bool = True) -> Connected: ...


@pytest.fixture
def identified(connect: Connect, database: Database) -> Identified:
    """Connect and identify a new device."""

    async def identify(*, answer_server_pings: bool = True) -> Connected:
        ident = new_ident()
        client = await connect(answer_server_pings=answer_server_pings)
        assert await client.identify(ident) is True
        return Connected(client, ident, Device(database, device_id_for(ident)))

    return identify


@pytest.fixture
async def new_device(identified: Identified) -> Connected:
    """A device seen for the first time, past its greeting (``S GA``: it has no settings)."""
    connected = await identified()
    assert await connected.client.receive_line() == "S GA"
    return connected


@pytest.fixture
async def publisher(config: Config) -> AsyncIterator[Publisher]:
    publisher = Publisher(config.nsq)
    publisher.start()
    yield publisher
    await publisher.flush(POLL_TIMEOUT)
    publisher.close()


async def control(publisher: Publisher, device: Device, call: str) -> None:
    """Tell every receiver holding `device` to act, as the CLI or a service would."""
    to = f"{topics.RECEIVERS};device_id={device.id}"
    assert publisher.publish(Envelope.make(to, call, "tests/alip-e2e"))
    assert await publisher.flush(POLL_TIMEOUT)


# --- Identification -----------------------------------------------------------------------


async def test_a_new_device_is_accepted_created_and_asked_for_its_settings(
    connect: Connect, database: Database
) -> None:
    ident = new_ident()
    client = await connect()
    assert await client.identify(ident) is True
    assert await client.receive_line() == "S GA"
    device = await Devices(database).by_ident(ident)
    assert device is not None and device.id == device_id_for(ident)
    assert await device.ident() == ident
    server = await data_of(database, device, "_server", 2)
    assert {record["type"] for record in server} >= {"device_identified", "device_connected"}
    assert all(record["source"] == client.local_address for record in server)


async def test_malformed_idents_are_answered_err_and_the_device_may_try_again(
    connect: Connect,
) -> None:
    client = await connect()
    for line in ("ID", "ID bad", "ID IMEI:1234", "ID imei:12", "ID a:1234", "ID imei:12345 x"):
        client.send_line(line)
        assert (await client.receive_line()).startswith("ERR Invalid ident"), line
    assert await client.identify(new_ident()) is True


async def test_identifying_twice_is_answered_err(new_device: Connected) -> None:
    client = new_device.client
    client.send_line(f"ID {new_device.ident}")
    assert await client.receive_line() == "ERR You already identified !"
    client.send_line(f"ID {new_ident()}")
    assert await client.receive_line() == "ERR You already identified !"
    client.send_line("DB ID")
    assert await client.receive_line() == f"DB ID {new_device.device.id}"


RESTRICTED = (
    "D T 21.5",
    "E 1700000000 T 21.5",
    'J 1700000000 custom {"a": 1}',
    "S A name value",
    "S S name value",
    "S GA",
    "S G",
    "S G name",
    "S U name",
    "C A 0",
    "C L",
    "A 1",
    "F N firmware",
    "F S",
    "F G 0 16",
    "DB ID",
    "DB SET_SETTING name value",
    "DB ADD_COMMAND reboot",
    "DB LAST",
    "DB LAST 3",
)


async def test_every_restricted_command_needs_identification_first(connect: Connect) -> None:
    client = await connect()
    for line in RESTRICTED:
        client.send_line(line)
    assert [await client.receive_line() for _ in RESTRICTED] == [NOT_IDENTIFIED] * len(RESTRICTED)
    assert await client.identify(new_ident()) is True


async def test_time_pings_debugging_and_quit_work_before_identification(
    connect: Connect,
) -> None:
    client = await connect()
    before = int(time.time())
    client.send_line("B 7")  # answers a server ping: no answer of its own
    client.send_line("T")
    for line in ("DB SOURCE", "DB CONNECTED", "DB VERSION", "DB LOGLEVEL", "DB LOGLEVEL 9"):
        client.send_line(line)
    server_time = int((await client.receive_line()).removeprefix("T "))
    assert before - 1 <= server_time <= int(time.time()) + 1
    source, connection_id = (await client.receive_line()).removeprefix("DB SOURCE ").split(" ")
    assert source == client.local_address and connection_id.isdigit()
    # Not identified yet, so connected for less than the identification timeout (2 s).
    assert 0 <= int((await client.receive_line()).removeprefix("DB CONNECTED ")) <= 2
    assert await client.receive_line() == f"DB VERSION {__version__}"
    assert await client.receive_line() == "DB LOGLEVEL 5"
    assert await client.receive_line() == "DB LOGLEVEL 9"
    client.send_line("DB LOGLEVEL")
    assert await client.receive_line() == "DB LOGLEVEL 9"
    client.send_line("QUIT")
    assert await client.receive_line() == "QUIT bye !"
    assert await client.closed()


async def test_an_unknown_command_is_not_understood_identified_or_not(connect: Connect) -> None:
    client = await connect()
    client.send_line("X")
    client.send_line("HELLO world")
    assert await client.receive_line() == 'ERR Command "X" not understood !'
    assert await client.receive_line() == 'ERR Command "HELLO" not understood !'
    assert await client.identify(new_ident()) is True
    client.send_line("X 1 2 3")
    assert await client.receive_line(prefix="ERR ") == 'ERR Command "X" not understood !'


# --- Data ---------------------------------------------------------------------------------


async def test_locations_become_sen_loc_with_named_fields(
    new_device: Connected, database: Database
) -> None:
    for line in ("D L 7", "D L 48.85,2.35", "D L 48.85,-2.35,12.5", "D L -1.5,2,0,35.25"):
        new_device.client.send_line(line)
    assert unordered(await data_of(database, new_device.device, "sen:loc", 4)) == unordered(
        [
            {"sat": 7},
            {"lat": 48.85, "lon": 2.35},
            {"lat": 48.85, "lon": -2.35, "spd": 12.5},
            {"lat": -1.5, "lon": 2.0, "spd": 0.0, "alt": 35.25},
        ]
    )


async def test_a_g_location_is_recorded_at_its_own_time_in_each_format(
    new_device: Connected, database: Database
) -> None:
    client = new_device.client
    client.send_line("D G 1700000000,48.85,2.35")
    client.send_line("D G 240229123456,1.5,2.5,3")
    client.send_line("E 1600000000 G 20250102030405,-1,-2,3,4")  # G's own time wins
    records = await stored(database, new_device.device, "sen:loc", 3)
    assert [(record.time, record.data) for record in records] == [
        (utc(2023, 11, 14, 22, 13, 20), {"lat": 48.85, "lon": 2.35}),
        (utc(2024, 2, 29, 12, 34, 56), {"lat": 1.5, "lon": 2.5, "spd": 3.0}),
        (utc(2025, 1, 2, 3, 4, 5), {"lat": -1.0, "lon": -2.0, "spd": 3.0, "alt": 4.0}),
    ]


async def test_short_types_become_sensor_types_and_content_is_kept_as_is(
    new_device: Connected, database: Database
) -> None:
    expected = {
        "A3": ("sen:adc:3", "512"),
        "A12": ("sen:adc:12", "1023"),
        "DI0": ("sen:gpio:0", "1"),
        "T": ("sen:temp", "21.5"),
        "V": ("sen:volt", "12.1"),
        "D": ("sen:door", "open"),
        "F": ("sen:fuel", "75"),
        "E": ("sen:engine", "on"),
        "SMS": ("sen:sms_received", "hello there, how are you ?"),
        "VER": ("sen:version", "1.2.3 build 7"),
    }
    for short_type, (_, content) in expected.items():
        new_device.client.send_line(f"D {short_type} {content}")
    for stored_type, content in expected.values():
        assert await data_of(database, new_device.device, stored_type) == [content]


async def test_unknown_types_are_stored_unchanged(
    new_device: Connected, database: Database
) -> None:
    lines = {"custom:thing": "a b c", "A3x": "5", "Ax": "6", "DI": "7", "temp": "", "LS": "8"}
    for record_type, content in lines.items():
        new_device.client.send_line(f"D {record_type} {content}")
    for record_type, content in lines.items():
        assert await data_of(database, new_device.device, record_type) == [content]


async def test_a_listed_sensor_is_stored_and_recorded_on_the_device(
    new_device: Connected, database: Database
) -> None:
    new_device.client.send_line("D LS:pump 1")
    new_device.client.send_line("E 1700000000 LS:valve closed")
    assert await data_of(database, new_device.device, "lsen:pump") == ["1"]
    assert await data_of(database, new_device.device, "lsen:valve") == ["closed"]
    sensors = await eventually(
        lambda: _listed_sensors(new_device.device, 2), "the listed sensors on the device"
    )
    assert set(sensors) == {"pump", "valve"}
    assert sensors["pump"]["name"] == "pump"
    assert int(sensors["pump"]["date-last"]) >= int(sensors["pump"]["date-create"]) > 1700000000
    assert sensors["valve"]["date-last"] == "1700000000"


async def _listed_sensors(device: Device, count: int) -> dict[str, dict[str, str]] | None:
    sensors = await device.listed_sensors()
    return sensors if len(sensors) >= count else None


async def test_echo_is_answered_and_not_stored(new_device: Connected, database: Database) -> None:
    client = new_device.client
    client.send_line("D echo hello  world ")
    client.send_line("E 1700000000 echo at a time")
    assert await client.receive_line() == "D echo hello  world "
    assert await client.receive_line() == "D echo at a time"
    client.send_line("D T after the echo")
    await stored(database, new_device.device, "sen:temp")
    records = TimeSeries(database).records(new_device.device.series_id)
    assert [record.type async for record in records if "echo" in record.type] == []


async def test_e_times_in_every_format_date_the_records(
    new_device: Connected, database: Database
) -> None:
    client = new_device.client
    client.send_line("E 1700000000 T 1")  # unix seconds, 10 digits
    client.send_line("E 10000000000 T 2")  # 11 digits
    client.send_line("E 240229123456 T 3")  # YYMMDDhhmmss
    client.send_line("E 20240301000000 T 4")  # YYYYMMDDhhmmss
    client.send_line("E 20240301000001.250 T 5")  # ... with a fraction of a second
    client.send_line("E 990101000000 T 6")  # a two-digit year from 69 on is 19xx
    records = await stored(database, new_device.device, "sen:temp", 6)
    assert sorted((record.data, record.time) for record in records) == [
        ("1", utc(2023, 11, 14, 22, 13, 20)),
        ("2", utc(2286, 11, 20, 17, 46, 40)),
        ("3", utc(2024, 2, 29, 12, 34, 56)),
        ("4", utc(2024, 3, 1)),
        ("5", utc(2024, 3, 1, 0, 0, 1) + timedelta(milliseconds=250)),
        ("6", utc(1999, 1, 1)),
    ]


async def test_j_values_keep_their_type_and_structure_in_every_time_format(
    new_device: Connected, database: Database
) -> None:
    client = new_device.client
    client.send_line('J 1700000000 app:state {"mode": "eco", "levels": [1, 2.5, null]}')
    client.send_line("J 240229123456 app:state [true, false]")
    client.send_line('J 20240301000000 app:state "plain"')
    client.send_line("J 20240301000001 T 42")  # no processing: T stays T
    records = await stored(database, new_device.device, "app:state", 3)
    assert [(record.time, record.data) for record in records] == [
        (utc(2023, 11, 14, 22, 13, 20), {"mode": "eco", "levels": [1, 2.5, None]}),
        (utc(2024, 2, 29, 12, 34, 56), [True, False]),
        (utc(2024, 3, 1), "plain"),
    ]
    assert await data_of(database, new_device.device, "T") == [42]


async def test_bad_data_is_answered_err_and_the_connection_goes_on(
    new_device: Connected, database: Database
) -> None:
    client = new_device.client
    refused = {
        "E 2024 T 1": 'ERR Invalid time "2024"',
        "E 17000000000000x T 1": 'ERR Invalid time "17000000000000x"',
        "E 20241301000000 T 1": 'ERR Invalid time "20241301000000"',
        "J 1700000000x app:x 1": 'ERR Invalid time "1700000000x"',
        # Valid formats, but no time UUID carries these times (1582 to 5236 only).
        "E 99991231235959 T 1": "ERR Invalid time: time 9999-12-31T23:59:59+00:00 is outside",
        "J 15000101000000 app:x 1": "ERR Invalid time: time 1500-01-01T00:00:00+00:00 is outside",
        "D G 99991231235959,1,2": "ERR Invalid time: time 9999-12-31T23:59:59+00:00 is outside",
        "J 1700000000 app:x {not json}": "ERR Invalid JSON",
        "J 1700000000 app:x NaN": "ERR Invalid JSON",
        "J 1700000000 _server {}": 'ERR Forbidden type "_server"',
        "J 1700000000 _x 1": 'ERR Forbidden type "_x"',
        "D L north,south": 'ERR Invalid location "north,south"',
        "D L many": 'ERR Invalid location "many"',
        "D G 1700000000": 'ERR Invalid G location "1700000000"',
        "D G 17,1,2": 'ERR Invalid G location "17,1,2"',
        "D LS: x": 'ERR Invalid listed sensor "LS:"',
        "D T": 'ERR Expected "D <type> <content>"',
        "E 1700000000 T": 'ERR Expected "E <time> <type> <content>"',
    }
    for line in refused:
        client.send_line(line)
    for line, error in refused.items():
        assert (await client.receive_line()).startswith(error), line
    client.send_line("D T still here")
    assert await data_of(database, new_device.device, "sen:temp") == ["still here"]
    records = TimeSeries(database).records(new_device.device.series_id)
    assert {record.type async for record in records} == {"_server", "sen:temp"}


# --- Settings -----------------------------------------------------------------------------


async def test_pending_settings_are_pushed_on_identification_and_cleared_by_ack(
    connect: Connect, database: Database
) -> None:
    ident = new_ident()
    device = await Devices(database).create(ident)
    await device.define_setting("period", "60")
    await device.define_setting("server", "10.0.0.1:3050")
    client = await connect()
    assert await client.identify(ident) is True
    assert await client.receive_line() == "S S period 60"
    assert await client.receive_line() == "S S server 10.0.0.1:3050"
    client.send_line("S A period 60")
    client.send_line("S A server 10.0.0.2:3050")  # not the pending value: still pending
    client.send_line("S G")
    assert await client.receive_line() == "S S server 10.0.0.1:3050"
    assert await device.settings_to_send() == {"server": "10.0.0.1:3050"}
    assert await device.settings() == {"period": "60", "server": "10.0.0.2:3050"}
    acked = await device.settings_ack_times()
    assert set(acked) == {"period"} and acked["period"] >= int(time.time()) - 60
    assert client.unread == []  # it has settings: no S GA


async def test_settings_reported_read_and_forgotten(
    new_device: Connected, database: Database
) -> None:
    client, device = new_device.client, new_device.device
    client.send_line("S S own_a 1")
    client.send_line("S S own_b with spaces ")
    client.send_line("S GA")
    assert await client.receive_line() == "S S own_a 1"
    assert await client.receive_line() == "S S own_b with spaces "
    client.send_line("S G own_a")
    client.send_line("S G unknown")
    assert await client.receive_line() == "S S own_a 1"
    assert await client.receive_line() == "S S unknown "
    client.send_line("S G")  # nothing pending: no answer
    client.send_line("S U own_a")
    client.send_line("S GA")
    assert await client.receive_line() == "S S own_b with spaces "
    assert await device.settings() == {"own_b": "with spaces "}
    assert await device.settings_to_send() == {}
    assert client.unread == []


async def test_a_setting_value_spanning_lines_is_held_back_and_the_rest_still_goes(
    connect: Connect, database: Database
) -> None:
    ident = new_ident()
    device = await Devices(database).create(ident)
    # define_setting refuses such a value; the original platform, sharing the keyspace,
    # does not.
    for child in ("settings", "settings-to-send"):
        await device.node.child(child).set_value("banner", "two\nlines")
    await device.define_setting("period", "60")
    await device.add_command("reboot")
    client = await connect()
    assert await client.identify(ident) is True
    assert await client.receive_line() == "S S period 60"
    assert (await client.receive_line()).endswith(" reboot")
    client.send_line("S G banner")
    assert (
        await client.receive_line() == 'ERR Setting "banner" cannot be sent: its value spans lines'
    )
    client.send_line("S GA")
    assert await client.receive_line() == "S S period 60"
    await client.ping("done")
    assert client.unread == []
    assert await device.settings_to_send() == {"banner": "two\nlines", "period": "60"}


async def test_settings_defined_while_connected_are_pushed_through_the_bus(
    new_device: Connected, publisher: Publisher
) -> None:
    client, device = new_device.client, new_device.device
    await device.define_setting("period", "30")
    await control(publisher, device, topics.SEND_SETTINGS)
    assert await client.receive_line(POLL_TIMEOUT) == "S S period 30"
    client.send_line("S A period 30")
    await eventually(_no_settings_pending(device), "the acknowledgement")


def _no_settings_pending(device: Device) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await device.settings_to_send() == {}

    return probe


async def test_debug_set_setting_defines_the_setting_and_pushes_it(
    new_device: Connected,
) -> None:
    client, device = new_device.client, new_device.device
    client.send_line("DB SET_SETTING mode night shift")
    assert await client.receive_line() == "DB SET_SETTING OK"
    assert await client.receive_line(POLL_TIMEOUT) == "S S mode night shift"
    assert await device.settings_to_send() == {"mode": "night shift"}
    client.send_line("S A mode night shift")
    await eventually(_no_settings_pending(device), "the acknowledgement")


# --- Commands -----------------------------------------------------------------------------


async def test_pending_commands_are_pushed_numbered_and_acknowledged(
    connect: Connect, database: Database
) -> None:
    ident = new_ident()
    device = await Devices(database).create(ident)
    await device.define_setting("any", "1")  # so the greeting has no S GA
    reboot = await device.add_command("reboot now")
    client = await connect()
    assert await client.identify(ident) is True
    assert await client.receive_line() == "S S any 1"
    number = (await client.receive_line(prefix="C ")).removeprefix("C ").split(" ", 1)
    assert number[1] == "reboot now"
    client.send_line("C L")  # resent, under a new number
    again = (await client.receive_line(prefix="C ")).removeprefix("C ").split(" ", 1)
    assert again[1] == "reboot now" and again[0] != number[0]
    client.send_line("C A 999")
    assert await client.receive_line() == "ERR Unknown command number 999"
    client.send_line(f"C A {number[0]}")
    client.send_line("C L")  # nothing pending any more
    client.send_line("T")
    assert (await client.receive_line()).startswith("T ")
    assert reboot not in await device.commands()
    assert await device.commands() == {}


async def test_commands_added_while_connected_are_pushed_through_the_bus(
    new_device: Connected, publisher: Publisher
) -> None:
    client, device = new_device.client, new_device.device
    command_id = await device.add_command("upload logs")
    await control(publisher, device, topics.SEND_COMMANDS)
    number, text = (await client.receive_line(POLL_TIMEOUT, prefix="C ")).split(" ", 2)[1:]
    assert text == "upload logs"
    await control(publisher, device, topics.SEND_COMMANDS)  # already sent: not again
    client.send_line(f"C A {number}")
    await eventually(_command_gone(device, command_id), "the acknowledgement")
    assert client.unread == []


def _command_gone(device: Device, command_id: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return command_id not in await device.commands()

    return probe


async def test_debug_add_command_adds_the_command_and_pushes_it(new_device: Connected) -> None:
    client, device = new_device.client, new_device.device
    client.send_line("DB ADD_COMMAND blink 3 times")
    assert await client.receive_line() == "DB ADD_COMMAND OK"
    number, text = (await client.receive_line(POLL_TIMEOUT, prefix="C ")).split(" ", 2)[1:]
    assert text == "blink 3 times"
    assert list((await device.commands()).values()) == ["blink 3 times"]
    client.send_line(f"C A {number}")
    client.send_line("C L")
    client.send_line("T")
    await client.receive_line(prefix="T ")
    assert await device.commands() == {}


# --- Debugging, pings, quit -----------------------------------------------------------------


async def test_debug_answers_after_identification(new_device: Connected) -> None:
    client = new_device.client
    for line in ("DB ID", "DB SOURCE", "DB CONNECTED", "DB VERSION", "DB LOGLEVEL 3"):
        client.send_line(line)
    assert await client.receive_line() == f"DB ID {new_device.device.id}"
    assert (await client.receive_line()).startswith(f"DB SOURCE {client.local_address} ")
    assert int((await client.receive_line()).removeprefix("DB CONNECTED ")) >= 0
    assert await client.receive_line() == f"DB VERSION {__version__}"
    assert await client.receive_line() == "DB LOGLEVEL 3"


async def test_debug_last_lists_the_newest_records_first(
    new_device: Connected, database: Database
) -> None:
    client = new_device.client
    # Dated after everything else of this device, so they are its newest records.
    client.send_line("E 4102444800 T first")
    client.send_line('J 4102444801 app:x {"n": 2}')
    await stored(database, new_device.device, "app:x")
    await stored(database, new_device.device, "sen:temp")
    client.send_line("DB LAST 2")
    assert await client.receive_block("BEGIN LAST", "END") == [
        '2100-01-01T00:00:01+00:00 app:x {"n": 2}',
        '2100-01-01T00:00:00+00:00 sen:temp "first"',
    ]
    client.send_line("DB LAST")
    listed = await client.receive_block("BEGIN LAST", "END")
    assert 4 <= len(listed) <= 10  # the two above and the _server records
    assert [line.split(" ")[1] for line in listed[2:]] == ["_server"] * (len(listed) - 2)
    client.send_line("DB LAST 0")
    assert await client.receive_block("BEGIN LAST", "END") == []
    client.send_line("DB LAST x")
    assert (await client.receive_line()).startswith('ERR Invalid count "x"')


async def test_a_device_ping_is_answered_with_its_token(new_device: Connected) -> None:
    client = new_device.client
    await client.ping("42")
    await client.ping("some text with spaces")
    client.send_line("A")
    assert await client.receive_line() == "B "


async def test_quit_is_answered_then_the_connection_closed_and_recorded(
    new_device: Connected, database: Database
) -> None:
    client = new_device.client
    client.send_line("QUIT")
    assert await client.receive_line() == "QUIT bye !"
    assert await client.closed()
    server = await eventually(
        lambda: _server_record(database, new_device.device, "device_disconnected"),
        "the disconnection record",
    )
    assert server["source"] == client.local_address


async def _server_record(database: Database, device: Device, kind: str) -> JsonValue:
    """The data of the device's newest ``_server`` record of `kind` (device_connected, ...)."""
    async for record in TimeSeries(database).records(device.series_id, "_server"):
        if record.data.get("type") == kind:
            return record.data
    return None


# --- Timers (fast timing: identify within 2 s, pings after 2 s, drop after 4 s) --------------


async def test_a_device_that_does_not_identify_in_time_is_told_and_disconnected(
    connect: Connect,
) -> None:
    client = await connect()
    client.send_line("T")
    assert (await client.receive_line()).startswith("T ")
    assert await client.receive_line(LONG) == "QUIT It took you too long to identify yourself !"
    assert await client.closed()


async def test_a_silent_device_is_pinged_and_kept_while_it_answers(
    identified: Identified,
) -> None:
    client = (await identified()).client
    assert await client.receive_server_ping(LONG) == "0"
    # The second ping comes past the 4 s of silence allowed: answering kept the device.
    assert await client.receive_server_ping(LONG) == "1"
    assert not await client.closed(SHORT)
    assert await client.receive_line() == "S GA"
    assert client.unread == []


async def test_a_device_silent_for_too_long_is_told_and_disconnected(
    identified: Identified, database: Database
) -> None:
    connected = await identified(answer_server_pings=False)
    client = connected.client
    assert await client.receive_server_ping(LONG) == "0"
    assert await client.receive_line(LONG, prefix="QUIT ") == (
        "QUIT No data transmitted for more than 12 hours !"
    )
    assert await client.closed()
    await eventually(
        lambda: _server_record(database, connected.device, "device_disconnected"),
        "the disconnection record",
    )


# --- Registered enrollment ----------------------------------------------------------------


@pytest.fixture(scope="module")
def registered_platform(
    config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """A receiver that only accepts devices already on the registry."""
    running = start_platform(
        config_file, tmp_path_factory.mktemp("registered"), only="alip", enrollment="registered"
    )
    yield running
    running.stop()


async def test_registered_enrollment_refuses_unknown_devices_and_keeps_the_connection(
    registered_platform: Platform, database: Database
) -> None:
    known = new_ident()
    await Devices(database).create(known)
    async with await ALIPClient.connect("127.0.0.1", registered_platform.alip_port) as client:
        unknown = new_ident()
        assert await client.identify(unknown) is False
        assert await Devices(database).by_ident(unknown) is None
        client.send_line("D T 1")
        assert await client.receive_line() == NOT_IDENTIFIED
        client.send_line("T")
        assert (await client.receive_line()).startswith("T ")
        assert await client.identify(known) is True
        client.send_line("DB ID")
        assert await client.receive_line(prefix="DB ID ") == f"DB ID {device_id_for(known)}"


# --- Firmware -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Firmware:
    name: str
    content: bytes


@pytest.fixture(scope="module")
def firmware(config: Config) -> Firmware:
    """A firmware of two whole blocks and a bit, random bytes, on the blobstore."""
    name = f"fw-{uuid.uuid4().hex[:12]}.bin"
    content = os.urandom(FIRMWARE_SIZE)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 100_000):
            yield content[start : start + 100_000]

    async def add(database: Database) -> None:
        await Firmwares(database).add(name, chunks())

    run_with_database(config.cassandra, add)
    return Firmware(name, content)


async def read_part(client: ALIPClient, offset: int, size: int) -> bytes:
    client.send_line(f"F G {offset} {size}")
    return _part(await client.receive_line(prefix="F G "), offset)


def _part(line: str, offset: int) -> bytes:
    answered_offset, hex_bytes = line.removeprefix("F G ").split(" ")
    assert int(answered_offset) == offset
    return bytes.fromhex(hex_bytes)


async def test_selecting_firmware_tells_whether_it_exists_and_its_size(
    new_device: Connected, firmware: Firmware
) -> None:
    client = new_device.client
    client.send_line("F N no-such-firmware")
    assert await client.receive_line() == "F N 0"
    client.send_line("F S")
    assert await client.receive_line() == "ERR No firmware selected (F N <name>)"
    client.send_line(f"F N {firmware.name}")
    assert await client.receive_line() == "F N 1"
    client.send_line("F S")
    assert await client.receive_line() == f"F S {FIRMWARE_SIZE}"
    client.send_line("F N no-such-firmware")  # a failed selection forgets the previous one
    assert await client.receive_line() == "F N 0"
    client.send_line("F G 0 16")
    assert await client.receive_line() == "ERR No firmware selected (F N <name>)"


async def test_firmware_parts_at_the_edges_of_blocks_and_of_the_file(
    new_device: Connected, firmware: Firmware
) -> None:
    client, content = new_device.client, firmware.content
    client.send_line(f"F N {firmware.name}")
    assert await client.receive_line() == "F N 1"
    parts = [
        (0, 512),  # the start
        (BLOCK - 100, 100),  # the end of the first block
        (BLOCK, 512),  # the start of the second block
        (BLOCK - 256, 512),  # across the boundary
        (2 * BLOCK - 1, 2),  # across the second boundary
        (FIRMWARE_SIZE - 1, 512),  # the last byte: only it
        (FIRMWARE_SIZE - 3, 3),  # the bytes of the last block exactly
        (FIRMWARE_SIZE, 512),  # exactly at the end: nothing
        (FIRMWARE_SIZE + 1000, 512),  # beyond the end: nothing
        (100, 0),  # nothing asked, nothing given
    ]
    for offset, size in parts:
        assert await read_part(client, offset, size) == content[offset : offset + size], offset
    client.send_line(f"F G {FIRMWARE_SIZE} 10")
    assert await client.receive_line() == f"F G {FIRMWARE_SIZE} "
    # A part too large for one line is cut short; the device asks for the rest.
    part = await read_part(client, 1000, 100_000)
    assert 0 < len(part) < 100_000 and part == content[1000 : 1000 + len(part)]


async def test_the_whole_firmware_reassembles_from_512_byte_parts(
    new_device: Connected, firmware: Firmware
) -> None:
    client = new_device.client
    client.send_line(f"F N {firmware.name}")
    assert await client.receive_line() == "F N 1"
    client.send_line("F S")
    size = int((await client.receive_line()).removeprefix("F S "))
    offsets = range(0, size, 512)
    for offset in offsets:  # all asked at once, answered in order
        client.send_line(f"F G {offset} 512")
    parts = [_part(await client.receive_line(prefix="F G "), offset) for offset in offsets]
    assert b"".join(parts) == firmware.content


async def test_a_firmware_replaced_while_selected_must_be_selected_again(
    new_device: Connected, database: Database
) -> None:
    name = f"fw-{uuid.uuid4().hex[:12]}.bin"
    firmwares = Firmwares(database)
    await firmwares.add(name, _one_chunk(b"old firmware"))
    client = new_device.client
    client.send_line(f"F N {name}")
    assert await client.receive_line() == "F N 1"
    await firmwares.add(name, _one_chunk(b"new firmware!"))
    client.send_line("F G 0 64")
    assert await client.receive_line() == (
        f'ERR Firmware "{name}" changed since it was selected: select it again'
    )
    client.send_line(f"F N {name}")
    assert await client.receive_line() == "F N 1"
    assert await read_part(client, 0, 64) == b"new firmware!"


async def _one_chunk(content: bytes) -> AsyncIterator[bytes]:
    yield content


async def test_bad_firmware_requests_are_answered_err(
    new_device: Connected, firmware: Firmware
) -> None:
    client = new_device.client
    client.send_line(f"F N {firmware.name}")
    assert await client.receive_line() == "F N 1"
    refused = {
        "F G -1 10": 'ERR Invalid offset "-1"',
        "F G x 10": 'ERR Invalid offset "x"',
        "F G 0 -5": 'ERR Invalid size "-5"',
        "F G 0 ten": 'ERR Invalid size "ten"',
        "F G 0": 'ERR Expected "F G <offset> <size>"',
        "F N": 'ERR Expected "F N <name>"',
        "F X": 'ERR Command "F X" not understood !',
    }
    for line in refused:
        client.send_line(line)
    for line, error in refused.items():
        assert (await client.receive_line()).startswith(error), line
    assert await read_part(client, 0, 4) == firmware.content[:4]


async def test_firmware_without_a_selection_is_answered_err(new_device: Connected) -> None:
    client = new_device.client
    client.send_line("F S")
    client.send_line("F G 0 512")
    assert await client.receive_line() == "ERR No firmware selected (F N <name>)"
    assert await client.receive_line() == "ERR No firmware selected (F N <name>)"


# --- Lines on the wire --------------------------------------------------------------------


async def test_a_line_over_64_kib_is_answered_err_and_the_connection_goes_on(
    new_device: Connected, database: Database
) -> None:
    client = new_device.client
    client.send_line("D T " + "x" * (64 * 1024 + 10))
    assert await client.receive_line() == "ERR Line too long"
    client.send_line("D T fine")
    await client.ping("after")
    assert await data_of(database, new_device.device, "sen:temp") == ["fine"]


async def test_a_line_of_exactly_64_kib_is_accepted(
    new_device: Connected, database: Database
) -> None:
    content = "x" * (64 * 1024 - len("D T "))
    new_device.client.send_line(f"D T {content}")
    assert await data_of(database, new_device.device, "sen:temp") == [content]


async def test_an_overlong_line_is_answered_in_its_turn(connect: Connect) -> None:
    client = await connect()
    overlong = "D T " + "x" * (64 * 1024 + 10)
    client.send_raw(f"ID {new_ident()}\n{overlong}\nA after\n".encode())
    assert [await client.receive_line() for _ in range(4)] == [
        "ID 1",
        "S GA",
        "ERR Line too long",
        "B after",
    ]


async def test_a_line_sent_byte_by_byte_is_put_back_together(
    connect: Connect, database: Database
) -> None:
    client = await connect()
    ident = new_ident()
    for byte in f"ID {ident}\nD T 12.5\nA split\n".encode():
        client.send_raw(bytes([byte]))
        await client.drain()
        await asyncio.sleep(0.001)  # one TCP segment per byte, rather than one for the lot
    assert await client.receive_line() == "ID 1"
    assert await client.receive_line(prefix="B ") == "B split"
    device = Device(database, device_id_for(ident))
    assert await data_of(database, device, "sen:temp") == ["12.5"]


async def test_crlf_line_endings_are_accepted(connect: Connect, database: Database) -> None:
    client = await connect()
    ident = new_ident()
    client.send_raw(f"ID {ident}\r\nD T 5\r\nA crlf\r\nS S name value\r\nS GA\r\n".encode())
    assert await client.receive_line() == "ID 1"
    assert await client.receive_line() == "S GA"
    assert await client.receive_line() == "B crlf"
    assert await client.receive_line() == "S S name value"
    device = Device(database, device_id_for(ident))
    assert await data_of(database, device, "sen:temp") == ["5"]
    assert await device.settings() == {"name": "value"}


async def test_data_of_many_devices_at_once_is_all_stored(
    identified: Identified, database: Database
) -> None:
    devices = await asyncio.gather(*(identified() for _ in range(20)))
    for number, connected in enumerate(devices):
        for n in range(5):
            connected.client.send_line(f"D A{number} {n}")
    for number, connected in enumerate(devices):
        values = await data_of(database, connected.device, f"sen:adc:{number}", 5)
        assert unordered(values) == unordered([str(n) for n in range(5)])
