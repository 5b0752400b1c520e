"""Parse one ALIP line into a typed, immutable command, with no I/O in sight.

The protocol adapter hands every received line to `parse_command` and acts on the
command it gets back; a line the server refuses raises `AlipError`, whose message is
exactly what follows `ERR ` on the wire. Keeping the parser pure makes it trivial to
test and fuzz, and keeps the per-line cost of a receiver to a split and a dict lookup.

Fields are separated by one space, as on the original platform, and:
- the last field of `D`, `E`, `J`, `S A`, `S S` and `DB SET_SETTING` is the rest of
  the line, spaces included; it may be empty (`S A name ` acknowledges an empty value)
  but its separating space must be there (`S A name` is an error);
- `A`, `B` and `DB ADD_COMMAND` take the whole rest of the line (which only
  `DB ADD_COMMAND` requires);
- a command that takes no argument refuses one, but tolerates a trailing space.
"""

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

from m2m.errors import InvalidInput
from m2m.receivers.alip.times import parse_device_time
from m2m.registry.device_series import check_device_record_type
from m2m.text import utf8_size
from m2m.timeseries.rules import encode_data

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

DEFAULT_LAST_COUNT = 10
"""How many records `DB LAST` lists when the device does not say."""
MAX_LAST_COUNT = 1000
"""How many records `DB LAST` lists at most."""

# Offsets, sizes and counters beyond this are nonsense, and int() refuses huge digit strings.
_MAX_NUMBER_DIGITS = 18
_IDENT_PATTERN = re.compile(r"[a-z][0-9a-z]{2,6}:[a-zA-Z0-9]{4,20}")
_RESERVED_TYPE_PREFIX = "_"


class AlipError(InvalidInput):
    """A line the server refuses: its message is answered as `ERR <message>`.

    The connection stays open, so one bad line never costs a device its session.
    """


@dataclass(frozen=True, slots=True)
class Identify:
    """`ID <ident>`: the device says who it is; almost nothing works before it does."""

    ident: str


@dataclass(frozen=True, slots=True)
class Data:
    """`D <type> <content>`: a value taken now, in the device's short type."""

    type: str
    content: str


@dataclass(frozen=True, slots=True)
class DataAt:
    """`E <time> <type> <content>`: a value taken at `time`, sent later (e.g. buffered offline)."""

    time: datetime
    type: str
    content: str


@dataclass(frozen=True, slots=True)
class JsonAt:
    """`J <time> <type> <json>`: an already structured value, stored under `type` as it is."""

    time: datetime
    type: str
    value: JsonValue


@dataclass(frozen=True, slots=True)
class SettingAck:
    """`S A <name> <value>`: the device applied a setting the server pushed."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SettingReport:
    """`S S <name> <value>`: the device reports a setting of its own (answering `S GA`)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SettingsGetAll:
    """`S GA`: the device wants every setting it has on the server."""


@dataclass(frozen=True, slots=True)
class SettingsGetPending:
    """`S G`: the device wants the settings it has not applied yet."""


@dataclass(frozen=True, slots=True)
class SettingGet:
    """`S G <name>`: the device wants one setting."""

    name: str


@dataclass(frozen=True, slots=True)
class SettingUnknown:
    """`S U <name>`: the device does not know this setting, so the server forgets it."""

    name: str


@dataclass(frozen=True, slots=True)
class CommandAck:
    """`C A <n>`: the device ran command `n` (the short number of this connection)."""

    n: int


@dataclass(frozen=True, slots=True)
class CommandsList:
    """`C L`: the device wants its pending commands again."""


@dataclass(frozen=True, slots=True)
class AckRequest:
    """`A <x>`: the device checks the link; the server answers `B <x>`."""

    x: str


@dataclass(frozen=True, slots=True)
class Time:
    """`T`: the device has no clock it trusts and asks the server's."""


@dataclass(frozen=True, slots=True)
class FirmwareSelect:
    """`F N <name>`: the device picks the firmware file it will download."""

    name: str


@dataclass(frozen=True, slots=True)
class FirmwareSize:
    """`F S`: the device wants the size of the selected firmware file."""


@dataclass(frozen=True, slots=True)
class FirmwareGet:
    """`F G <offset> <size>`: the device downloads a part of the selected firmware file."""

    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class DebugId:
    """`DB ID`: which device id the server gave this connection."""


@dataclass(frozen=True, slots=True)
class DebugSource:
    """`DB SOURCE`: the address the server sees and the connection's id."""


@dataclass(frozen=True, slots=True)
class DebugConnected:
    """`DB CONNECTED`: how long this connection has been open."""


@dataclass(frozen=True, slots=True)
class DebugVersion:
    """`DB VERSION`: which server version the device talks to."""


@dataclass(frozen=True, slots=True)
class DebugSetSetting:
    """`DB SET_SETTING <name> <value>`: define a setting for myself, then push it to me."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class DebugAddCommand:
    """`DB ADD_COMMAND <text>`: add a command for myself, then push it to me."""

    text: str


@dataclass(frozen=True, slots=True)
class DebugLast:
    """`DB LAST [n]`: list my last `count` records."""

    count: int = DEFAULT_LAST_COUNT


@dataclass(frozen=True, slots=True)
class DebugLogLevel:
    """`DB LOGLEVEL [n]`: set this connection's log level to `level`, or only read it (None)."""

    level: int | None = None


@dataclass(frozen=True, slots=True)
class AckAnswer:
    """`B <x>`: the device answers a server `A <x>`."""

    x: str


@dataclass(frozen=True, slots=True)
class Quit:
    """`QUIT`: the device says goodbye; the server answers and closes."""


Command: TypeAlias = (
    Identify
    | Data
    | DataAt
    | JsonAt
    | SettingAck
    | SettingReport
    | SettingsGetAll
    | SettingsGetPending
    | SettingGet
    | SettingUnknown
    | CommandAck
    | CommandsList
    | AckRequest
    | Time
    | FirmwareSelect
    | FirmwareSize
    | FirmwareGet
    | DebugId
    | DebugSource
    | DebugConnected
    | DebugVersion
    | DebugSetSetting
    | DebugAddCommand
    | DebugLast
    | DebugLogLevel
    | AckAnswer
    | Quit
)

_Parser: TypeAlias = Callable[[str], Command]
"""Parses the arguments of one command: the rest of the line after its word(s)."""

_ALLOWED_BEFORE_IDENTIFICATION: frozenset[type[Command]] = frozenset(
    {Identify, Time, AckAnswer, Quit, DebugSource, DebugConnected, DebugVersion, DebugLogLevel}
)


def allowed_before_identification(command: Command) -> bool:
    """Whether a device may send `command` before `ID`: everything else touches its data."""
    return type(command) in _ALLOWED_BEFORE_IDENTIFICATION


_ONLY_ANSWERED: frozenset[type[Command]] = frozenset(
    {
        SettingsGetAll, SettingsGetPending, SettingGet, CommandsList, AckRequest, Time,
        FirmwareSelect, FirmwareSize, FirmwareGet, DebugId, DebugSource, DebugConnected,
        DebugVersion, DebugLast, DebugLogLevel,
    }
)  # fmt: skip


def only_answered(command: Command) -> bool:
    """Whether `command` does nothing but get an answer: once the device left, nothing."""
    return type(command) in _ONLY_ANSWERED


def parse_command(line: bytes | str) -> Command:
    """Parse one line, without its `\\n` (a trailing `\\r` is ignored), into a command.

    Raises `AlipError` for anything the server refuses, and nothing else.
    """
    if isinstance(line, bytes):
        # The original platform stored invalid UTF-8 with replacement characters, so
        # devices that send Latin-1 in an SMS keep working instead of getting errors.
        line = line.decode("utf-8", "replace")
    elif utf8_size(line) is None:
        raise AlipError("Invalid line: it holds a lone surrogate, which is not text")
    if line.endswith("\r"):
        line = line[:-1]
    return _parse_top_level(line)


def _sub_commands(family: str, parsers: dict[str, _Parser]) -> _Parser:
    """Dispatch on the first word: how the line itself and every command family read.

    `family` is the word that led here (`S`, `DB`), or empty for the line itself.
    """

    def parse(arguments: str) -> Command:
        word, _, rest = arguments.partition(" ")
        parser = parsers.get(word)
        if parser is None:
            raise AlipError(_not_understood(family, word, parsers))
        return parser(rest)

    return parse


def _not_understood(family: str, word: str, parsers: dict[str, _Parser]) -> str:
    if not family:
        return f'Command "{word}" not understood !'
    if not word:
        return f'Command "{family}" needs one of: {", ".join(parsers)}'
    return f'Command "{family} {word}" not understood !'


def _without_argument(command: Command, usage: str) -> _Parser:
    def parse(arguments: str) -> Command:
        if arguments:
            raise AlipError(f'Expected "{usage}" with no argument')
        return command

    return parse


def _name_and_value(command: Callable[[str, str], Command], usage: str) -> _Parser:
    """A word, then the rest of the line (`D <type> <content>`, `S A <name> <value>`)."""

    def parse(arguments: str) -> Command:
        name, value = _fields(arguments, 2, usage)
        return command(name, value)

    return parse


def _one_word(command: Callable[[str], Command], usage: str) -> _Parser:
    def parse(arguments: str) -> Command:
        return command(_word(arguments, usage))

    return parse


def _fields(arguments: str, count: int, usage: str) -> list[str]:
    """Split into `count` fields; all but the last (the rest of the line) must be non-empty."""
    fields = arguments.split(" ", count - 1)
    if len(fields) != count or "" in fields[:-1]:
        raise AlipError(f'Expected "{usage}"')
    return fields


def _word(arguments: str, usage: str) -> str:
    if not arguments or " " in arguments:
        raise AlipError(f'Expected "{usage}"')
    return arguments


def _number(text: str, meaning: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_NUMBER_DIGITS):
        raise AlipError(f'Invalid {meaning} "{text}": expected a non-negative integer')
    return int(text)


def _optional_number(arguments: str, meaning: str, usage: str) -> int | None:
    return _number(_word(arguments, usage), meaning) if arguments else None


def _time(text: str) -> datetime:
    try:
        return parse_device_time(text)
    except ValueError as error:
        raise AlipError(str(error)) from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


# NaN and infinities would be written to storage as text no other JSON reader accepts.
_JSON_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _json(text: str) -> JsonValue:
    """A JSON value the time series can store (the store's own rule, checked here)."""
    try:
        value: JsonValue = _JSON_DECODER.decode(text)
        encode_data(value)  # lone surrogates ("\ud800" escapes), nesting too deep
    # RecursionError: deeply nested arrays from a hostile or broken device.
    except (ValueError, RecursionError) as error:
        raise AlipError(f"Invalid JSON: {error}") from None
    return value


def _record_type(text: str) -> str:
    try:
        check_device_record_type(text)
    except InvalidInput as error:
        raise AlipError(f'Invalid type "{text:.80}": {error}') from None
    return text


def _parse_identify(arguments: str) -> Identify:
    if _IDENT_PATTERN.fullmatch(arguments) is None:
        raise AlipError(
            f'Invalid ident "{arguments}": expected <type>:<id> such as imei:356938035643809 '
            f"(^{_IDENT_PATTERN.pattern}$)"
        )
    return Identify(arguments)


def _parse_data_at(arguments: str) -> DataAt:
    time, type_, content = _fields(arguments, 3, "E <time> <type> <content>")
    return DataAt(_time(time), type_, content)


def _parse_json_at(arguments: str) -> JsonAt:
    time, type_, text = _fields(arguments, 3, "J <time> <type> <json>")
    if type_.startswith(_RESERVED_TYPE_PREFIX):
        raise AlipError(
            f'Forbidden type "{type_}": types starting with "{_RESERVED_TYPE_PREFIX}" '
            "are the server's own"
        )
    return JsonAt(_time(time), _record_type(type_), _json(text))


def _parse_setting_get(arguments: str) -> SettingGet | SettingsGetPending:
    return SettingGet(_word(arguments, "S G [<name>]")) if arguments else SettingsGetPending()


def _parse_command_ack(arguments: str) -> CommandAck:
    return CommandAck(_number(_word(arguments, "C A <n>"), "command number"))


def _parse_firmware_get(arguments: str) -> FirmwareGet:
    offset, size = _fields(arguments, 2, "F G <offset> <size>")
    return FirmwareGet(_number(offset, "offset"), _number(size, "size"))


def _parse_debug_add_command(arguments: str) -> DebugAddCommand:
    if not arguments:
        raise AlipError('Expected "DB ADD_COMMAND <text>"')
    return DebugAddCommand(arguments)


def _parse_debug_last(arguments: str) -> DebugLast:
    count = _optional_number(arguments, "count", "DB LAST [<n>]")
    if count is not None and count > MAX_LAST_COUNT:
        raise AlipError(f"DB LAST lists at most {MAX_LAST_COUNT} records, not {count}")
    return DebugLast() if count is None else DebugLast(count)


def _parse_debug_log_level(arguments: str) -> DebugLogLevel:
    return DebugLogLevel(_optional_number(arguments, "log level", "DB LOGLEVEL [<n>]"))


_parse_top_level = _sub_commands(
    "",
    {
        "D": _name_and_value(Data, "D <type> <content>"),
        "E": _parse_data_at,
        "J": _parse_json_at,
        "ID": _parse_identify,
        "S": _sub_commands(
            "S",
            {
                "A": _name_and_value(SettingAck, "S A <name> <value>"),
                "S": _name_and_value(SettingReport, "S S <name> <value>"),
                "GA": _without_argument(SettingsGetAll(), "S GA"),
                "G": _parse_setting_get,
                "U": _one_word(SettingUnknown, "S U <name>"),
            },
        ),
        "C": _sub_commands(
            "C",
            {
                "A": _parse_command_ack,
                "L": _without_argument(CommandsList(), "C L"),
            },
        ),
        "A": AckRequest,
        "B": AckAnswer,
        "T": _without_argument(Time(), "T"),
        "F": _sub_commands(
            "F",
            {
                "N": _one_word(FirmwareSelect, "F N <name>"),
                "S": _without_argument(FirmwareSize(), "F S"),
                "G": _parse_firmware_get,
            },
        ),
        "DB": _sub_commands(
            "DB",
            {
                "ID": _without_argument(DebugId(), "DB ID"),
                "SOURCE": _without_argument(DebugSource(), "DB SOURCE"),
                "CONNECTED": _without_argument(DebugConnected(), "DB CONNECTED"),
                "VERSION": _without_argument(DebugVersion(), "DB VERSION"),
                "SET_SETTING": _name_and_value(DebugSetSetting, "DB SET_SETTING <name> <value>"),
                "ADD_COMMAND": _parse_debug_add_command,
                "LAST": _parse_debug_last,
                "LOGLEVEL": _parse_debug_log_level,
            },
        ),
        "QUIT": _without_argument(Quit(), "QUIT"),
    },
)
