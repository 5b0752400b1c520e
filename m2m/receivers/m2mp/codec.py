"""The M2MP frame codec: bytes in, frames out, and back; no sockets, no reactor.

Keeping the codec sans-IO lets the Twisted protocol stay a thin adapter, and makes
fragmentation, malformed input and round-trips testable without a network.

The wire format is described declaratively with ``construct`` in `FRAME_FORMATS`: that
is the readable reference, and the tests hold the codec to it. The decoder and the
encoder themselves are written by hand on ``struct`` and indexing, because on the hot
path they measured five to nine times faster than construct's compiled parsers
(``bench/m2mp_codec.py`` prints both).

Headers 0x01-0x03 mean different things in each direction, so frames are named by
meaning (`DevicePing`, `ServerPingAnswer`, ...) and a `Decoder` is told which direction
it reads. The encoder needs no direction: the frame's type says it all.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, assert_never

from construct import (
    Error,
    GreedyBytes,
    GreedyRange,
    Int8ub,
    Int16ub,
    Int32ub,
    Prefixed,
    Struct,
    Switch,
    this,
)

from m2m.errors import M2MError

MAX_FRAME_SIZE: Final = 1_048_576
"""A declared frame size above this is not reasonable: the connection is dropped."""

TEXT_ENCODING: Final = "latin-1"
"""How idents and channel names turn into text.

They are ASCII in practice, but the protocol only says "bytes". Latin-1 maps every byte
to exactly one code point, so any ident decodes without error and encodes back to the
very same bytes: nothing a device sends can crash the decoder or be silently altered.
"""

_U8_MAX: Final = 0xFF
_U32_MAX: Final = 0xFFFF_FFFF


class Header(enum.IntEnum):
    """The first byte of every frame; the size width is part of the data/array headers."""

    IDENTIFICATION = 0x01
    DEVICE_PING = 0x02
    SERVER_PING = 0x03
    CHANNEL_DEFINITION = 0x20
    DATA_SIZE_U8 = 0x21
    DATA_SIZE_U16 = 0x41
    DATA_SIZE_U32 = 0x61
    ARRAY_SIZE_U8 = 0x22
    ARRAY_SIZE_U16 = 0x42
    ARRAY_SIZE_U32 = 0x62


class Direction(enum.Enum):
    """Who sent the frames a `Decoder` reads: the meaning of headers 0x01-0x03 depends on it."""

    DEVICE_TO_SERVER = "device-to-server"
    SERVER_TO_DEVICE = "server-to-device"


class ProtocolError(M2MError):
    """The peer broke the protocol; the only sane answer is to close the connection.

    `frames_before_error` holds the well-formed frames decoded from the same `feed`
    call before the bad one, so that the caller can still act on them.
    """

    def __init__(self, message: str, frames_before_error: tuple[Frame, ...] = ()) -> None:
        super().__init__(message)
        self.frames_before_error = frames_before_error


# --- Frames -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentificationRequest:
    """0x01 device -> server: the device says who it is."""

    ident: str


@dataclass(frozen=True, slots=True)
class IdentificationResult:
    """0x01 server -> device: whether the ident was accepted."""

    accepted: bool


@dataclass(frozen=True, slots=True)
class DevicePing:
    """0x02 device -> server: the device asks for an answer carrying the same `n`."""

    n: int


@dataclass(frozen=True, slots=True)
class DevicePingAnswer:
    """0x02 server -> device: the answer to a `DevicePing`."""

    n: int


@dataclass(frozen=True, slots=True)
class ServerPing:
    """0x03 server -> device: the server checks the connection is alive."""

    n: int


@dataclass(frozen=True, slots=True)
class ServerPingAnswer:
    """0x03 device -> server: the answer to a `ServerPing`."""

    n: int


@dataclass(frozen=True, slots=True)
class ChannelDefinition:
    """0x20 either way: from now on, the sender's `channel_id` stands for `name`."""

    channel_id: int
    name: str


@dataclass(frozen=True, slots=True)
class Data:
    """0x21/0x41/0x61 either way: one byte string on a channel."""

    channel_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DataArray:
    """0x22/0x42/0x62 either way: a list of byte strings on a channel."""

    channel_id: int
    items: tuple[bytes, ...]


Frame: TypeAlias = (
    IdentificationRequest
    | IdentificationResult
    | DevicePing
    | DevicePingAnswer
    | ServerPing
    | ServerPingAnswer
    | ChannelDefinition
    | Data
    | DataArray
)


# --- The wire format, declared ----------------------------------------------------------


def _channel_array_format(size_field: Any) -> Any:
    item = Prefixed(size_field, GreedyBytes)
    return Prefixed(size_field, Struct("channel_id" / Int8ub, "items" / GreedyRange(item)))


def _frame_format(direction_specific: dict[int, Any]) -> Any:
    channel_data = Struct("channel_id" / Int8ub, "data" / GreedyBytes)
    bodies = {
        **direction_specific,
        Header.CHANNEL_DEFINITION.value: Prefixed(
            Int8ub, Struct("channel_id" / Int8ub, "name" / GreedyBytes)
        ),
        Header.DATA_SIZE_U8.value: Prefixed(Int8ub, channel_data),
        Header.DATA_SIZE_U16.value: Prefixed(Int16ub, channel_data),
        Header.DATA_SIZE_U32.value: Prefixed(Int32ub, channel_data),
        Header.ARRAY_SIZE_U8.value: _channel_array_format(Int8ub),
        Header.ARRAY_SIZE_U16.value: _channel_array_format(Int16ub),
        Header.ARRAY_SIZE_U32.value: _channel_array_format(Int32ub),
    }
    return Struct("header" / Int8ub, "body" / Switch(this.header, bodies, default=Error))


FRAME_FORMATS: Final[dict[Direction, Any]] = {
    Direction.DEVICE_TO_SERVER: _frame_format(
        {
            Header.IDENTIFICATION.value: Struct("ident" / Prefixed(Int8ub, GreedyBytes)),
            Header.DEVICE_PING.value: Struct("n" / Int8ub),
            Header.SERVER_PING.value: Struct("n" / Int8ub),
        }
    ),
    Direction.SERVER_TO_DEVICE: _frame_format(
        {
            Header.IDENTIFICATION.value: Struct("status" / Int8ub),
            Header.DEVICE_PING.value: Struct("n" / Int8ub),
            Header.SERVER_PING.value: Struct("n" / Int8ub),
        }
    ),
}
"""One frame as ``construct`` sees it: ``header``, then ``body`` chosen by the header.

The readable reference for the format (arrays parse leniently here: ``GreedyRange``
stops at a malformed item where the `Decoder` raises `ProtocolError`).
"""


# --- Decoding ---------------------------------------------------------------------------

_BodyDecoder: TypeAlias = Callable[[bytes], Frame]
_UNPACK_SIZE: Final = {
    1: struct.Struct(">B").unpack_from,
    2: struct.Struct(">H").unpack_from,
    4: struct.Struct(">I").unpack_from,
}
_ONE_BYTE_BODY: Final = 0
"""Size width of the frames whose body is a single byte, with no size field before it."""


def _decode_identification_request(body: bytes) -> Frame:
    return IdentificationRequest(body.decode(TEXT_ENCODING))


def _decode_identification_result(body: bytes) -> Frame:
    status = body[0]
    if status > 1:
        raise ProtocolError(f"identification status 0x{status:02x} is neither 0x00 nor 0x01")
    return IdentificationResult(status == 1)


def _decode_device_ping(body: bytes) -> Frame:
    return DevicePing(body[0])


def _decode_device_ping_answer(body: bytes) -> Frame:
    return DevicePingAnswer(body[0])


def _decode_server_ping(body: bytes) -> Frame:
    return ServerPing(body[0])


def _decode_server_ping_answer(body: bytes) -> Frame:
    return ServerPingAnswer(body[0])


def _decode_channel_definition(body: bytes) -> Frame:
    if not body:
        raise ProtocolError("channel definition (0x20) of length 0 has no channel id")
    return ChannelDefinition(body[0], body[1:].decode(TEXT_ENCODING))


def _decode_data(body: bytes) -> Frame:
    if not body:
        raise ProtocolError("data frame of size 0 has no channel id")
    return Data(body[0], body[1:])


def _array_decoder(size_width: int) -> _BodyDecoder:
    unpack_size = _UNPACK_SIZE[size_width]

    def decode_array(body: bytes) -> Frame:
        if not body:
            raise ProtocolError("array frame of size 0 has no channel id")
        items = []
        position = 1
        end = len(body)
        while position < end:
            item_start = position + size_width
            if item_start > end:
                raise ProtocolError(
                    f"array item size field at offset {position} is cut short "
                    f"by the end of the {end}-byte frame body"
                )
            (item_size,) = unpack_size(body, position)
            position = item_start + item_size
            if position > end:
                raise ProtocolError(
                    f"array item of {item_size} bytes at offset {item_start} overruns "
                    f"the {end}-byte frame body"
                )
            items.append(body[item_start:position])
        return DataArray(body[0], tuple(items))

    return decode_array


_Layout: TypeAlias = tuple[int, _BodyDecoder]
"""A header's size width (`_ONE_BYTE_BODY` or 1, 2, 4) and how to decode its body."""

_LAYOUTS_IN_BOTH_DIRECTIONS: Final[dict[Header, _Layout]] = {
    Header.CHANNEL_DEFINITION: (1, _decode_channel_definition),
    Header.DATA_SIZE_U8: (1, _decode_data),
    Header.DATA_SIZE_U16: (2, _decode_data),
    Header.DATA_SIZE_U32: (4, _decode_data),
    Header.ARRAY_SIZE_U8: (1, _array_decoder(1)),
    Header.ARRAY_SIZE_U16: (2, _array_decoder(2)),
    Header.ARRAY_SIZE_U32: (4, _array_decoder(4)),
}


def _by_header_byte(layouts: dict[Header, _Layout]) -> dict[int, _Layout]:
    """Plain int keys: the decoder looks layouts up by the raw header byte, on every frame."""
    return {int(header): layout for header, layout in layouts.items()}


_LAYOUTS: Final[dict[Direction, dict[int, _Layout]]] = {
    Direction.DEVICE_TO_SERVER: _by_header_byte(
        {
            Header.IDENTIFICATION: (1, _decode_identification_request),
            Header.DEVICE_PING: (_ONE_BYTE_BODY, _decode_device_ping),
            Header.SERVER_PING: (_ONE_BYTE_BODY, _decode_server_ping_answer),
            **_LAYOUTS_IN_BOTH_DIRECTIONS,
        }
    ),
    Direction.SERVER_TO_DEVICE: _by_header_byte(
        {
            Header.IDENTIFICATION: (_ONE_BYTE_BODY, _decode_identification_result),
            Header.DEVICE_PING: (_ONE_BYTE_BODY, _decode_device_ping_answer),
            Header.SERVER_PING: (_ONE_BYTE_BODY, _decode_server_ping),
            **_LAYOUTS_IN_BOTH_DIRECTIONS,
        }
    ),
}


class Decoder:
    """Turns one connection's byte stream, however fragmented, into frames.

    Bytes that do not yet make a whole frame wait in a buffer. A frame's body is sliced
    only once all of it has arrived, so a large frame trickling in costs O(1) per piece
    beyond appending it. After a `ProtocolError` the stream cannot be resynchronised:
    every later `feed` raises too.
    """

    __slots__ = ("_buffer", "_failure", "_layouts")

    def __init__(self, direction: Direction) -> None:
        self._layouts = _LAYOUTS[direction]
        self._buffer = bytearray()
        self._failure: ProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """How many received bytes wait for the rest of their frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Take the next bytes of the stream and return the frames they complete, in order."""
        if self._failure is not None:
            raise ProtocolError(f"the stream was already broken: {self._failure}")
        buffer = self._buffer
        buffer += data
        available = len(buffer)
        layouts = self._layouts
        frames: list[Frame] = []
        position = 0
        try:
            with memoryview(buffer) as view:
                while position < available:
                    header = buffer[position]
                    layout = layouts.get(header)
                    if layout is None:
                        raise ProtocolError(f"unknown frame header 0x{header:02x}")
                    size_width, decode_body = layout
                    if size_width == _ONE_BYTE_BODY:
                        body_start = position + 1
                        size = 1
                    elif size_width == 1:  # the common case, worth a shortcut
                        body_start = position + 2
                        if body_start > available:
                            break
                        size = buffer[position + 1]
                    else:
                        body_start = position + 1 + size_width
                        if body_start > available:
                            break
                        (size,) = _UNPACK_SIZE[size_width](buffer, position + 1)
                        if size > MAX_FRAME_SIZE:
                            raise ProtocolError(
                                f"frame 0x{header:02x} declares {size} bytes, "
                                f"above the limit of {MAX_FRAME_SIZE}"
                            )
                    body_end = body_start + size
                    if body_end > available:
                        break
                    frames.append(decode_body(view[body_start:body_end].tobytes()))
                    position = body_end
        except ProtocolError as error:
            error.frames_before_error = tuple(frames)
            self._failure = error
            raise
        # CPython drops a bytearray's head by moving its start, without copying the rest;
        # the memoryview must be released first, or the bytearray could not be resized.
        del buffer[:position]
        return frames


# --- Encoding ---------------------------------------------------------------------------

_PACK_SIZE: Final = {
    1: struct.Struct(">B").pack,
    2: struct.Struct(">H").pack,
    4: struct.Struct(">I").pack,
}
_PACK_DATA_PREFIX: Final = {
    1: struct.Struct(">BBB").pack,
    2: struct.Struct(">BHB").pack,
    4: struct.Struct(">BIB").pack,
}
_DATA_HEADERS: Final = {1: Header.DATA_SIZE_U8, 2: Header.DATA_SIZE_U16, 4: Header.DATA_SIZE_U32}
_ARRAY_HEADERS: Final = {
    1: Header.ARRAY_SIZE_U8,
    2: Header.ARRAY_SIZE_U16,
    4: Header.ARRAY_SIZE_U32,
}


def _size_width(measure: int) -> int:
    """The narrowest size width the spec allows for `measure`; 255 and 65535 are never used."""
    if measure <= 254:
        return 1
    if measure <= 65534:
        return 2
    if measure <= _U32_MAX:
        return 4
    raise ValueError(f"a frame of {measure} bytes does not fit a 32-bit size")


def _u8(value: int, what: str) -> int:
    if not 0 <= value <= _U8_MAX:
        raise ValueError(f"{what} must fit one byte (0..255), not {value}")
    return value


def _short_text(text: str, max_length: int, what: str) -> bytes:
    try:
        encoded = text.encode(TEXT_ENCODING)
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} has characters outside {TEXT_ENCODING}") from None
    if len(encoded) > max_length:
        raise ValueError(f"{what} {text!r} is {len(encoded)} bytes, above {max_length}")
    return encoded


def _encode_data(frame: Data) -> bytes:
    size = len(frame.data) + 1
    width = _size_width(size)
    channel_id = _u8(frame.channel_id, "channel id")
    return _PACK_DATA_PREFIX[width](_DATA_HEADERS[width], size, channel_id) + frame.data


def _encode_array(frame: DataArray) -> bytes:
    items = frame.items
    payload_size = sum(map(len, items))
    width = _size_width(1 + 4 * len(items) + payload_size)
    size = 1 + width * len(items) + payload_size
    pack_size = _PACK_SIZE[width]
    parts = [
        bytes((_ARRAY_HEADERS[width],)),
        pack_size(size),
        bytes((_u8(frame.channel_id, "channel id"),)),
    ]
    for item in items:
        parts.append(pack_size(len(item)))
        parts.append(item)
    return b"".join(parts)


def encode(frame: Frame) -> bytes:
    """The bytes of one frame, with the narrowest size width the spec allows.

    Raises `ValueError` for a frame that cannot be put on the wire (an id or counter
    outside 0..255, a name too long for its length byte, text outside latin-1).
    """
    match frame:
        case Data():
            return _encode_data(frame)
        case DataArray():
            return _encode_array(frame)
        case ChannelDefinition(channel_id=channel_id, name=name):
            encoded_name = _short_text(name, _U8_MAX - 1, "channel name")
            length = len(encoded_name) + 1
            channel_id = _u8(channel_id, "channel id")
            return bytes((Header.CHANNEL_DEFINITION, length, channel_id)) + encoded_name
        case IdentificationRequest(ident=ident):
            encoded_ident = _short_text(ident, _U8_MAX, "ident")
            return bytes((Header.IDENTIFICATION, len(encoded_ident))) + encoded_ident
        case IdentificationResult(accepted=accepted):
            return bytes((Header.IDENTIFICATION, 1 if accepted else 0))
        case DevicePing(n=n) | DevicePingAnswer(n=n):
            return bytes((Header.DEVICE_PING, _u8(n, "ping counter")))
        case ServerPing(n=n) | ServerPingAnswer(n=n):
            return bytes((Header.SERVER_PING, _u8(n, "ping counter")))
        case _:
            assert_never(frame)
