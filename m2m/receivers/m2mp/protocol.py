"""The M2MP receiver: a thin Twisted adapter between the codec and the device session.

Bytes go through the sans-IO :class:`Decoder`; each frame becomes one step of the
connection's :class:`InOrder` runner, so frames are handled in the order they came even
when identification or an acknowledgement has to wait for the registry (or, for a device
ping, for nsqd to acknowledge what came before). An unknown header or an oversized frame
ends the connection (the frames before it are still handled); so does data sent before
identification, past a small allowance, and not identifying in time. Data on a channel no
record can be stored under (``lsen:..``) is dropped, counted and logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from functools import partial

from m2m.bus import topics
from m2m.errors import InvalidInput, Unavailable
from m2m.metrics import ReceiverMetrics
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
from m2m.receivers.server import DeviceProtocol
from m2m.receivers.session_rules import ProtocolRules, Verdict

SETTINGS_CHANNEL = "_set"
STATUS_CHANNEL = "_sta"
COMMANDS_CHANNEL = "_cmd"
ECHO_CHANNEL = "echo"
LOG_DROPPED_EVERY = 1000


def _text(item: bytes) -> str:
    return item.decode("utf-8", errors="replace")


def _payload_size(frame: Frame) -> int:
    """The bytes a frame carries, as its step counts them (see InOrder)."""
    if isinstance(frame, Data):
        return len(frame.data)
    if isinstance(frame, DataArray):
        return sum(map(len, frame.items))
    return 0


def _pairs(items: Sequence[bytes]) -> list[tuple[str, str]]:
    """``name=value`` items as pairs; items without ``=`` are skipped, as the original did."""
    pairs = []
    for item in items:
        name, separator, value = _text(item).partition("=")
        if separator:
            pairs.append((name, value))
    return pairs


class M2MPProtocol(DeviceProtocol):
    metrics = ReceiverMetrics("m2mp")
    rules = ProtocolRules(closes_unidentified=True, closes_when_silent=False,
                          ping_counter_modulo=256)  # fmt: skip

    def connectionMade(self) -> None:
        self._decoder = Decoder(Direction.DEVICE_TO_SERVER)
        self._incoming = IncomingChannels()
        self._outgoing = OutgoingChannels()
        self._dropped_frames = 0
        super().connectionMade()

    def feed(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as exc:
            self._submit(exc.frames_before_error)
            self.metrics.decode_errors.inc()
            self.log.warning("%s; closing it", exc)
            self.close("decode_error")
            return
        self._submit(frames)

    def _submit(self, frames: Sequence[Frame]) -> None:
        for frame in frames:
            self.metrics.received(frame)
            self.steps.submit(partial(self._handle, frame), _payload_size(frame))

    # -- frames from the device --------------------------------------------------------

    def _handle(self, frame: Frame) -> Awaitable[None] | None:
        if isinstance(frame, Data):
            self._data(frame)
        elif isinstance(frame, DataArray):
            return self._array(frame)
        elif isinstance(frame, ChannelDefinition):
            self._incoming.define(frame)
        elif isinstance(frame, DevicePing):
            return self.session.when_safe(partial(self._send, DevicePingAnswer(frame.n)))
        elif isinstance(frame, IdentificationRequest):
            return self._identify(frame.ident)
        elif not isinstance(frame, ServerPingAnswer):  # the answer itself is all we wanted
            self.log.warning("unexpected %r", frame)
        return None

    async def _identify(self, ident: str) -> None:
        if self.session.device is not None:
            self._send(IdentificationResult(accepted=ident == await self.session.device.ident()))
            return
        await self.identify(ident)

    def _data(self, frame: Data) -> None:
        channel = self._incoming.name(frame.channel_id)
        if not self._identified(channel):
            return
        if channel.partition(":")[0] == ECHO_CHANNEL:
            self._send_on(channel, frame.data)
            return
        self.session.forward(
            topics.CONVERTER_M2MP, topics.DATA_SIMPLE, channel, data=frame.data.hex()
        )

    def _array(self, frame: DataArray) -> Awaitable[None] | None:
        channel = self._incoming.name(frame.channel_id)
        if not self._identified(channel):
            return None
        items = frame.items
        if channel == SETTINGS_CHANNEL and items:
            return self._settings_array(_text(items[0]), items[1:])
        if channel == STATUS_CHANNEL and items:
            if "g" in _text(items[0]):
                return self.session.set_status(dict(_pairs(items[1:])))
            return None
        if channel == COMMANDS_CHANNEL and items:
            if "a" in _text(items[0]) and len(items) >= 2:
                response = "\n".join(_text(line) for line in items[2:]) if len(items) > 2 else None
                return self.session.ack_command(_text(items[1]), response)
            return None
        self.session.forward(
            topics.CONVERTER_M2MP,
            topics.DATA_ARRAY,
            channel,
            data=[item.hex() for item in items],
        )
        return None

    def _settings_array(self, request: str, items: Sequence[bytes]) -> Awaitable[None] | None:
        if request == "ga":
            return self.session.send_all_settings()
        if request == "u":
            return self.session.forget_settings([_text(item) for item in items])
        if "g" in request:
            return self.session.ack_settings(_pairs(items))
        return None

    def _identified(self, channel: str) -> bool:
        """Whether data may be handled; past the allowance, unidentified data closes."""
        verdict = self.session.rules.arrived(needs_identity=True)
        if verdict is Verdict.HANDLE:
            return True
        self.log.warning("data on %r before identification ignored (%d so far)", channel,
                         self.session.rules.refused_unidentified)  # fmt: skip
        if verdict is Verdict.CLOSE:
            self.close("unidentified_data")
        return False

    def _step_failed(self, exc: BaseException) -> None:
        if isinstance(exc, InvalidInput):
            self.metrics.decode_errors.inc()
            self._dropped_frames += 1
            if self._dropped_frames == 1 or self._dropped_frames % LOG_DROPPED_EVERY == 0:
                self.log.warning("frame dropped (%d so far): %s", self._dropped_frames, exc)
        elif isinstance(exc, Unavailable) and self.session.device is None:
            # M2MP cannot say "try again later": a closed connection makes the device do so.
            self.log.warning("%s; closing it", exc)
            self.close("unavailable")
        else:
            super()._step_failed(exc)

    # -- frames to the device (the session's DeviceLink) ------------------------------

    def _send(self, frame: Frame) -> None:
        self.write(encode(frame))

    def _channel_id(self, channel: str) -> int:
        """Our id for ``channel``, defining it to the device first if it is new."""
        channel_id, definition = self._outgoing.assign(channel)
        if definition is not None:
            self._send(definition)
        return channel_id

    def _send_on(self, channel: str, data: bytes) -> None:
        self._send(Data(self._channel_id(channel), data))

    def _send_array_on(self, channel: str, items: Sequence[str]) -> None:
        self._send(DataArray(self._channel_id(channel), tuple(item.encode() for item in items)))

    def send_settings(self, settings: Sequence[tuple[str, str]]) -> None:
        self._send_array_on(SETTINGS_CHANNEL, ["sg", *(f"{n}={v}" for n, v in settings)])

    def send_commands(self, commands: Sequence[tuple[str, str]]) -> None:
        for command_id, text in commands:
            self._send_array_on(COMMANDS_CHANNEL, ["e", command_id, *text.split("\n")])

    def request_all_settings(self) -> None:
        self._send_array_on(SETTINGS_CHANNEL, ["ga"])

    def request_capabilities(self) -> None:
        self._send_array_on(STATUS_CHANNEL, ["g", "cap"])

    def answer_identification(self, accepted: bool) -> None:
        self._send(IdentificationResult(accepted))

    def ping(self, counter: int) -> None:
        self._send(ServerPing(counter))
