"""The simulated ALIP device against a tiny scripted server on real TCP (not the receiver)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from m2m.receivers.alip.client import ALIPClient, LineRefused

SHORT = 0.2
"""Seconds to wait for something that must not happen."""


class ServerSide:
    """The server's end of one connection: the lines the device sent, and a way to answer.

    ``ID <ident>`` is answered ``ID 1``, ``ID 0`` for the ident "refused", ``ERR`` for
    "bad"; ``A <x>`` is answered ``B <x>`` while `answers_device_pings` is true.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.answers_device_pings = True
        self.lines: asyncio.Queue[bytes] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._reader = reader
        self._writer = writer

    async def serve(self) -> None:
        try:
            while line := await self._reader.readline():
                self._answer(line)
                self.lines.put_nowait(line)
        finally:
            self._writer.close()
            self.ended.set()

    def _answer(self, line: bytes) -> None:
        text = line.decode().rstrip("\n")
        if text == "ID bad":
            self.send("ERR Invalid ident")
        elif text.startswith("ID "):
            self.send("ID 0" if text == "ID refused" else "ID 1")
        elif text.startswith("A ") and self.answers_device_pings:
            self.send(f"B {text[2:]}")

    @property
    def peer(self) -> tuple[str, int]:
        host, port = self._writer.get_extra_info("peername")
        return host, port

    def send(self, *lines: str) -> None:
        self.send_bytes(b"".join(f"{line}\n".encode() for line in lines))

    def send_bytes(self, data: bytes) -> None:
        self._writer.write(data)

    async def next_line(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.lines.get()

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
        # The device sends lines up to 64 KiB and more in some tests.
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=1 << 20)
        return self._server

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def connect(self, *, answer_server_pings: bool = True) -> tuple[ALIPClient, ServerSide]:
        client = await ALIPClient.connect(
            "127.0.0.1", self.port, answer_server_pings=answer_server_pings
        )
        return client, await self.connections.get()


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    async with await fake.start():
        yield fake


@pytest.fixture
async def connection(server: FakeServer) -> AsyncIterator[tuple[ALIPClient, ServerSide]]:
    client, server_side = await server.connect()
    async with client:
        yield client, server_side


# --- Identification and sending ---------------------------------------------------------


async def test_identification_returns_whether_the_server_accepted(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    assert await client.identify("imei:356938035643809") is True
    assert await server_side.next_line() == b"ID imei:356938035643809\n"
    assert await client.identify("refused") is False


async def test_an_identification_answered_err_raises_with_the_reason(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, _ = connection
    with pytest.raises(LineRefused, match="Invalid ident") as refused:
        await client.identify("bad")
    assert refused.value.reason == "Invalid ident"


async def test_identification_leaves_the_lines_around_its_answer_in_the_inbox(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send("T 1700000000")
    assert await client.identify("imei:1234") is True
    server_side.send("S GA")
    assert await client.receive_line() == "T 1700000000"
    assert await client.receive_line() == "S GA"


async def test_lines_go_out_with_a_newline_and_raw_bytes_as_they_are(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    client.send_line("D T 21.5")
    client.send_line("")
    client.send_raw(b"D V 12.1\r\nE 17")
    client.send_raw(b"00000000 T 3\n")
    assert [await server_side.next_line() for _ in range(4)] == [
        b"D T 21.5\n",
        b"\n",
        b"D V 12.1\r\n",
        b"E 1700000000 T 3\n",
    ]


async def test_a_line_with_a_newline_inside_is_refused_before_sending(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    with pytest.raises(ValueError, match="one line at a time"):
        client.send_line("D T 1\nD T 2")
    client.send_line("D T 3")
    assert await server_side.next_line() == b"D T 3\n"


async def test_the_local_address_is_the_one_the_server_sees(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    host, port = server_side.peer
    assert client.local_address == f"{host}:{port}"


# --- Pings ------------------------------------------------------------------------------


async def test_a_device_ping_waits_for_the_answer_with_its_token(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.answers_device_pings = False
    ping = asyncio.create_task(client.ping("42"))
    assert await server_side.next_line() == b"A 42\n"
    server_side.send("B 4", "B 420")
    await asyncio.sleep(SHORT)
    assert not ping.done()
    server_side.send("B 42")
    await ping
    assert client.unread == ["B 4", "B 420"]


async def test_device_pings_answered_by_the_server(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, _ = connection
    await asyncio.gather(*(client.ping(token) for token in ("0", "x y", "7")))
    assert client.unread == []


async def test_server_pings_are_answered_reported_and_kept_out_of_the_lines(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send("A 3", "ID 1", "A 4")
    assert await server_side.next_line() == b"B 3\n"
    assert await server_side.next_line() == b"B 4\n"
    assert await client.receive_server_ping() == "3"
    assert await client.receive_server_ping() == "4"
    assert await client.receive_line() == "ID 1"
    assert client.unread == []


async def test_server_pings_go_unanswered_when_answers_are_disabled(server: FakeServer) -> None:
    client, server_side = await server.connect(answer_server_pings=False)
    async with client:
        server_side.send("A 9")
        assert await client.receive_server_ping() == "9"
        client.send_line("D T after the ping")
        assert await server_side.next_line() == b"D T after the ping\n"
        client.answer_server_pings = True
        server_side.send("A 10")
        assert await server_side.next_line() == b"B 10\n"


# --- Receiving --------------------------------------------------------------------------


async def test_lines_arrive_in_order_without_their_line_endings(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send_bytes(b"ID 1\nS S a 1\r\n\nC 0 reboot now\n")
    assert [await client.receive_line() for _ in range(4)] == [
        "ID 1",
        "S S a 1",
        "",
        "C 0 reboot now",
    ]


async def test_a_line_is_taken_by_prefix_and_the_others_wait_their_turn(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send("S S a 1", "C 0 reboot", "S GA", "T 1700000000")
    assert await client.receive_line(prefix="T ") == "T 1700000000"
    assert await client.receive_line(prefix=("C ", "T ")) == "C 0 reboot"
    assert await client.receive_line(prefix="S G") == "S GA"
    assert client.unread == ["S S a 1"]


async def test_an_exact_wait_takes_only_the_line_itself(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send("F N 10", "F N 1")
    assert await client.receive_line(prefix="F N 1", exact=True) == "F N 1"
    assert client.unread == ["F N 10"]


async def test_a_block_is_taken_whole_and_the_lines_before_it_stay(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send("S GA", "BEGIN LAST", '2024-01-01T00:00:00+00:00 sen:temp "21"')
    receiving = asyncio.create_task(client.receive_block("BEGIN LAST", "END"))
    await asyncio.sleep(SHORT)
    assert not receiving.done()
    server_side.send('2024-01-01T00:00:01+00:00 sen:volt "12"', "END", "C 0 after")
    assert await receiving == [
        '2024-01-01T00:00:00+00:00 sen:temp "21"',
        '2024-01-01T00:00:01+00:00 sen:volt "12"',
    ]
    assert client.unread == ["S GA", "C 0 after"]


async def test_an_empty_block(connection: tuple[ALIPClient, ServerSide]) -> None:
    client, server_side = connection
    server_side.send("BEGIN LAST", "END")
    assert await client.receive_block("BEGIN LAST", "END") == []


async def test_a_wait_for_what_never_comes_times_out(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send("S GA")
    with pytest.raises(TimeoutError):
        await client.receive_line(SHORT, prefix="ID ")
    with pytest.raises(TimeoutError):
        await client.receive_server_ping(timeout=SHORT)
    with pytest.raises(TimeoutError):
        await client.receive_block("BEGIN LAST", "END", timeout=SHORT)
    assert await client.receive_line() == "S GA"


async def test_lines_cut_into_single_bytes_are_put_back_together(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    for byte in b"ID 1\r\nA 5\nS S name a value\n":
        server_side.send_bytes(bytes([byte]))
        await asyncio.sleep(0.002)  # one read per byte, rather than one for the lot
    assert await client.receive_line() == "ID 1"
    assert await client.receive_server_ping() == "5"
    assert await client.receive_line() == "S S name a value"


async def test_a_line_larger_than_one_read_arrives_whole(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    chunk = bytes(range(256)) * 200  # 51200 bytes: an F G answer twice the size of a read
    server_side.send(f"F G 0 {chunk.hex()}", f"F G 51200 {chunk.hex()}")
    assert await client.receive_line() == f"F G 0 {chunk.hex()}"
    assert await client.receive_line() == f"F G 51200 {chunk.hex()}"


async def test_invalid_utf8_is_replaced_rather_than_fatal(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send_bytes(b"D echo caf\xe9\nT 1\n")
    assert await client.receive_line() == "D echo caf\ufffd"
    assert await client.receive_line() == "T 1"


# --- The end of the connection ----------------------------------------------------------


async def test_closed_tells_when_the_server_closes(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    assert await client.closed(timeout=SHORT) is False
    server_side.send("QUIT bye !")
    server_side.drop()
    assert await client.closed() is True
    assert await client.receive_line() == "QUIT bye !"


async def test_waits_end_when_the_server_closes(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.answers_device_pings = False
    ping = asyncio.create_task(client.ping("1"))
    assert await server_side.next_line() == b"A 1\n"
    server_side.drop()
    with pytest.raises(ConnectionError, match="the server closed the connection"):
        await ping
    with pytest.raises(ConnectionError, match="no line 'ID ' came"):
        await client.receive_line(prefix="ID ")


async def test_a_line_cut_short_by_the_end_is_not_delivered(
    connection: tuple[ALIPClient, ServerSide],
) -> None:
    client, server_side = connection
    server_side.send_bytes(b"T 1\nT 2")
    server_side.drop()
    assert await client.closed()
    assert await client.receive_line() == "T 1"
    with pytest.raises(ConnectionError):
        await client.receive_line()


async def test_closing_ends_the_connection_and_the_waits(server: FakeServer) -> None:
    client, server_side = await server.connect()
    async with client:
        receiving = asyncio.create_task(client.receive_line())
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
        async with await ALIPClient.connect("127.0.0.1", server.port) as client:
            assert await client.identify(f"imei:{number:04d}")
            client.send_line(f"D T {number}")
            await client.ping(str(number))

    await asyncio.gather(*(play_device(number) for number in range(devices)))
    assert server.connections.qsize() == devices
    while not server.connections.empty():
        server_side = server.connections.get_nowait()
        ident, data, ping = [await server_side.next_line() for _ in range(3)]
        number = int(ident.decode().removeprefix("ID imei:"))
        assert (data, ping) == (f"D T {number}\n".encode(), f"A {number}\n".encode())


async def test_leaving_does_not_hang_on_a_server_that_stopped_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What was sent cannot be flushed: the connection is cut after the grace period, and
    the device says why it is over."""
    monkeypatch.setattr("m2m.receivers.device_client.CLOSE_GRACE", SHORT)
    accepted: list[asyncio.StreamWriter] = []

    async def never_read(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    listening = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        async with await ALIPClient.connect("127.0.0.1", port) as client:
            line = "D L " + "4" * 60_000
            for _ in range(400):  # far more than the sockets' buffers hold
                client.send_line(line)
        assert client.over
        assert client.end_reason == "the client closed the connection"
    finally:
        for writer in accepted:
            writer.close()
        listening.close()
        await listening.wait_closed()
