"""Turn the terse data types ALIP devices send into the types and values the platform stores.

Devices on slow, metered links send `D L 48.85,2.35` or `D A3 512`; what gets stored is
self-describing (`sen:loc` `{"lat": 48.85, "lon": 2.35}`, `sen:adc:3` `"512"`), so no
reader of the time series needs to know ALIP. The rules are those of the original
platform, applied to the whole type: `L`, `G`, `A<n>`, `DI<n>`, `T`, `V`, `D`, `F`, `E`,
`SMS`, `VER`, `LS:<name>`, `echo`; any other type is stored unchanged, its content as a
JSON string. No two rules match the same type, so looking the exact types up in a dict
before checking the prefixed ones gives what "first rule wins" would.

`J` values are not processed: they are already structured and keep their type.
"""

import math
from dataclasses import dataclass
from datetime import datetime

from m2m.errors import InvalidInput
from m2m.receivers.alip.commands import AlipError, JsonValue
from m2m.receivers.alip.times import parse_device_time
from m2m.registry.device_series import LISTED_SENSOR_PREFIX, check_device_record_type
from m2m.registry.paths import InvalidPathError

LOCATION_TYPE = "sen:loc"

_STORED_AS_IS: dict[str, str] = {
    "T": "sen:temp",
    "V": "sen:volt",
    "D": "sen:door",
    "F": "sen:fuel",
    "E": "sen:engine",
    "SMS": "sen:sms_received",
    "VER": "sen:version",
}
_NUMBERED_TYPES: tuple[tuple[str, str], ...] = (("A", "sen:adc:"), ("DI", "sen:gpio:"))
_LISTED_SENSOR_PREFIX = "LS:"
_ECHO_TYPE = "echo"

# Only the first four fields have a meaning; devices that send more (a heading, a
# fix quality) worked with the original platform, which ignored the rest, and still do.
_LOCATION_FIELDS = ("lat", "lon", "spd", "alt")
_LOCATION_FORMAT = "lat,lon[,spd[,alt]] or a number of satellites"
# No receiver tracks that many satellites; the bound keeps int() away from huge inputs.
_MAX_SATELLITES_DIGITS = 9


@dataclass(frozen=True, slots=True)
class Reading:
    """A value to store for the device, under its stored type.

    `time` is the record time when the content carries one (`G`); None means the
    command's own time (now for `D`, its time for `E`).
    """

    type: str
    value: JsonValue
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Echo:
    """An `echo` value: nothing is stored, the session answers `D echo <content>`."""

    content: str


def process_data(device_type: str, content: str) -> Reading | Echo:
    """Map a device's short type and raw content to what to store (or to echo back).

    Raises `AlipError` when `L` or `G` content is malformed, or when the type is one the
    platform cannot store a device's record under (a listed sensor whose name cannot name
    a registry node, a type too long): the store's own rules, checked here.
    """
    processed = _processed(device_type, content)
    if isinstance(processed, Reading):
        try:
            check_device_record_type(processed.type)
        except InvalidPathError as error:  # a listed sensor's name
            raise AlipError(f'Invalid listed sensor "{device_type:.80}": {error.problem}') from None
        except InvalidInput as error:
            raise AlipError(f'Invalid type "{device_type:.80}": {error}') from None
    return processed


def _processed(device_type: str, content: str) -> Reading | Echo:
    stored_type = _STORED_AS_IS.get(device_type)
    if stored_type is not None:
        return Reading(stored_type, content)
    if device_type == "L":
        return Reading(LOCATION_TYPE, _location(content))
    if device_type == "G":
        return _timed_location(content)
    if device_type == _ECHO_TYPE:
        return Echo(content)
    if device_type.startswith(_LISTED_SENSOR_PREFIX):
        return _listed_sensor(device_type[len(_LISTED_SENSOR_PREFIX) :], content)
    for prefix, stored_prefix in _NUMBERED_TYPES:
        number = device_type[len(prefix) :]
        if device_type.startswith(prefix) and number.isascii() and number.isdigit():
            return Reading(stored_prefix + number, content)
    return Reading(device_type, content)


def _location(content: str) -> dict[str, JsonValue]:
    fields = content.split(",")
    if len(fields) == 1:
        return {"sat": _satellites(content)}
    return {
        name: _coordinate(name, text, content)
        for name, text in zip(_LOCATION_FIELDS, fields, strict=False)
    }


def _coordinate(name: str, text: str, content: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # refused below, with the infinities float() accepts
    if not math.isfinite(value):
        raise AlipError(f'Invalid location "{content}": {name} "{text}" is not a number')
    return value


def _satellites(content: str) -> int:
    if not (content.isascii() and content.isdigit() and len(content) <= _MAX_SATELLITES_DIGITS):
        raise AlipError(f'Invalid location "{content}": expected {_LOCATION_FORMAT}')
    return int(content)


def _timed_location(content: str) -> Reading:
    time, separator, location = content.partition(",")
    if not separator:
        raise AlipError(f'Invalid G location "{content}": expected <time>,{_LOCATION_FORMAT}')
    try:
        record_time = parse_device_time(time)
    except ValueError as error:
        raise AlipError(f'Invalid G location "{content}": {error}') from None
    return Reading(LOCATION_TYPE, _location(location), time=record_time)


def _listed_sensor(name: str, content: str) -> Reading:
    # Its name becomes a registry node under the device: process_data checks it can.
    return Reading(LISTED_SENSOR_PREFIX + name, content)
