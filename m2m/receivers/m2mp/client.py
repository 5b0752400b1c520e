"""A device's side of M2MP over real TCP, for tests and benchmarks that play devices.

It speaks through the same sans-IO codec as the server, on asyncio streams: one reading
task per connection and no thread, so one process can play thousands of devices.

What the server sends lands in one inbox, in arrival order: identification results,
answers to our pings, server pings and data (channel ids already turned into names).
Each wait (`identify`, `ping`, `receive`, `receive_array`, ...) takes the oldest event it
is interested in and leaves the others for later waits, so a test can ask for the
``_set`` array before the ``_sta`` one that arrived first without losing either. A wait
ends with `ConnectionError` as soon as the connection is over, rather than at its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, TypeAlias, TypeVar

from m2m.receivers.m2mp.channels import IncomingChannels, OutgoingChannels
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

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds a wait lasts unless told otherwise: long for a local server, short for a test."""

_READ_SIZE: Final = 65_536


@dataclass(frozen=True, slots=True)
class Received:
    """Something the server sent on a named channel."""

    channel: str


@dataclass(frozen=True, slots=True)
class ReceivedData(Received):
    """A byte string the server sent on a channel (0x21/0x41/0x61)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ReceivedArray(Received):
    """An array of byte strings the server sent on a channel (0x22/0x42/0x62)."""

    items: tuple[bytes, ...]


_Event: TypeAlias = Received | IdentificationResult | DevicePingAnswer | ServerPing
_E = TypeVar("_E", bound=_Event)


class M2MPClient:
    """One simulated device on one TCP connection.

    Sending never waits (``send_*`` buffer into the transport; `drain` waits for the
    buffer to empty). Server pings are answered as they arrive while
    `answer_server_pings` is true; either way they also reach `receive_server_ping`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        answer_server_pings: bool = True,
    ) -> None:
        self.answer_server_pings = answer_server_pings
        self._writer = writer
        self._outgoing = OutgoingChannels()
        self._incoming = IncomingChannels()
        self._inbox: list[_Event] = []
        self._arrival = asyncio.Event()
        self._over = asyncio.Event()
        self._end_reason = ""
        self._reading = asyncio.create_task(self._read_until_over(reader))

    @classmethod
    async def connect(cls, host: str, port: int, *, answer_server_pings: bool = True) -> Self:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, answer_server_pings=answer_server_pings)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self._reading

    # --- Sending ------------------------------------------------------------------------

    async def identify(self, ident: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Say who we are; True if the server accepted the ident."""
        self._send(IdentificationRequest(ident))
        result = await self._take(IdentificationResult, timeout)
        return result.accepted

    def send_data(self, channel: str, data: bytes) -> None:
        """Send `data` on `channel`, defining the channel first if the server lacks it."""
        channel_id, definition = self._outgoing.assign(channel)
        self._send(definition, Data(channel_id, data))

    def send_array(self, channel: str, items: Iterable[bytes]) -> None:
        """Send an array on `channel`, defining the channel first if the server lacks it."""
        channel_id, definition = self._outgoing.assign(channel)
        self._send(definition, DataArray(channel_id, tuple(items)))

    async def ping(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Ping the server (0x02 `n`) and wait for its answer carrying the same `n`."""
        self._send(DevicePing(n))
        await self._take(DevicePingAnswer, timeout, lambda answer: answer.n == n)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are: for tests of what the server does with malformed input."""
        self._writer.write(data)

    async def drain(self) -> None:
        """Wait until what was sent has been handed to the operating system."""
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection; waits in progress end with `ConnectionError`."""
        self._end_reason = self._end_reason or "the client closed the connection"
        self._writer.close()

    def _send(self, *frames: Frame | None) -> None:
        self._writer.write(b"".join(encode(frame) for frame in frames if frame is not None))

    # --- Receiving ----------------------------------------------------------------------

    async def receive(self, timeout: float = DEFAULT_TIMEOUT) -> Received:
        """The oldest data or array the server sent that no wait has taken yet."""
        return await self._take(Received, timeout)

    async def receive_array(self, channel: str, timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
        """The items of the oldest array the server sent on `channel`."""
        array = await self._take(ReceivedArray, timeout, lambda array: array.channel == channel)
        return list(array.items)

    async def receive_server_ping(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The counter of the oldest server ping (0x03) not taken yet, answered or not."""
        ping = await self._take(ServerPing, timeout)
        return ping.n

    async def closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the connection is over (the server closed it), False if still open."""
        try:
            async with asyncio.timeout(timeout):
                await self._over.wait()
        except TimeoutError:
            return False
        return True

    async def _take(
        self,
        kind: type[_E],
        timeout: float,
        wanted: Callable[[_E], bool] = lambda _: True,
    ) -> _E:
        async with asyncio.timeout(timeout):
            while True:
                for index, event in enumerate(self._inbox):
                    if isinstance(event, kind) and wanted(event):
                        del self._inbox[index]
                        return event
                if self._over.is_set():
                    raise ConnectionError(f"no {kind.__name__} came: {self._end_reason}")
                self._arrival.clear()
                await self._arrival.wait()

    async def _read_until_over(self, reader: asyncio.StreamReader) -> None:
        decoder = Decoder(Direction.SERVER_TO_DEVICE)
        try:
            while chunk := await reader.read(_READ_SIZE):
                for frame in decoder.feed(chunk):
                    self._handle(frame)
            self._end_reason = self._end_reason or "the server closed the connection"
        except ProtocolError as error:
            for frame in error.frames_before_error:
                self._handle(frame)
            self._end_reason = f"the server broke the protocol: {error}"
            self._writer.close()  # a stream cannot be resynchronised
        except OSError as error:
            self._end_reason = self._end_reason or f"the connection broke: {error}"
        finally:
            self._over.set()
            self._arrival.set()  # waits see the end instead of sleeping to their timeout

    def _handle(self, frame: Frame) -> None:
        event: _Event
        match frame:
            case ChannelDefinition():
                self._incoming.define(frame)
                return
            case Data(channel_id=channel_id, data=data):
                event = ReceivedData(self._incoming.name(channel_id), data)
            case DataArray(channel_id=channel_id, items=items):
                event = ReceivedArray(self._incoming.name(channel_id), items)
            case ServerPing(n=n):
                if self.answer_server_pings:
                    self._send(ServerPingAnswer(n))
                event = frame
            case IdentificationResult() | DevicePingAnswer():
                event = frame
            case _:  # frames only a device sends: a server-to-device Decoder never yields them
                return
        self._inbox.append(event)
        self._arrival.set()
