"""A device's side of M2MP over real TCP, for tests and benchmarks that play devices.

It speaks through the same sans-IO codec as the server (connection and inbox handling
are :class:`~m2m.receivers.device_client.DeviceClient`'s). What the server sends lands in
one inbox: identification results, answers to our pings, server pings and data (channel
ids already turned into names), so a test can ask for the ``_set`` array before the
``_sta`` one that arrived first without losing either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from m2m.receivers.device_client import DEFAULT_TIMEOUT, DeviceClient
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


class M2MPClient(DeviceClient):
    """One simulated M2MP device; server pings reach `receive_server_ping` either way."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        answer_server_pings: bool = True,
    ) -> None:
        self._decoder = Decoder(Direction.SERVER_TO_DEVICE)
        self._outgoing = OutgoingChannels()
        self._incoming = IncomingChannels()
        self._inbox: list[_Event] = []
        super().__init__(reader, writer, answer_server_pings=answer_server_pings)

    # --- Sending ------------------------------------------------------------------------

    async def identify(self, ident: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Say who we are; True if the server accepted the ident."""
        self._send(IdentificationRequest(ident))
        result = await self._take_event(IdentificationResult, timeout)
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
        await self._take_event(DevicePingAnswer, timeout, lambda answer: answer.n == n)

    def _send(self, *frames: Frame | None) -> None:
        self._writer.write(b"".join(encode(frame) for frame in frames if frame is not None))

    # --- Receiving ----------------------------------------------------------------------

    async def receive(self, timeout: float = DEFAULT_TIMEOUT) -> Received:
        """The oldest data or array the server sent that no wait has taken yet."""
        return await self._take_event(Received, timeout)

    async def receive_array(self, channel: str, timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
        """The items of the oldest array the server sent on `channel`."""
        array = await self._take_event(
            ReceivedArray, timeout, lambda array: array.channel == channel
        )
        return list(array.items)

    async def receive_server_ping(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """The counter of the oldest server ping (0x03) not taken yet, answered or not."""
        ping = await self._take_event(ServerPing, timeout)
        return ping.n

    async def _take_event(
        self, kind: type[_E], timeout: float, wanted: Callable[[_E], bool] = lambda _: True
    ) -> _E:
        def matches(event: _Event) -> bool:
            return isinstance(event, kind) and wanted(event)

        event = await self._take(self._inbox, matches, timeout, kind.__name__)
        assert isinstance(event, kind)
        return event

    def _received(self, chunk: bytes) -> None:
        if self._writer.is_closing():
            return  # after a broken frame nothing more can be decoded
        try:
            frames = self._decoder.feed(chunk)
        except ProtocolError as error:
            for frame in error.frames_before_error:
                self._handle(frame)
            self._broke(str(error))
            return
        for frame in frames:
            self._handle(frame)

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
        self._arrived()
