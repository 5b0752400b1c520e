"""M2MP end to end: devices on real TCP into ``m2m serve``, results read back where they land.

Every test plays devices with :class:`M2MPClient` (or raw bytes) against a running platform
on the real local stack, and reads what happened from Cassandra (time series, registry) or
from NSQ (a consumer on a channel of its own). Nothing is mocked.

Waits are bounded polls (:func:`eventually`); a wait for something that must *not* arrive
first sends a device ping and waits for its answer: the server handles a connection's
frames in order, so by the time the answer is in, everything sent before it is in too.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from m2m.bus import topics
from m2m.bus.consumer import Consumer
from m2m.bus.envelope import Address, Envelope
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.config import Config, NsqConfig, load_config
from m2m.receivers.m2mp.client import M2MPClient, ReceivedData
from m2m.receivers.m2mp.codec import (
    MAX_FRAME_SIZE,
    ChannelDefinition,
    Data,
    DataArray,
    Decoder,
    DevicePing,
    DevicePingAnswer,
    Direction,
    Frame,
    IdentificationRequest,
    IdentificationResult,
    encode,
)
from m2m.registry.device import (
    DefaultDevice,
    Devices,
    add_route,
    device_id_for,
    remove_route,
)
from m2m.registry.routes import Route
from m2m.services import STORAGE_CHANNEL
from m2m.timeseries import Record, TimeSeries
from tests.conftest import (
    FAST_TIMING,
    WAIT,
    Platform,
    channel_stats,
    config_with_own_topics,
    eventually,
    run_m2m,
    start_platform,
)

HOST = "127.0.0.1"
VECTORS = Path("/work/shared/vectors/m2mp-c-client-startup.txt")
TESTS_ADDRESS = "tests/m2mp-e2e"


# --- Helpers ----------------------------------------------------------------------------


def new_ident(label: str) -> str:
    return f"e2e-{label}-{uuid.uuid4().hex[:12]}"


async def connect(port: int, *, answer_server_pings: bool = True) -> tuple[M2MPClient, str]:
    """A device connection, and its ``ip:port`` as the platform's events name it."""
    reader, writer = await asyncio.open_connection(HOST, port)
    host, local_port = writer.get_extra_info("sockname")[:2]
    client = M2MPClient(reader, writer, answer_server_pings=answer_server_pings)
    return client, f"{host}:{local_port}"


@asynccontextmanager
async def device_connection(port: int, ident: str | None = None) -> AsyncIterator[M2MPClient]:
    """A connection, identified as ``ident`` (which must be accepted) when one is given."""
    client, _ = await connect(port)
    async with client:
        if ident is not None:
            assert await client.identify(ident)
        yield client


async def nothing_else_sent(client: M2MPClient) -> None:
    """Assert the server sent no data or array beyond what the test already took."""
    await client.ping(99)
    with pytest.raises(TimeoutError):
        received = await client.receive(timeout=0.05)
        pytest.fail(f"unexpected {received!r}")


async def records(
    timeseries: TimeSeries, device_id: str, record_type: str | None = None
) -> list[Record]:
    series = timeseries.records(f"dev-{device_id}", record_type, oldest_first=True)
    return [record async for record in series]


async def stored(
    timeseries: TimeSeries, device_id: str, record_type: str, count: int = 1
) -> list[Record]:
    """The device's records of a type, once there are ``count`` of them (oldest first)."""
    return await eventually(
        lambda: records(timeseries, device_id, record_type),
        lambda found: len(found) >= count,
        f"{count} {record_type} record(s) of {device_id}",
    )


def server_record(found: list[Record], kind: str) -> Record:
    (record,) = [record for record in found if record.data["type"] == kind]
    return record


def event_of(call: str, source: str) -> Callable[[Envelope], bool]:
    """Matches the ``call`` event of the connection from ``source`` (its ``ip:port``)."""
    return lambda event: event.call == call and event.fields.get("source") == source


def control(to: str, call: str) -> Envelope:
    return Envelope.make(to, call, TESTS_ADDRESS)


def vector_frames() -> list[bytes]:
    """The frames of the C client's start-up, as the bytes it sent."""
    frames = []
    for line in VECTORS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            frames.append(bytes.fromhex(line.split()[0]))
    return frames


class BusTap:
    """Everything published to a topic from now on, on a channel of our own.

    Not an ephemeral channel: the stack's nsqd keeps no memory queue (durability), and an
    ephemeral channel then has no queue at all. The run's topics go at the end of the run.
    """

    def __init__(self, topic: str, config: Config) -> None:
        self.topic = topic
        self.messages: list[Envelope] = []
        self._channel = f"tests-{uuid.uuid4().hex[:12]}"
        self._config = config
        self._consumer: Consumer | None = None

    async def _keep(self, envelope: Envelope) -> None:
        self.messages.append(envelope)

    async def start(self, publisher: Publisher) -> None:
        """Subscribe, and return once a marker published after subscribing came back."""
        self._consumer = Consumer(
            self.topic, self._channel, self._keep, self._config.nsq, publisher
        )
        self._consumer.start()
        # A channel only gets what is published once it exists: until then, markers are
        # lost on the topic's other channels.
        token = uuid.uuid4().hex

        async def marker_back() -> bool:
            publisher.publish(Envelope.make(self.topic, "tests_marker", TESTS_ADDRESS, token=token))
            await asyncio.sleep(0.2)
            return any(message.fields.get("token") == token for message in self.messages)

        await eventually(marker_back, bool, "marker")

    async def first(self, matches: Callable[[Envelope], bool], what: str) -> Envelope:
        async def probe() -> Envelope | None:
            return next((message for message in self.messages if matches(message)), None)

        found = await eventually(probe, lambda message: message is not None, what)
        assert found is not None
        return found

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.close()


async def control_stats(nsq: NsqConfig, receiver: str) -> dict[str, Any]:
    """The counters of a receiver's control channel; ``receiver`` is its bus address."""
    address = Address.parse(receiver)
    return await channel_stats(nsq, address.topic, address.channel or "")


async def control_settled(nsq: NsqConfig, receiver: str, count_above: int) -> dict[str, Any]:
    """The stats of a receiver's control channel once it counts more than ``count_above``
    messages and every one was dealt with: delivered, no longer in flight, so finished or
    requeued (deferred) after a failure.
    """
    return await eventually(
        lambda: control_stats(nsq, receiver),
        lambda stats: (
            stats["message_count"] > count_above
            and stats["depth"] == 0
            and stats["in_flight_count"] == 0
        ),
        f"control messages to {receiver} handled",
    )


async def numbered_connection(
    port: int, events: BusTap, number: int, *, exactly: bool
) -> tuple[M2MPClient, Envelope]:
    """A new connection the receiver numbers ``number`` (or more, unless ``exactly``).

    A receiver numbers its connections in the order it accepts them: connections opened
    and closed at once fill the gap up to the number wanted.
    """
    while True:
        client, source = await connect(port)
        connected = await events.first(
            event_of(topics.DEVICE_CONNECTED, source),
            f"device_connected from {source}",
        )
        current = int(connected.fields["connection_id"])
        if current == number or (current > number and not exactly):
            return client, connected
        async with client:
            pass
        if current > number:
            raise AssertionError(f"the receiver on {port} is already past connection {number}")
        for _ in range(number - current - 1):
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()


# --- Fixtures ---------------------------------------------------------------------------


@pytest.fixture
async def publisher(config: Config) -> AsyncIterator[Publisher]:
    publisher = Publisher(config.nsq, retry_delay=0.2, reconnect_interval=0.5)
    publisher.start()
    yield publisher
    await publisher.flush(10)
    publisher.close()


@pytest.fixture
def timeseries(database: Database) -> TimeSeries:
    return TimeSeries(database)


@pytest.fixture
def devices(database: Database) -> Devices:
    return Devices(database)


@pytest.fixture
async def events(config: Config, publisher: Publisher) -> AsyncIterator[BusTap]:
    tap = BusTap(topics.EVENTS, config)
    await tap.start(publisher)
    yield tap
    await tap.close()


@pytest.fixture(scope="module")
def strict_platform(
    config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """A receiver that only accepts registered devices and resends a setting after 60 s.

    Only the M2MP receiver runs in it: its devices' data is the shared platform's to store.
    """
    running = start_platform(
        config_file,
        tmp_path_factory.mktemp("strict"),
        only="m2mp",
        enrollment="registered",
        timing={**FAST_TIMING, "setting_resend_interval": 60},
    )
    yield running
    running.stop()


# --- The C client's start-up ------------------------------------------------------------


async def test_c_client_startup_is_answered_echoed_stored_and_acknowledged(
    platform: Platform, devices: Devices, timeseries: TimeSeries
) -> None:
    frames = vector_frames()
    ident = IdentificationRequest("Linux_1795347850_255304171")
    assert frames[0] == encode(ident)
    reader, writer = await asyncio.open_connection(HOST, platform.m2mp_port)
    try:
        writer.write(b"".join(frames))
        answer = b""
        decoder = Decoder(Direction.SERVER_TO_DEVICE)
        answered: list[Frame] = []
        async with asyncio.timeout(WAIT):
            while not any(isinstance(frame, Data) for frame in answered):
                chunk = await reader.read(65_536)
                assert chunk, f"the server closed the connection after {answer.hex(' ')}"
                answer += chunk
                answered += decoder.feed(chunk)
    finally:
        writer.close()
    assert answer[:2] == bytes([0x01, 0x01])
    # A new device is asked its capabilities and its settings (it has neither on record);
    # then its ping is answered and its echo comes back, in the order it sent them.
    assert answered == [
        IdentificationResult(accepted=True),
        ChannelDefinition(0, "_sta"),
        DataArray(0, (b"g", b"cap")),
        ChannelDefinition(1, "_set"),
        DataArray(1, (b"ga",)),
        DevicePingAnswer(0),
        ChannelDefinition(2, "echo:test"),
        Data(2, b"echo_0"),
    ]
    device = await devices.by_ident(ident.ident)
    assert device is not None and device.id == device_id_for(ident.ident)
    (uptime,) = await stored(timeseries, device.id, "sen:uptime")
    (loadavg,) = await stored(timeseries, device.id, "sen:loadavg")
    assert (uptime.data, loadavg.data) == ("374", "0.11")
    assert await device.settings() == {"servers": "127.0.0.1:3999"}
    assert await records(timeseries, device.id, "echo:test") == []


# --- Identification ---------------------------------------------------------------------


async def test_open_enrollment_creates_the_device_with_its_sha1_derived_id(
    platform: Platform, devices: Devices
) -> None:
    ident = new_ident("open")
    assert await devices.by_ident(ident) is None
    async with device_connection(platform.m2mp_port, ident):
        pass
    device = await devices.by_ident(ident)
    assert device is not None
    assert device.id == device_id_for(ident)
    assert await device.ident() == ident
    assert await devices.by_id(device.id) == device


async def test_registered_enrollment_refuses_an_unknown_ident_and_keeps_the_connection(
    strict_platform: Platform, devices: Devices
) -> None:
    unknown, known = new_ident("unknown"), new_ident("known")
    await devices.create(known)
    client, _ = await connect(strict_platform.m2mp_port)
    async with client:
        assert await client.identify(unknown) is False
        await client.ping(7)  # still connected, and answered
        assert await client.identify(known) is True
        await client.ping(8)
    assert await devices.by_ident(unknown) is None


async def test_a_second_identification_is_accepted_only_for_the_same_ident(
    platform: Platform,
) -> None:
    ident = new_ident("twice")
    async with device_connection(platform.m2mp_port, ident) as client:
        assert await client.identify(ident) is True
        assert await client.identify(new_ident("other")) is False
        await client.ping(1)
        assert not await client.closed(timeout=0)


async def test_an_ident_that_cannot_name_a_device_is_refused_and_the_connection_kept(
    platform: Platform,
) -> None:
    async with device_connection(platform.m2mp_port) as client:
        for unusable in ("a/b", "..", ""):
            assert await client.identify(unusable) is False
        await client.ping(1)
        assert await client.identify(new_ident("usable")) is True


# --- Pings ------------------------------------------------------------------------------


async def test_a_device_ping_is_answered_with_the_same_n(platform: Platform) -> None:
    async with device_connection(platform.m2mp_port, new_ident("ping")) as client:
        for n in (0, 1, 200, 255):
            await client.ping(n)


async def test_a_device_ping_is_answered_before_identification(platform: Platform) -> None:
    async with device_connection(platform.m2mp_port) as client:
        await client.ping(42)


async def test_a_silent_device_is_pinged_and_never_disconnected_for_its_silence(
    platform: Platform,
) -> None:
    silence = FAST_TIMING["disconnect_after_silence"]
    client, _ = await connect(platform.m2mp_port, answer_server_pings=False)
    async with client:
        assert await client.identify(new_ident("silent"))
        started = time.monotonic()
        counters = [await client.receive_server_ping(timeout=WAIT)]
        while time.monotonic() - started <= silence:  # longer than ALIP would keep it
            counters.append(await client.receive_server_ping(timeout=WAIT))
        assert counters == list(range(len(counters)))
        assert len(counters) >= 2
        await client.ping(3)  # still served
        assert not await client.closed(timeout=0)


# --- Settings, commands, status ---------------------------------------------------------


async def test_identification_pushes_the_pending_settings_and_commands(
    platform: Platform, devices: Devices
) -> None:
    ident = new_ident("pending")
    device = await devices.create(ident)
    await device.define_setting("period", "60")
    await device.define_setting("server", "example.org:3010")
    reboot = await device.add_command("reboot")
    update = await device.add_command("update\nfirmware-2.1")
    async with device_connection(platform.m2mp_port, ident) as client:
        assert await client.receive_array("_set") == [
            b"sg",
            b"period=60",
            b"server=example.org:3010",
        ]
        commands = [await client.receive_array("_cmd") for _ in range(2)]
        assert sorted(commands) == sorted(
            [
                [b"e", reboot.encode(), b"reboot"],
                [b"e", update.encode(), b"update", b"firmware-2.1"],
            ]
        )
        assert await client.receive_array("_sta") == [b"g", b"cap"]
        await nothing_else_sent(client)  # it has settings: no "send them all"


async def test_a_new_device_is_asked_its_capabilities_and_all_its_settings(
    platform: Platform,
) -> None:
    async with device_connection(platform.m2mp_port, new_ident("new")) as client:
        assert await client.receive_array("_sta") == [b"g", b"cap"]
        assert await client.receive_array("_set") == [b"ga"]
        await nothing_else_sent(client)


async def test_a_device_with_known_capabilities_and_settings_is_asked_nothing(
    platform: Platform, devices: Devices
) -> None:
    ident = new_ident("known")
    device = await devices.create(ident)
    await device.set_status({"cap": "gps,modem"})
    await device.ack_setting("period", "60")  # on record, not pending
    async with device_connection(platform.m2mp_port, ident) as client:
        await nothing_else_sent(client)


async def test_set_ga_is_answered_with_all_the_settings(
    platform: Platform, devices: Devices
) -> None:
    ident = new_ident("ga")
    device = await devices.create(ident)
    await device.set_status({"cap": "gps"})
    await device.ack_setting("period", "60")
    await device.ack_setting("apn", "internet")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_array("_set", [b"ga"])
        assert await client.receive_array("_set") == [b"sg", b"apn=internet", b"period=60"]


async def test_set_u_deletes_the_settings_the_device_does_not_know(
    platform: Platform, devices: Devices
) -> None:
    ident = new_ident("u")
    device = await devices.create(ident)
    await device.define_setting("keep", "1")
    await device.define_setting("old", "2")
    await device.define_setting("older", "3")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_array("_set", [b"u", b"old", b"older"])
        await client.ping(1)
    assert await device.settings() == {"keep": "1"}
    assert await device.settings_to_send() == {"keep": "1"}


async def test_set_g_and_sg_acknowledge_settings_and_stamp_their_ack_time(
    platform: Platform, devices: Devices
) -> None:
    ident = new_ident("ack")
    device = await devices.create(ident)
    for name, value in (("period", "60"), ("apn", "internet"), ("mode", "eco")):
        await device.define_setting(name, value)
    before = int(time.time())
    async with device_connection(platform.m2mp_port, ident) as client:
        assert await client.receive_array("_set") == [
            b"sg",
            b"apn=internet",
            b"mode=eco",
            b"period=60",
        ]
        client.send_array("_set", [b"g", b"period=60", b"extra=yes"])
        client.send_array("_set", [b"sg", b"apn=internet"])
        client.send_array("_set", [b"g", b"mode=sport"])  # not the value asked for
        await client.ping(1)  # the acknowledgements were handled before the answer
    after = int(time.time())
    assert await device.settings_to_send() == {"mode": "eco"}
    assert await device.settings() == {
        "period": "60", "apn": "internet", "mode": "sport", "extra": "yes"
    }  # fmt: skip
    stamps = await device.settings_ack_times()
    assert set(stamps) == {"period", "apn"}
    assert all(before <= stamp <= after for stamp in stamps.values())


async def test_a_setting_is_not_pushed_again_to_one_connection_within_the_interval(
    strict_platform: Platform, devices: Devices, publisher: Publisher
) -> None:
    ident = new_ident("no-resend")
    device = await devices.create(ident)
    await device.define_setting("period", "60")
    async with device_connection(strict_platform.m2mp_port, ident) as client:
        assert await client.receive_array("_set") == [b"sg", b"period=60"]
        await device.define_setting("apn", "internet")
        publisher.publish(control(f"receivers;device_id={device.id}", topics.SEND_SETTINGS))
        # "period" is still pending, but was pushed here less than 60 s ago.
        assert await client.receive_array("_set", timeout=WAIT) == [b"sg", b"apn=internet"]
    async with device_connection(strict_platform.m2mp_port, ident) as client:
        # Another connection is another matter.
        assert await client.receive_array("_set") == [b"sg", b"apn=internet", b"period=60"]


async def test_a_setting_still_pending_is_pushed_again_once_the_interval_has_passed(
    platform: Platform, devices: Devices, publisher: Publisher
) -> None:
    interval = float(FAST_TIMING["setting_resend_interval"])
    ident = new_ident("resend")
    device = await devices.create(ident)
    await device.define_setting("period", "60")
    async with device_connection(platform.m2mp_port, ident) as client:
        assert await client.receive_array("_set") == [b"sg", b"period=60"]
        deadline = time.monotonic() + WAIT
        again: list[bytes] | None = None
        while again is None and time.monotonic() < deadline:  # ask until it comes again
            publisher.publish(control(f"receivers;device_id={device.id}", topics.SEND_SETTINGS))
            with contextlib.suppress(TimeoutError):
                again = await client.receive_array("_set", timeout=interval / 4)
        assert again == [b"sg", b"period=60"]


async def test_status_values_are_stored(platform: Platform, devices: Devices) -> None:
    ident = new_ident("status")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_array("_sta", [b"g", b"cap=gps,modem", b"fw=2.1", b"no-equals-sign"])
        client.send_array("_sta", [b"x", b"ignored=1"])  # not a report
        await client.ping(1)
    device = await devices.by_ident(ident)
    assert device is not None
    assert await device.status() == {"cap": "gps,modem", "fw": "2.1"}


async def test_a_command_acknowledgement_stores_its_response_lines_joined(
    platform: Platform, devices: Devices
) -> None:
    ident = new_ident("cmd")
    device = await devices.create(ident)
    command = await device.add_command("uptime")
    silent = await device.add_command("beep")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_array("_cmd", [b"a", command.encode(), b"up 3 days", b"load 0.11"])
        client.send_array("_cmd", [b"a", silent.encode()])
        await client.ping(1)
    assert await device.commands() == {}
    assert await device.command_responses() == {command: "up 3 days\nload 0.11", silent: ""}


# --- Malformed or early input -----------------------------------------------------------


async def test_data_before_identification_is_ignored(
    platform: Platform, timeseries: TimeSeries
) -> None:
    allowed = platform.config.receivers.timing.unidentified_frames_allowed
    ident = new_ident("early")
    async with device_connection(platform.m2mp_port) as client:
        for n in range(allowed):
            client.send_data("early", f"before-{n}".encode())
        await client.ping(1)
        assert await client.identify(ident)
        client.send_data("early", b"after")
        await client.ping(2)
        assert not await client.closed(timeout=0)
    device_id = device_id_for(ident)
    (record,) = await stored(timeseries, device_id, "early")
    assert record.data == "after"


async def test_too_much_data_before_identification_closes_the_connection(
    platform: Platform,
) -> None:
    allowed = platform.config.receivers.timing.unidentified_frames_allowed
    async with device_connection(platform.m2mp_port) as client:
        for n in range(allowed + 1):
            client.send_data("early", f"before-{n}".encode())
        assert await client.closed(timeout=WAIT)


async def test_an_unknown_header_closes_the_connection_after_the_frames_before_it(
    platform: Platform, timeseries: TimeSeries
) -> None:
    ident = new_ident("bad-header")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_data("last-words", b"handled")
        client.send_raw(b"\x7f\x00\x00")
        assert await client.closed(timeout=WAIT)
    (record,) = await stored(timeseries, device_id_for(ident), "last-words")
    assert record.data == "handled"


@pytest.mark.parametrize("header", [0x61, 0x62], ids=["data", "array"])
async def test_a_frame_declaring_more_than_1_mib_closes_the_connection(
    platform: Platform, header: int
) -> None:
    async with device_connection(platform.m2mp_port, new_ident("huge")) as client:
        client.send_raw(bytes([header]) + struct.pack(">I", MAX_FRAME_SIZE + 1))
        assert await client.closed(timeout=WAIT)


async def test_a_frame_of_exactly_1_mib_is_accepted(platform: Platform) -> None:
    async with device_connection(platform.m2mp_port) as client:
        body = bytes([0]) + bytes(MAX_FRAME_SIZE - 1)  # channel 0, then data
        client.send_raw(bytes([0x61]) + struct.pack(">I", MAX_FRAME_SIZE) + body)
        await client.ping(1)  # unidentified: ignored, and the connection lives on


async def test_frames_arriving_one_byte_at_a_time_are_handled(
    platform: Platform, timeseries: TimeSeries
) -> None:
    ident = new_ident("trickle")
    stream = b"".join(
        encode(frame)
        for frame in (
            IdentificationRequest(ident),
            ChannelDefinition(0, "sen:slow"),
            ChannelDefinition(1, "echo:slow"),
            ChannelDefinition(2, "list"),
            Data(0, b"12.5"),
            DataArray(2, (b"one", b"two")),
            Data(1, b"back"),
            DevicePing(5),
        )
    )
    async with device_connection(platform.m2mp_port) as client:
        for index in range(len(stream)):
            client.send_raw(stream[index : index + 1])
            await client.drain()
            await asyncio.sleep(0.001)  # one byte per segment, as slow links deliver them
        await client.ping(5)
        received = [await client.receive() for _ in range(3)]
    assert received[-1] == ReceivedData("echo:slow", b"back")  # after _sta and _set questions
    device_id = device_id_for(ident)
    (value,) = await stored(timeseries, device_id, "sen:slow")
    (items,) = await stored(timeseries, device_id, "list")
    assert (value.data, items.data) == ("12.5", ["one", "two"])


async def test_data_on_a_channel_id_never_defined_is_kept_under_its_number(
    platform: Platform, timeseries: TimeSeries
) -> None:
    ident = new_ident("undefined-channel")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_raw(encode(Data(77, b"orphan")))
    (record,) = await stored(timeseries, device_id_for(ident), "__channel_77")
    assert record.data == "orphan"


async def test_channel_ids_start_again_at_0_past_255_names_in_both_directions(
    platform: Platform,
) -> None:
    names = [f"echo:{n}" for n in range(300)]
    async with device_connection(platform.m2mp_port, new_ident("many-channels")) as client:
        for name in names:
            client.send_data(name, name.encode())
        echoes: list[ReceivedData] = []
        while len(echoes) < len(names):
            received = await client.receive()
            if isinstance(received, ReceivedData):
                echoes.append(received)
    assert echoes == [ReceivedData(name, name.encode()) for name in names]


@pytest.mark.parametrize("size", [300, 70_000], ids=["u16-size", "u32-size"])
async def test_a_large_payload_is_stored_whole(
    platform: Platform, timeseries: TimeSeries, size: int
) -> None:
    ident = new_ident("large")
    payload = (b"0123456789" * (size // 10 + 1))[:size]
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_data("dump", payload)
        client.send_array("dump:parts", [payload, payload[: size // 2]])
    (record,) = await stored(timeseries, device_id_for(ident), "dump")
    (parts,) = await stored(timeseries, device_id_for(ident), "dump:parts")
    assert record.data == payload.decode()
    assert parts.data == [payload.decode(), payload[: size // 2].decode()]


# --- The connection's life: events and _server records ----------------------------------


async def test_the_connection_life_is_published_on_the_events_topic(
    platform: Platform, events: BusTap
) -> None:
    ident = new_ident("events")
    device_id = device_id_for(ident)
    client, source = await connect(platform.m2mp_port)
    async with client:
        connected = await events.first(
            event_of(topics.DEVICE_CONNECTED, source),
            "device_connected",
        )
        connection_id = connected.fields["connection_id"]
        assert await client.identify(ident)
    identified = await events.first(
        event_of(topics.DEVICE_IDENTIFIED, source),
        "device_identified",
    )
    disconnected = await events.first(
        event_of(topics.DEVICE_DISCONNECTED, source),
        "device_disconnected",
    )
    assert "device_id" not in connected.fields
    assert connected.fields["host"]
    for event in (identified, disconnected):
        assert event.fields["connection_id"] == connection_id
        assert event.fields["device_id"] == device_id
        assert event.to == topics.EVENTS
        assert event.sender.startswith(f"{topics.RECEIVERS}/")
        assert event.sender.endswith(f";connection_id={connection_id}")
    duration = disconnected.fields["connection_duration"]
    assert isinstance(duration, int) and duration >= 0


async def test_the_connection_life_is_recorded_in_the_device_server_series(
    platform: Platform, timeseries: TimeSeries
) -> None:
    ident = new_ident("server-records")
    device_id = device_id_for(ident)
    before = datetime.now(UTC)
    client, source = await connect(platform.m2mp_port)
    async with client:
        assert await client.identify(ident)
    found = await stored(timeseries, device_id, "_server", count=3)
    assert sorted(record.data["type"] for record in found) == [
        "device_connected", "device_disconnected", "device_identified"
    ]  # fmt: skip
    connected = server_record(found, "device_connected")
    identified = server_record(found, "device_identified")
    disconnected = server_record(found, "device_disconnected")
    assert before - timedelta(seconds=1) <= connected.time <= identified.time
    assert identified.time <= disconnected.time
    assert {record.data["source"] for record in found} == {source}
    assert len({record.data["connection_id"] for record in found}) == 1
    assert disconnected.data["connection_duration"] >= 0
    every_type = await records(timeseries, device_id)
    assert {record.uuid for record in found} <= {record.uuid for record in every_type}


# --- Converter rules --------------------------------------------------------------------

PAYLOAD_TIME = 1_700_000_000
"""2023-11-14T22:13:20Z: a time carried in the payload."""


@pytest.mark.parametrize(
    ("payload", "expected", "unix_time"),
    [
        (struct.pack(">ff", 48.85, 2.35), {"lat": 48.85, "lon": 2.35}, None),
        (struct.pack(">ffH", 48.85, 2.35, 92), {"lat": 48.85, "lon": 2.35, "spd": 92}, None),
        (
            struct.pack(">Iff", PAYLOAD_TIME, -33.8688, 151.2093),
            {"lat": -33.8688, "lon": 151.2093},
            PAYLOAD_TIME,
        ),
        (
            struct.pack(">IffH", PAYLOAD_TIME, 48.85, 2.35, 15),
            {"lat": 48.85, "lon": 2.35, "spd": 15},
            PAYLOAD_TIME,
        ),
        (
            struct.pack(">IffHH", PAYLOAD_TIME, 48.85, 2.35, 15, 35),
            {"lat": 48.85, "lon": 2.35, "spd": 15, "alt": 35},
            PAYLOAD_TIME,
        ),
        (struct.pack(">B", 9), {"sat": 9}, None),
        (struct.pack(">IB", PAYLOAD_TIME, 4), {"sat": 4}, PAYLOAD_TIME),
    ],
    ids=["lat-lon", "speed", "time-lat-lon", "time-speed", "time-speed-alt", "sat", "time-sat"],
)
async def test_a_location_is_stored_at_its_own_time_or_else_when_it_arrived(
    platform: Platform,
    timeseries: TimeSeries,
    payload: bytes,
    expected: dict[str, Any],
    unix_time: int | None,
) -> None:
    ident = new_ident("loc")
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_data("sen:loc", payload)
        await client.ping(1)
    (record,) = await stored(timeseries, device_id_for(ident), "sen:loc")
    assert record.data == expected
    if unix_time is None:
        assert before <= record.time <= datetime.now(UTC)
    else:
        assert record.time == datetime.fromtimestamp(unix_time, UTC)


async def test_a_sensor_array_is_stored_at_its_own_time(
    platform: Platform, timeseries: TimeSeries
) -> None:
    ident = new_ident("sen-array")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_array("sen:temp", [struct.pack(">I", PAYLOAD_TIME), b"21.5"])
        client.send_array("sen:temp", [struct.pack(">I", PAYLOAD_TIME + 60), b"22.0"])
    found = await stored(timeseries, device_id_for(ident), "sen:temp", count=2)
    assert [(record.time, record.data) for record in found] == [
        (datetime.fromtimestamp(PAYLOAD_TIME, UTC), "21.5"),
        (datetime.fromtimestamp(PAYLOAD_TIME + 60, UTC), "22.0"),
    ]


async def test_another_array_is_stored_as_a_list_of_strings(
    platform: Platform, timeseries: TimeSeries
) -> None:
    ident = new_ident("array")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_array("wifi:scan", [b"home", b"", "caf\u00e9".encode()])
    (record,) = await stored(timeseries, device_id_for(ident), "wifi:scan")
    assert record.data == ["home", "", "caf\u00e9"]


async def test_other_data_is_stored_as_a_string(platform: Platform, timeseries: TimeSeries) -> None:
    ident = new_ident("text")
    async with device_connection(platform.m2mp_port, ident) as client:
        client.send_data("log", b"boot complete")
        client.send_data("log", b"bad \xff byte")
    found = await stored(timeseries, device_id_for(ident), "log", count=2)
    assert sorted(record.data for record in found) == ["bad \ufffd byte", "boot complete"]


async def test_special_disconnect_me_closes_only_this_connection(
    platform: Platform, timeseries: TimeSeries
) -> None:
    ident = new_ident("disconnect-me")
    async with (
        device_connection(platform.m2mp_port, ident) as leaving,
        device_connection(platform.m2mp_port, ident) as staying,
    ):
        leaving.send_data("_special", b"disconnect_me")
        assert await leaving.closed(timeout=WAIT)
        await staying.ping(1)
        assert not await staying.closed(timeout=0)
    (record,) = await stored(timeseries, device_id_for(ident), "_special")
    assert record.data == "disconnect_me"


async def test_special_disconnect_us_closes_every_connection_of_the_device(
    platform: Platform,
) -> None:
    ident = new_ident("disconnect-us")
    async with (
        device_connection(platform.m2mp_port, ident) as first,
        device_connection(platform.m2mp_port, ident) as second,
        device_connection(platform.m2mp_port, new_ident("bystander")) as bystander,
    ):
        first.send_data("_special", b"disconnect_us")
        assert await first.closed(timeout=WAIT)
        assert await second.closed(timeout=WAIT)
        await bystander.ping(1)


# --- Channel translation ----------------------------------------------------------------


async def test_channel_translation_routes_data_by_the_device_rules_then_the_default_ones(
    platform: Platform,
    config: Config,
    devices: Devices,
    publisher: Publisher,
    timeseries: TimeSeries,
    database: Database,
) -> None:
    tag = uuid.uuid4().hex[:8]
    own_topic, default_topic = f"e2e-own-{tag}", f"e2e-default-{tag}"
    ident = new_ident("routes")
    device = await devices.create(ident)
    await add_route(device, Route.checked(10, f"^route-{tag}:", own_topic))
    default_route = Route.checked(10, f"^(route|other)-{tag}:", default_topic)
    await add_route(DefaultDevice(database), default_route)
    own, default = BusTap(own_topic, config), BusTap(default_topic, config)
    try:
        await own.start(publisher)
        await default.start(publisher)
        async with device_connection(platform.m2mp_port, ident) as client:
            client.send_data(f"route-{tag}:a", b"\x01\x02")
            client.send_array(f"other-{tag}:b", [b"x", b"y"])
            client.send_data("sen:plain", b"7")
            routed = await own.first(lambda e: e.call == topics.DATA_SIMPLE, "device route")
            defaulted = await default.first(lambda e: e.call == topics.DATA_ARRAY, "default")
        (plain,) = await stored(timeseries, device.id, "sen:plain")
    finally:
        await own.close()
        await default.close()
        await remove_route(DefaultDevice(database), default_route.priority, default_route.regex)
    assert routed.to == own_topic
    assert routed.fields["device_id"] == device.id
    assert routed.fields["channel"] == f"route-{tag}:a"
    assert routed.fields["data"] == "0102"
    assert routed.sender.endswith(f";connection_id={routed.fields['connection_id']}")
    assert defaulted.fields["channel"] == f"other-{tag}:b"
    assert defaulted.fields["data"] == [b"x".hex(), b"y".hex()]
    assert [e.fields.get("channel") for e in default.messages if e.call != "tests_marker"] == [
        f"other-{tag}:b"
    ]  # the device's own rule won for route-…
    assert plain.data == "7"
    assert await records(timeseries, device.id, f"route-{tag}:a") == []


# --- Control over the bus ---------------------------------------------------------------


async def test_send_settings_and_commands_addressed_to_the_device_reach_it(
    platform: Platform, devices: Devices, publisher: Publisher
) -> None:
    ident = new_ident("control")
    device = await devices.create(ident)
    await device.set_status({"cap": "gps"})
    await device.ack_setting("period", "60")
    async with device_connection(platform.m2mp_port, ident) as client:
        await nothing_else_sent(client)
        await device.define_setting("period", "30")
        publisher.publish(control(f"receivers;device_id={device.id}", topics.SEND_SETTINGS))
        assert await client.receive_array("_set", timeout=WAIT) == [b"sg", b"period=30"]
        command = await device.add_command("reboot\nnow")
        publisher.publish(control(f"receivers;device_id={device.id}", topics.SEND_COMMANDS))
        assert await client.receive_array("_cmd", timeout=WAIT) == [
            b"e",
            command.encode(),
            b"reboot",
            b"now",
        ]


async def test_control_addressed_to_a_connection_reaches_only_that_connection(
    platform: Platform, devices: Devices, publisher: Publisher, events: BusTap
) -> None:
    ident = new_ident("control-connection")
    device = await devices.create(ident)
    await device.set_status({"cap": "gps"})
    await device.ack_setting("period", "60")
    target, source = await connect(platform.m2mp_port)
    other, _ = await connect(platform.m2mp_port)
    async with target, other:
        assert await target.identify(ident) and await other.identify(ident)
        await nothing_else_sent(target)
        await nothing_else_sent(other)
        identified = await events.first(
            event_of(topics.DEVICE_IDENTIFIED, source),
            "device_identified of the target connection",
        )
        connection_id = identified.fields["connection_id"]
        command = await device.add_command("beep")
        publisher.publish(control(f"receivers;connection_id={connection_id}", topics.SEND_COMMANDS))
        assert await target.receive_array("_cmd", timeout=WAIT) == [b"e", command.encode(), b"beep"]
        await device.define_setting("period", "10")
        # The event's sender is the receiver's own address: an answer reaches that process only.
        publisher.publish(control(identified.sender, topics.SEND_SETTINGS))
        assert await target.receive_array("_set", timeout=WAIT) == [b"sg", b"period=10"]
        publisher.publish(control(identified.sender, topics.DISCONNECT))
        assert await target.closed(timeout=WAIT)
        await nothing_else_sent(other)
        assert not await other.closed(timeout=0)


async def test_disconnect_addressed_to_the_device_closes_all_its_connections(
    platform: Platform, publisher: Publisher
) -> None:
    ident = new_ident("control-disconnect")
    async with (
        device_connection(platform.m2mp_port, ident) as first,
        device_connection(platform.m2mp_port, ident) as second,
        device_connection(platform.m2mp_port, new_ident("bystander")) as bystander,
    ):
        to = f"receivers;device_id={device_id_for(ident)}"
        publisher.publish(control(to, topics.DISCONNECT))
        assert await first.closed(timeout=WAIT)
        assert await second.closed(timeout=WAIT)
        await bystander.ping(1)


async def test_settings_or_commands_for_a_connection_not_identified_yet_are_not_retried(
    platform: Platform, config: Config, publisher: Publisher, events: BusTap
) -> None:
    client, source = await connect(platform.m2mp_port)
    async with client:
        connected = await events.first(
            event_of(topics.DEVICE_CONNECTED, source),
            "device_connected",
        )
        receiver = connected.sender.partition(";")[0]
        before = await control_stats(config.nsq, receiver)
        publisher.publish(control(connected.sender, topics.SEND_SETTINGS))
        publisher.publish(control(connected.sender, topics.SEND_COMMANDS))
        assert await publisher.flush(WAIT)
        after = await control_settled(config.nsq, receiver, before["message_count"] + 1)
        # Nothing to send to a device that has not said who it is: done, not failed.
        assert after["requeue_count"] == before["requeue_count"]
        assert after["deferred_count"] == 0
        publisher.publish(control(connected.sender, topics.DISCONNECT))
        assert await client.closed(timeout=WAIT)


async def test_disconnect_me_spares_the_same_numbered_connection_of_another_receiver(
    platform: Platform,
    strict_platform: Platform,
    config: Config,
    publisher: Publisher,
    events: BusTap,
) -> None:
    probe, probed = await numbered_connection(strict_platform.m2mp_port, events, 0, exactly=False)
    async with probe:
        pass
    sender, connected = await numbered_connection(
        platform.m2mp_port, events, int(probed.fields["connection_id"]) + 1, exactly=False
    )
    number = int(connected.fields["connection_id"])
    bystander, other = await numbered_connection(
        strict_platform.m2mp_port, events, number, exactly=True
    )
    other_receiver = other.sender.partition(";")[0]
    async with sender, bystander:
        assert await sender.identify(new_ident("disconnect-me-numbered"))
        sender.send_data("_special", b"disconnect_me")
        assert await sender.closed(timeout=WAIT)
        # Whatever the converter asked of the receivers is in their channels by now: once
        # a message published after it is handled by the other receiver, so is it.
        before = await control_stats(config.nsq, other_receiver)
        publisher.publish(control(f"{other_receiver};connection_id=0", topics.SEND_COMMANDS))
        assert await publisher.flush(WAIT)
        await control_settled(config.nsq, other_receiver, before["message_count"])
        await bystander.ping(1)
        assert not await bystander.closed(timeout=0)


# --- Failures of the bus and of the workers ---------------------------------------------


async def send_numbered(
    client: M2MPClient, channel: str, sent: list[int], stop: asyncio.Event
) -> None:
    """Send 0, 1, 2… on ``channel`` until ``stop``; ``sent`` holds what went out."""
    while not stop.is_set():
        client.send_data(channel, str(len(sent)).encode())
        sent.append(len(sent))
        await client.drain()
        await asyncio.sleep(0.005)


async def wait_for_more(sent: list[list[int]], more: int) -> None:
    """Return once the devices sent ``more`` frames beyond what they sent so far."""

    async def total() -> int:
        return sum(map(len, sent))

    target = await total() + more
    await eventually(total, lambda count: count >= target, f"{target} frames sent")


async def all_stored_once(
    timeseries: TimeSeries,
    idents: list[str],
    channel: str,
    sent: list[list[int]],
    timeout: float = WAIT,
) -> None:
    """Every numbered frame each device sent is a record, exactly once."""
    for ident, numbers in zip(idents, sent, strict=True):
        found = await eventually(
            partial(records, timeseries, device_id_for(ident), channel),
            partial(_has_at_least, len(numbers)),
            f"{len(numbers)} {channel} records of {ident}",
            timeout,
        )
        assert len(found) == len(numbers)
        assert len({record.uuid for record in found}) == len(numbers)
        assert sorted(int(record.data) for record in found) == numbers


def _has_at_least(count: int, found: list[Record]) -> bool:
    return len(found) >= count


@asynccontextmanager
async def sending_devices(
    port: int, count: int, channel: str
) -> AsyncIterator[tuple[list[str], list[list[int]]]]:
    """``count`` devices sending numbered frames until the block ends; all sent is handled."""
    idents = [new_ident(f"stream-{n}") for n in range(count)]
    clients = []
    for ident in idents:
        client, _ = await connect(port)
        assert await client.identify(ident)
        clients.append(client)
    sent: list[list[int]] = [[] for _ in idents]
    stop = asyncio.Event()
    senders = [
        asyncio.create_task(send_numbered(client, channel, numbers, stop))
        for client, numbers in zip(clients, sent, strict=True)
    ]
    try:
        yield idents, sent
    finally:
        stop.set()
        await asyncio.gather(*senders)
        for client in clients:
            await client.ping(1)  # every frame before it was handled
            async with client:
                pass


async def test_an_nsqd_restart_during_ingestion_loses_no_accepted_frame(
    config_file: Path, tmp_path: Path, timeseries: TimeSeries
) -> None:
    own_topics = config_with_own_topics(config_file, tmp_path)
    serving = await asyncio.to_thread(start_platform, own_topics, tmp_path)
    try:
        async with sending_devices(serving.m2mp_port, 3, "sen:count") as (idents, sent):
            await wait_for_more(sent, 60)
            await asyncio.to_thread(run_m2m, "stack", "stop", "nsqd")
            try:
                await wait_for_more(sent, 150)  # accepted while nsqd is away
            finally:
                await asyncio.to_thread(run_m2m, "stack", "start", "nsqd")
            await wait_for_more(sent, 60)
        await all_stored_once(timeseries, idents, "sen:count", sent)
    finally:
        status = await asyncio.to_thread(serving.stop)
    assert status == 0
    # Its publishers' books balance: nothing left that nsqd never acknowledged.
    assert "not acknowledged by nsqd" not in serving.log.read_text()


async def test_a_storage_worker_killed_mid_stream_loses_and_duplicates_nothing(
    config_file: Path, tmp_path: Path, timeseries: TimeSeries
) -> None:
    own_topics = config_with_own_topics(config_file, tmp_path)
    nsq = load_config(own_topics).nsq
    receiving = await asyncio.to_thread(start_platform, own_topics, tmp_path, "m2mp,converter")
    storing = await asyncio.to_thread(start_platform, own_topics, tmp_path, "storage")
    try:
        async with sending_devices(receiving.m2mp_port, 3, "sen:count") as (idents, sent):
            await eventually(
                partial(records, timeseries, device_id_for(idents[0]), "sen:count"),
                partial(_has_at_least, 20),
                "the first records stored",
            )
            # Stopped first, it holds what nsqd sends it from then on, unfinished: the kill
            # then surely takes messages with it, whatever the worker's pace.
            storing.process.send_signal(signal.SIGSTOP)
            await eventually(
                partial(channel_stats, nsq, topics.STORAGE, STORAGE_CHANNEL),
                lambda stats: stats["in_flight_count"] > 0,
                "messages in the stopped worker's hands",
            )
            storing.process.kill()
            assert storing.process.wait(timeout=30) != 0
            await wait_for_more(sent, 100)
            storing = await asyncio.to_thread(start_platform, own_topics, tmp_path, "storage")
            await wait_for_more(sent, 100)
        # What the killed worker held comes back once nsqd gives up on it (its message
        # timeout, 60 s by default): the wait allows for that.
        await all_stored_once(timeseries, idents, "sen:count", sent, timeout=WAIT + 60)
    finally:
        await asyncio.to_thread(receiving.stop)
        await asyncio.to_thread(storing.stop)
