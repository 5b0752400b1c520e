"""The converter rules: one ``converter-m2mp`` message in, the messages it leads to out.

M2MP devices send terse binary payloads; what gets stored is self-describing JSON
(``sen:loc`` ``{"lat": 48.85, "lon": 2.35}``), so no reader of the time series needs to
know M2MP. The rules (m2mp.md, "Converter rules") are pure code here, with no bus and
no database in sight; the converter worker only feeds messages in and publishes what
comes out.

NSQ delivers at least once, so converting a message twice must give byte-identical
records: nothing here reads a clock or a random source. A record at the message's own
time keeps the receiver's ``date_uuid``; a record whose payload carries its own unix time
gets a UUID at that time whose clock sequence and node are a hash of what the device sent
(its id, the channel and the data): redelivery reproduces it, and so does a device
sending the frame again because its connection dropped before its ping was answered, so
the record is stored once. Frames with the same time and different data are two
records; the very same frame twice is one. Messages from the original platform carry no
``date_uuid``; theirs is derived the same way from ``_time`` and a hash of the whole
message.

Decisions the spec leaves open:

- ``sen:loc`` layouts are told apart by length: 1 (sat), 5 (time, sat), 8 (lat, lon),
  10 (lat, lon, spd), 12 (time, lat, lon), 14 (time, lat, lon, spd), 16 (time, lat, lon,
  spd, alt). Twelve bytes could also be lat, lon, spd, alt without a time; the original
  platform read them as time, lat, lon, and so do we. Any other length is refused.
- f32 coordinates become the shortest decimal that reads back as the same f32 (what the
  original platform's Go JSON encoder wrote): 48.85, never 48.849998474121094.
- Bytes become text as UTF-8, an invalid sequence turning into U+FFFD, as the original
  platform's JSON encoder did: a payload is never refused for not being text.
- ``_special`` data is stored like any text (the original platform did, so a device's
  history shows why it was disconnected); ``disconnect_me`` and ``disconnect_us`` also
  ask the receivers to disconnect; any other command is only stored.
  ``disconnect_me`` goes back to the receiver that sent the message (its ``_from``), since
  connection ids are only unique within one receiver.
- An array on a ``sen:`` channel must be exactly [4-byte time, value].
- A channel no device record can be stored under (``lsen:..``, see
  :func:`~m2m.registry.device_series.check_device_record_type`) is refused.
- Produced messages carry the ``_time`` of the message they come from.
"""

from __future__ import annotations

import binascii
import contextlib
import math
import reprlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from uuid import UUID

from m2m.bus import topics
from m2m.bus.envelope import Address, Envelope, InvalidMessage
from m2m.errors import InvalidInput
from m2m.registry.device_series import check_device_record_type
from m2m.text import utf8_size
from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.record import JsonValue
from m2m.timeseries.timeuuids import seeded_timeuuid

CONVERTER_ADDRESS: Final = "converter-m2mp/converter"
"""The ``_from`` of every message the converter produces."""

LOCATION_CHANNEL: Final = "sen:loc"
SPECIAL_CHANNEL: Final = "_special"
SENSOR_CHANNEL_PREFIX: Final = "sen:"
DEVICE_KEY_PREFIX: Final = "dev-"
DISCONNECT_THIS_CONNECTION: Final = "disconnect_me"
DISCONNECT_THIS_DEVICE: Final = "disconnect_us"

_UNIX_TIME: Final = struct.Struct(">I")
_FLOAT32: Final = struct.Struct(">f")
_FLOAT32_ROUND_TRIP_DIGITS: Final = 9
"""Significant digits that always read back as the same f32."""

_T = TypeVar("_T")


def convert(envelope: Envelope) -> list[Envelope]:
    """The messages to publish for one ``data_simple`` or ``data_array`` message.

    Raises `InvalidMessage` for an unknown call, a missing or mistyped field, bad hex,
    or a payload that breaks its channel's rule.
    """
    if envelope.call not in (topics.DATA_SIMPLE, topics.DATA_ARRAY):
        raise InvalidMessage(
            f"{topics.CONVERTER_M2MP} has no call {envelope.call!r}: "
            f"expected {topics.DATA_SIMPLE} or {topics.DATA_ARRAY}"
        )
    source = _Source.of(envelope)
    if envelope.call == topics.DATA_ARRAY:
        texts = [
            _checked(item, str, f"data[{index}]")
            for index, item in enumerate(_field(envelope.fields, "data", list))
        ]
        items = [_hex(text, f"data[{index}]") for index, text in enumerate(texts)]
        reading = _read_array(source.channel, items)
        return [_store_record(source, reading, texts)]
    text = _field(envelope.fields, "data", str)
    data = _hex(text, "data")
    record = _store_record(source, _read_data(source.channel, data), [text])
    return [record, *_disconnect_requests(envelope, source, data)]


@dataclass(frozen=True, slots=True)
class _Source:
    """What every rule needs from a ``converter-m2mp`` message, checked once."""

    device_id: UUID
    channel: str
    time_uuid: UUID
    """When the receiver got the frame: ``date_uuid``, or derived from ``_time``."""
    sent_at: float
    """The message's ``_time``, which produced messages carry on."""

    @classmethod
    def of(cls, envelope: Envelope) -> _Source:
        return cls(
            device_id=_device_id(envelope.fields),
            channel=_channel(envelope.fields),
            time_uuid=_message_time_uuid(envelope),
            sent_at=envelope.time,
        )


@dataclass(frozen=True, slots=True)
class _Reading:
    """A value to store, and the unix time the payload gave it, if it gave one."""

    value: JsonValue
    unix_time: int | None = None


# --- Readings ---------------------------------------------------------------------------


def _read_data(channel: str, data: bytes) -> _Reading:
    if channel == LOCATION_CHANNEL:
        return _read_location(data)
    return _Reading(_text(data))


def _read_array(channel: str, items: Sequence[bytes]) -> _Reading:
    if channel.startswith(SENSOR_CHANNEL_PREFIX):
        return _read_timed_value(channel, items)
    return _Reading([_text(item) for item in items])


@dataclass(frozen=True, slots=True)
class _LocationLayout:
    """One way a ``sen:loc`` payload is laid out: an optional time, then named fields."""

    timed: bool
    names: tuple[str, ...]
    format: struct.Struct

    @classmethod
    def of(cls, *names: str, timed: bool) -> _LocationLayout:
        codes = "".join(_LOCATION_FIELD_CODES[name] for name in names)
        return cls(timed, names, struct.Struct(">" + ("I" if timed else "") + codes))


_LOCATION_FIELD_CODES: Final = {"sat": "B", "lat": "f", "lon": "f", "spd": "H", "alt": "H"}
_LOCATION_LAYOUTS: Final = {
    layout.format.size: layout
    for layout in (
        _LocationLayout.of("sat", timed=False),
        _LocationLayout.of("sat", timed=True),
        _LocationLayout.of("lat", "lon", timed=False),
        _LocationLayout.of("lat", "lon", "spd", timed=False),
        # 12 bytes: lat, lon, spd, alt without a time would fit too; the original
        # platform read a time first, so a device must send one to send its altitude.
        _LocationLayout.of("lat", "lon", timed=True),
        _LocationLayout.of("lat", "lon", "spd", timed=True),
        _LocationLayout.of("lat", "lon", "spd", "alt", timed=True),
    )
}


def _read_location(data: bytes) -> _Reading:
    layout = _LOCATION_LAYOUTS.get(len(data))
    if layout is None:
        raise InvalidMessage(
            f"{LOCATION_CHANNEL} payload of {len(data)} bytes matches no layout "
            f"(expected {', '.join(map(str, sorted(_LOCATION_LAYOUTS)))} bytes)"
        )
    values = layout.format.unpack(data)
    unix_time = values[0] if layout.timed else None
    fields = values[1:] if layout.timed else values
    location = {
        name: _location_value(name, value) for name, value in zip(layout.names, fields, strict=True)
    }
    return _Reading(location, unix_time)


def _location_value(name: str, value: int | float) -> int | float:
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        raise InvalidMessage(f"{LOCATION_CHANNEL} {name} is {value}, not a finite number")
    return _shortest_float32(value)


def _shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same f32 as `value` (itself an f32).

    A binary search over the number of digits: rounding to more digits never moves
    further from `value` (a d-digit decimal is also a (d+1)-digit one), so once a number
    of digits reads back, every larger one does.
    """
    fewest, enough = 1, _FLOAT32_ROUND_TRIP_DIGITS
    while fewest < enough:
        digits = (fewest + enough) // 2
        if _reads_back(float(f"{value:.{digits}g}"), value):
            enough = digits
        else:
            fewest = digits + 1
    return float(f"{value:.{enough}g}")


def _reads_back(candidate: float, value: float) -> bool:
    try:
        return bool(_FLOAT32.unpack(_FLOAT32.pack(candidate))[0] == value)
    except OverflowError:  # rounded past the largest f32
        return False


def _read_timed_value(channel: str, items: Sequence[bytes]) -> _Reading:
    if len(items) != 2:
        raise InvalidMessage(
            f"array on {channel} holds {len(items)} items: expected [unix time, value]"
        )
    unix_time, value = items
    if len(unix_time) != _UNIX_TIME.size:
        raise InvalidMessage(
            f"array on {channel}: the time is {len(unix_time)} bytes, "
            f"expected a {_UNIX_TIME.size}-byte unix time"
        )
    return _Reading(_text(value), _UNIX_TIME.unpack(unix_time)[0])


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


# --- Produced messages ------------------------------------------------------------------


def _store_record(source: _Source, reading: _Reading, data: list[str]) -> Envelope:
    """The record of a reading; ``data``: the message's hex text, what the device sent."""
    if reading.unix_time is None:
        time_uuid = source.time_uuid
    else:
        identity = "\0".join((str(source.device_id), source.channel, *data))
        time_uuid = _time_uuid(reading.unix_time, seed=identity.encode())
    fields = {
        "key": f"{DEVICE_KEY_PREFIX}{source.device_id}",
        "type": source.channel,
        "date_uuid": str(time_uuid),
        "data": reading.value,
    }
    return Envelope(topics.STORAGE, CONVERTER_ADDRESS, topics.STORE_TS, source.sent_at, fields)


def _disconnect_requests(envelope: Envelope, source: _Source, data: bytes) -> list[Envelope]:
    if source.channel != SPECIAL_CHANNEL:
        return []
    command = _text(data)
    if command == DISCONNECT_THIS_CONNECTION:
        address = _connection_address(envelope)
    elif command == DISCONNECT_THIS_DEVICE:
        address = Address(topics.RECEIVERS, params={"device_id": str(source.device_id)})
    else:
        return []
    return [Envelope(str(address), CONVERTER_ADDRESS, topics.DISCONNECT, source.sent_at, {})]


def _connection_address(envelope: Envelope) -> Address:
    """Where to ask for the end of the connection a message came from.

    A connection id is only unique within one receiver process, so the request goes back
    to the receiver that sent the message (its ``_from`` names the connection too, as the
    original converter answered it): sent to every receiver, it would also end each other
    receiver's connection of that number. A sender that does not name this connection is
    not a receiver's address: then every receiver is asked.
    """
    connection_id = _connection_id(envelope.fields)
    with contextlib.suppress(InvalidMessage):
        sender = Address.parse(envelope.sender)
        if (
            sender.topic == topics.RECEIVERS
            and sender.params.get("connection_id") == connection_id
            and utf8_size(envelope.sender) is not None  # no receiver's channel is otherwise
        ):
            return Address(sender.topic, sender.channel, {"connection_id": connection_id})
    return Address(topics.RECEIVERS, params={"connection_id": connection_id})


# --- Fields and time UUIDs --------------------------------------------------------------


def _field(fields: Mapping[str, Any], name: str, kind: type[_T]) -> _T:
    if name not in fields:
        raise InvalidMessage(f"message lacks the field {name!r}")
    return _checked(fields[name], kind, name)


def _checked(value: object, kind: type[_T], what: str) -> _T:
    if not isinstance(value, kind):
        raise InvalidMessage(f"{what} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _hex(text: str, what: str) -> bytes:
    try:
        return binascii.a2b_hex(text)
    except ValueError as error:  # binascii.Error is one, and so is non-ASCII text
        raise InvalidMessage(f"{what} {reprlib.repr(text)} is not hex: {error}") from None


def _channel(fields: Mapping[str, Any]) -> str:
    channel = _field(fields, "channel", str)
    try:
        check_device_record_type(channel)
    except InvalidInput as error:
        raise InvalidMessage(f"channel {reprlib.repr(channel)}: {error}") from None
    return channel


def _device_id(fields: Mapping[str, Any]) -> UUID:
    text = _field(fields, "device_id", str)
    try:
        return UUID(text)
    except ValueError:
        raise InvalidMessage(f"device_id {reprlib.repr(text)} is not a UUID") from None


def _connection_id(fields: Mapping[str, Any]) -> str:
    """The connection id as an address parameter: digits only, so it cannot name another."""
    value = fields.get("connection_id")
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not (isinstance(text, str) and text.isascii() and text.isdigit()):
        raise InvalidMessage(
            f"{DISCONNECT_THIS_CONNECTION} needs a connection_id made of digits, "
            f"not {reprlib.repr(value)}"
        )
    return text


def _message_time_uuid(envelope: Envelope) -> UUID:
    """``date_uuid`` as the receiver decided it; for older messages, one derived from them."""
    text = envelope.fields.get("date_uuid")
    if text is None:
        try:
            seed = envelope.to_json()
        except UnicodeEncodeError:
            raise InvalidMessage("message holds a lone surrogate: it is not text") from None
        return _time_uuid(envelope.time, seed=seed)
    text = _checked(text, str, "date_uuid")
    try:
        time_uuid = UUID(text)
    except ValueError:
        raise InvalidMessage(f"date_uuid {reprlib.repr(text)} is not a UUID") from None
    if time_uuid.version != 1:
        raise InvalidMessage(f"date_uuid {text} is not a time UUID (version 1)")
    return time_uuid


def _time_uuid(unix_time: float, seed: bytes) -> UUID:
    """A version-1 UUID at `unix_time` whose clock sequence and node are a hash of `seed`.

    The same seed gives the same UUID, so a redelivered message rewrites its own record;
    different seeds give different UUIDs, so records of the same instant stay apart.
    """
    try:
        return seeded_timeuuid(datetime.fromtimestamp(unix_time, UTC), seed)
    except (ValueError, OverflowError, OSError, TimeSeriesError):
        raise InvalidMessage(f"time {unix_time} is outside what a time UUID can carry") from None
