"""The simulated M2MP device against a tiny scripted server on real TCP (not the receiver)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from m2m.receivers.m2mp.client import M2MPClient, ReceivedArray, ReceivedData
from m2m.receivers.m2mp.codec import (
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
    ProtocolError,
    ServerPing,
    ServerPingAnswer,
    encode,
)

SHORT = 0.2
"""Seconds to wait for something that must not happen."""


class ServerSide:
    """The server's end of one connection: what the device sent, and a way to answer.

    Identification requests are accepted unless the ident is "refused"; device pings are
    answered while `answers_device_pings` is true; a malformed stream drops the connection.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.answers_device_pings = True
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._reader = reader
        self._writer = writer

    async def serve(self) -> None:
        decoder = Decoder(Direction.DEVICE_TO_SERVER)
        try:
            while chunk := await self._reader.read(65_536):
                for frame in decoder.feed(chunk):
                    self._answer(frame)
                    self.frames.put_nowait(frame)
        except ProtocolError:
            pass
        finally:
            self._writer.close()
            self.ended.set()

    def _answer(self, frame: Frame) -> None:
        match frame:
            case IdentificationRequest(ident=ident):
                self.send(IdentificationResult(ident != "refused"))
            case DevicePing(n=n) if self.answers_device_pings:
                self.send(DevicePingAnswer(n))

    def send(self, *frames: Frame) -> None:
        self.send_bytes(b"".join(map(encode, frames)))

    def send_bytes(self, data: bytes) -> None:
        self._writer.write(data)

    async def next_frame(self) -> Frame:
        async with asyncio.timeout(5):
            return await self.frames.get()

    def drop(self) -> None:
        self._writer.close()


class FakeServer:
    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerSide] = asyncio.Queue()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = ServerSide(reader, writer)
        self.connections.put_nowait(connection)
        await connection.serve()

    async def start(self) -> asyncio.Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def connect(self, *, answer_server_pings: bool = True) -> tuple[M2MPClient, ServerSide]:
        client = await M2MPClient.connect(
            "127.0.0.1", self.port, answer_server_pings=answer_server_pings
        )
        return client, await self.connections.get()


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    async with await fake.start():
        yield fake


@pytest.fixture
async def connection(server: FakeServer) -> AsyncIterator[tuple[M2MPClient, ServerSide]]:
    client, server_side = await server.connect()
    async with client:
        yield client, server_side


# --- Identification and sending ---------------------------------------------------------


async def test_identification_returns_whether_the_server_accepted(server: FakeServer) -> None:
    client, server_side = await server.connect()
    async with client:
        assert await client.identify("Linux_1795347850") is True
        assert await server_side.next_frame() == IdentificationRequest("Linux_1795347850")
        assert await client.identify("refused") is False


async def test_a_channel_is_defined_once_then_sent_on_its_id(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    client.send_data("sen:uptime", b"374")
    client.send_data("sen:uptime", b"375")
    client.send_array("_set", [b"g", b"servers=127.0.0.1:3999"])
    client.send_array("sen:uptime", iter([b"376"]))
    await client.drain()
    assert [await server_side.next_frame() for _ in range(6)] == [
        ChannelDefinition(0, "sen:uptime"),
        Data(0, b"374"),
        Data(0, b"375"),
        ChannelDefinition(1, "_set"),
        DataArray(1, (b"g", b"servers=127.0.0.1:3999")),
        DataArray(0, (b"376",)),
    ]


async def test_raw_bytes_go_out_as_they_are(connection: tuple[M2MPClient, ServerSide]) -> None:
    client, server_side = connection
    client.send_raw(bytes.fromhex("02000201"))
    assert [await server_side.next_frame() for _ in range(2)] == [DevicePing(0), DevicePing(1)]


# --- Pings ------------------------------------------------------------------------------


async def test_a_device_ping_waits_for_the_answer_with_its_counter(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.answers_device_pings = False
    ping = asyncio.create_task(client.ping(5))
    assert await server_side.next_frame() == DevicePing(5)
    server_side.send(DevicePingAnswer(4))
    await asyncio.sleep(SHORT)
    assert not ping.done()
    server_side.send(DevicePingAnswer(5))
    await ping


async def test_a_device_ping_answered_by_the_server(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, _ = connection
    await asyncio.gather(*(client.ping(n) for n in (0, 255, 7)))


async def test_server_pings_are_answered_and_reported(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send(ServerPing(3), ServerPing(4))
    assert await server_side.next_frame() == ServerPingAnswer(3)
    assert await server_side.next_frame() == ServerPingAnswer(4)
    assert await client.receive_server_ping() == 3
    assert await client.receive_server_ping() == 4


async def test_server_pings_go_unanswered_when_answers_are_disabled(server: FakeServer) -> None:
    client, server_side = await server.connect(answer_server_pings=False)
    async with client:
        server_side.send(ServerPing(9))
        assert await client.receive_server_ping() == 9
        client.send_data("sen:x", b"after the ping")
        assert await server_side.next_frame() == ChannelDefinition(0, "sen:x")
        client.answer_server_pings = True
        server_side.send(ServerPing(10))
        assert await server_side.next_frame() == Data(0, b"after the ping")
        assert await server_side.next_frame() == ServerPingAnswer(10)


# --- Receiving --------------------------------------------------------------------------


async def test_data_and_arrays_arrive_under_their_channel_names(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send(
        ChannelDefinition(0, "echo:test"),
        Data(0, b"echo_0"),
        DataArray(0, (b"a", b"")),
        Data(9, b"undefined"),
        ChannelDefinition(0, "_cmd"),
        Data(0, b"redefined"),
    )
    assert await client.receive() == ReceivedData("echo:test", b"echo_0")
    assert await client.receive() == ReceivedArray("echo:test", (b"a", b""))
    assert await client.receive() == ReceivedData("__channel_9", b"undefined")
    assert await client.receive() == ReceivedData("_cmd", b"redefined")


async def test_an_array_is_taken_by_channel_and_the_others_wait_their_turn(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send(
        ChannelDefinition(0, "_sta"),
        ChannelDefinition(1, "_set"),
        DataArray(0, (b"g", b"cap")),
        Data(1, b"not an array"),
        DataArray(1, (b"ga",)),
    )
    assert await client.receive_array("_set") == [b"ga"]
    assert await client.receive() == ReceivedArray("_sta", (b"g", b"cap"))
    assert await client.receive() == ReceivedData("_set", b"not an array")


async def test_a_wait_for_what_never_comes_times_out(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send(ChannelDefinition(0, "_sta"), DataArray(0, (b"g",)))
    with pytest.raises(TimeoutError):
        await client.receive_array("_set", timeout=SHORT)
    with pytest.raises(TimeoutError):
        await client.receive_server_ping(timeout=SHORT)
    assert await client.receive() == ReceivedArray("_sta", (b"g",))


async def test_frames_cut_into_single_bytes_are_put_back_together(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    frames: list[Frame] = [ChannelDefinition(0, "sen:x"), Data(0, b"1234"), DataArray(0, (b"a",))]
    stream = b"".join(map(encode, frames))
    for byte in stream:
        server_side.send_bytes(bytes([byte]))
        await asyncio.sleep(0.002)  # one read per byte, rather than one for the lot
    assert await client.receive() == ReceivedData("sen:x", b"1234")
    assert await client.receive() == ReceivedArray("sen:x", (b"a",))


async def test_a_frame_larger_than_one_read_arrives_whole(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    big = bytes(range(256)) * 1000
    server_side.send(ChannelDefinition(0, "blob"), Data(0, big), DataArray(0, (big, big)))
    assert await client.receive() == ReceivedData("blob", big)
    assert await client.receive() == ReceivedArray("blob", (big, big))


# --- The end of the connection ----------------------------------------------------------


async def test_closed_tells_when_the_server_drops_the_connection_on_bad_input(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    assert await client.closed(timeout=SHORT) is False
    client.send_raw(b"\xff")
    assert await client.closed() is True
    assert server_side.ended.is_set()


async def test_waits_end_when_the_server_closes(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.answers_device_pings = False
    ping = asyncio.create_task(client.ping(1))
    assert await server_side.next_frame() == DevicePing(1)
    server_side.drop()
    with pytest.raises(ConnectionError, match="the server closed the connection"):
        await ping
    with pytest.raises(ConnectionError, match="no Received came"):
        await client.receive()


async def test_what_arrived_before_the_end_can_still_be_taken(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send(ChannelDefinition(0, "_set"), DataArray(0, (b"ga",)))
    server_side.drop()
    assert await client.closed()
    assert await client.receive_array("_set") == [b"ga"]


async def test_a_server_that_breaks_the_protocol_is_disconnected(
    connection: tuple[M2MPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send_bytes(encode(ChannelDefinition(0, "x")) + encode(Data(0, b"ok")) + b"\xff")
    assert await client.closed()
    assert await client.receive() == ReceivedData("x", b"ok")
    with pytest.raises(ConnectionError, match="broke the protocol: unknown frame header 0xff"):
        await client.identify("Linux_1")
    await asyncio.wait_for(server_side.ended.wait(), 5)


async def test_closing_ends_the_connection_and_the_waits(server: FakeServer) -> None:
    client, server_side = await server.connect()
    async with client:
        receiving = asyncio.create_task(client.receive())
        await asyncio.sleep(0)
        client.close()
        with pytest.raises(ConnectionError, match="the client closed the connection"):
            await receiving
        assert await client.closed()
    await asyncio.wait_for(server_side.ended.wait(), 5)


# --- Many devices -----------------------------------------------------------------------


async def test_many_devices_share_one_process(server: FakeServer) -> None:
    devices = 300

    async def play_device(number: int) -> None:
        async with await M2MPClient.connect("127.0.0.1", server.port) as client:
            assert await client.identify(f"device-{number}")
            client.send_data("sen:n", str(number).encode())
            await client.ping(number % 256)

    await asyncio.gather(*(play_device(number) for number in range(devices)))
    assert server.connections.qsize() == devices
    while not server.connections.empty():
        server_side = server.connections.get_nowait()
        ident, definition, data, ping = [await server_side.next_frame() for _ in range(4)]
        assert isinstance(ident, IdentificationRequest)
        number = int(ident.ident.removeprefix("device-"))
        assert (definition, data, ping) == (
            ChannelDefinition(0, "sen:n"),
            Data(0, str(number).encode()),
            DevicePing(number % 256),
        )
