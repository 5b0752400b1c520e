"""Every ALIP command the contract names, and every way a line can be refused."""

import dataclasses
import string
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from m2m.receivers.alip.commands import (
    AckAnswer,
    AckRequest,
    AlipError,
    Command,
    CommandAck,
    CommandsList,
    Data,
    DataAt,
    DebugAddCommand,
    DebugConnected,
    DebugId,
    DebugLast,
    DebugLogLevel,
    DebugSetSetting,
    DebugSource,
    DebugVersion,
    FirmwareGet,
    FirmwareSelect,
    FirmwareSize,
    Identify,
    JsonAt,
    Quit,
    SettingAck,
    SettingGet,
    SettingReport,
    SettingsGetAll,
    SettingsGetPending,
    SettingUnknown,
    Time,
    allowed_before_identification,
    parse_command,
)

NOV_14_2023 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)

EVERY_COMMAND: list[tuple[str, Command]] = [
    ("ID imei:356938035643809", Identify("imei:356938035643809")),
    ("D T 21.5", Data("T", "21.5")),
    ("D L 48.85,2.35", Data("L", "48.85,2.35")),
    ("D SMS hello there, how are you ?", Data("SMS", "hello there, how are you ?")),
    ("D T ", Data("T", "")),
    ("E 1700000000 T 21.5", DataAt(NOV_14_2023, "T", "21.5")),
    ("E 231114221320 SMS two words", DataAt(NOV_14_2023, "SMS", "two words")),
    ("E 20231114221320 L 48.85,2.35", DataAt(NOV_14_2023, "L", "48.85,2.35")),
    ('J 1700000000 sen:x {"a": 1}', JsonAt(NOV_14_2023, "sen:x", {"a": 1})),
    (
        'J 1700000000 sen:x [1, 2.5, "three", null, true]',
        JsonAt(NOV_14_2023, "sen:x", [1, 2.5, "three", None, True]),
    ),
    ("J 1700000000 x_y 42", JsonAt(NOV_14_2023, "x_y", 42)),
    ("S A name value with spaces", SettingAck("name", "value with spaces")),
    ("S A name ", SettingAck("name", "")),
    ("S S period 60", SettingReport("period", "60")),
    ("S GA", SettingsGetAll()),
    ("S G", SettingsGetPending()),
    ("S G period", SettingGet("period")),
    ("S U period", SettingUnknown("period")),
    ("C A 3", CommandAck(3)),
    ("C L", CommandsList()),
    ("A 12", AckRequest("12")),
    ("A some token", AckRequest("some token")),
    ("A", AckRequest("")),
    ("T", Time()),
    ("F N firmware-1.2.bin", FirmwareSelect("firmware-1.2.bin")),
    ("F S", FirmwareSize()),
    ("F G 0 512", FirmwareGet(0, 512)),
    ("F G 1024 0", FirmwareGet(1024, 0)),
    ("DB ID", DebugId()),
    ("DB SOURCE", DebugSource()),
    ("DB CONNECTED", DebugConnected()),
    ("DB VERSION", DebugVersion()),
    ("DB SET_SETTING period 60 s", DebugSetSetting("period", "60 s")),
    ("DB ADD_COMMAND reboot now", DebugAddCommand("reboot now")),
    ("DB LAST", DebugLast(10)),
    ("DB LAST 3", DebugLast(3)),
    ("DB LOGLEVEL", DebugLogLevel(None)),
    ("DB LOGLEVEL 7", DebugLogLevel(7)),
    ("B 12", AckAnswer("12")),
    ("B", AckAnswer("")),
    ("QUIT", Quit()),
]


@pytest.mark.parametrize(("line", "expected"), EVERY_COMMAND)
def test_every_command_parses_from_str_and_bytes(line: str, expected: Command) -> None:
    assert parse_command(line) == expected
    assert parse_command(line.encode()) == expected


@pytest.mark.parametrize("line", ["T\r", b"T\r", "T ", "T \r"])
def test_a_trailing_carriage_return_or_space_is_ignored(line: str | bytes) -> None:
    assert parse_command(line) == Time()


def test_only_one_trailing_carriage_return_is_ignored() -> None:
    with pytest.raises(AlipError) as raised:
        parse_command("T\r\r")
    assert str(raised.value) == 'Command "T\r" not understood !'


def test_invalid_utf8_is_replaced_not_refused() -> None:
    assert parse_command(b"D SMS caf\xe9") == Data("SMS", "caf\ufffd")


def test_commands_are_immutable() -> None:
    command = parse_command("D T 21.5")
    assert isinstance(command, Data)
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.content = "0"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        # Unknown words, at the top level and in each family.
        ("HELLO", 'Command "HELLO" not understood !'),
        ("", 'Command "" not understood !'),
        ("quit", 'Command "quit" not understood !'),
        (" T", 'Command "" not understood !'),
        ("S X a", 'Command "S X" not understood !'),
        ("C X", 'Command "C X" not understood !'),
        ("F X", 'Command "F X" not understood !'),
        ("DB X", 'Command "DB X" not understood !'),
        ("S", 'Command "S" needs one of: A, S, GA, G, U'),
        ("C", 'Command "C" needs one of: A, L'),
        ("F", 'Command "F" needs one of: N, S, G'),
        (
            "DB",
            'Command "DB" needs one of: ID, SOURCE, CONNECTED, VERSION, SET_SETTING, '
            "ADD_COMMAND, LAST, LOGLEVEL",
        ),
        # Missing arguments.
        ("D", 'Expected "D <type> <content>"'),
        ("D T", 'Expected "D <type> <content>"'),
        ("D  21.5", 'Expected "D <type> <content>"'),
        ("E 1700000000 T", 'Expected "E <time> <type> <content>"'),
        ("E 1700000000", 'Expected "E <time> <type> <content>"'),
        ("J 1700000000 sen:x", 'Expected "J <time> <type> <json>"'),
        ("S A name", 'Expected "S A <name> <value>"'),
        ("S A", 'Expected "S A <name> <value>"'),
        ("S S name", 'Expected "S S <name> <value>"'),
        ("S U", 'Expected "S U <name>"'),
        ("S U a b", 'Expected "S U <name>"'),
        ("S G a b", 'Expected "S G [<name>]"'),
        ("C A", 'Expected "C A <n>"'),
        ("F N", 'Expected "F N <name>"'),
        ("F G 0", 'Expected "F G <offset> <size>"'),
        ("F G", 'Expected "F G <offset> <size>"'),
        ("DB SET_SETTING name", 'Expected "DB SET_SETTING <name> <value>"'),
        ("DB ADD_COMMAND", 'Expected "DB ADD_COMMAND <text>"'),
        ("DB LAST 1 2", 'Expected "DB LAST [<n>]"'),
        ("DB LOGLEVEL 1 2", 'Expected "DB LOGLEVEL [<n>]"'),
        # Arguments to commands that take none.
        ("T 1700000000", 'Expected "T" with no argument'),
        ("QUIT now", 'Expected "QUIT" with no argument'),
        ("S GA x", 'Expected "S GA" with no argument'),
        ("C L x", 'Expected "C L" with no argument'),
        ("F S x", 'Expected "F S" with no argument'),
        ("DB ID x", 'Expected "DB ID" with no argument'),
        ("DB SOURCE x", 'Expected "DB SOURCE" with no argument'),
        ("DB CONNECTED x", 'Expected "DB CONNECTED" with no argument'),
        ("DB VERSION x", 'Expected "DB VERSION" with no argument'),
        # Numbers.
        ("F G -1 10", 'Invalid offset "-1": expected a non-negative integer'),
        ("F G 0 -10", 'Invalid size "-10": expected a non-negative integer'),
        ("F G x 10", 'Invalid offset "x": expected a non-negative integer'),
        ("F G 0 ten", 'Invalid size "ten": expected a non-negative integer'),
        ("F G 0 1.5", 'Invalid size "1.5": expected a non-negative integer'),
        ("F G 0 10 20", 'Invalid size "10 20": expected a non-negative integer'),
        ("F G ٣ 10", 'Invalid offset "٣": expected a non-negative integer'),
        ("F G 1" + "0" * 18 + " 10", f'Invalid offset "1{"0" * 18}": expected a non-negative'),
        ("C A x", 'Invalid command number "x": expected a non-negative integer'),
        ("C A -1", 'Invalid command number "-1": expected a non-negative integer'),
        ("DB LAST x", 'Invalid count "x": expected a non-negative integer'),
        ("DB LOGLEVEL -1", 'Invalid log level "-1": expected a non-negative integer'),
        # Times.
        ("E 123 T 21.5", 'Invalid time "123": expected unix seconds'),
        ("E 231314221320 T 21.5", 'Invalid time "231314221320": month must be in 1..12'),
        ('J 20230229000000 sen:x {"a": 1}', 'Invalid time "20230229000000": day is out of range'),
        # JSON.
        ("J 1700000000 sen:x {a: 1}", "Invalid JSON: Expecting property name"),
        ("J 1700000000 sen:x ", "Invalid JSON: Expecting value"),
        ('J 1700000000 sen:x {"a": 1} x', "Invalid JSON: Extra data"),
        ("J 1700000000 sen:x NaN", "Invalid JSON: NaN is not valid JSON"),
        ('J 1700000000 sen:x {"a": -Infinity}', "Invalid JSON: -Infinity is not valid JSON"),
        ("J 1700000000 sen:x [1e999]", "Invalid JSON: 1e999 is out of range"),
        ("J 1700000000 sen:x " + "[" * 100_000, "Invalid JSON: "),
        # Types starting with "_" belong to the server.
        ('J 1700000000 _server {"a": 1}', 'Forbidden type "_server"'),
        ("J 1700000000 _ 1", 'Forbidden type "_"'),
        # Idents.
        ("ID", 'Invalid ident "": expected <type>:<id>'),
        ("ID imei", 'Invalid ident "imei": expected <type>:<id>'),
        ("ID imei:123", 'Invalid ident "imei:123"'),  # id too short
        ("ID imei:" + "1" * 21, 'Invalid ident "imei:1'),  # id too long
        ("ID im:1234", 'Invalid ident "im:1234"'),  # type too short
        ("ID imeiimei:1234", 'Invalid ident "imeiimei:1234"'),  # type too long
        ("ID 1mei:1234", 'Invalid ident "1mei:1234"'),  # type starts with a digit
        ("ID IMEI:1234", 'Invalid ident "IMEI:1234"'),  # type in upper case
        ("ID imei:12-34", 'Invalid ident "imei:12-34"'),
        ("ID imei:1234 extra", 'Invalid ident "imei:1234 extra"'),
        ("ID imei:1234\n", 'Invalid ident "imei:1234\n"'),
        ("ID imei:١٢٣٤", 'Invalid ident "imei:١٢٣٤"'),
    ],
)
def test_refused_lines_give_the_reason_to_send_after_err(line: str, reason: str) -> None:
    with pytest.raises(AlipError) as raised:
        parse_command(line)
    assert str(raised.value).startswith(reason)


def test_the_unknown_command_reason_is_exactly_the_contract() -> None:
    with pytest.raises(AlipError) as raised:
        parse_command(b"HELLO world")
    assert str(raised.value) == 'Command "HELLO" not understood !'


BEFORE_IDENTIFICATION = {
    "ID imei:356938035643809",
    "T",
    "B 12",
    "B",
    "QUIT",
    "DB SOURCE",
    "DB CONNECTED",
    "DB VERSION",
    "DB LOGLEVEL",
    "DB LOGLEVEL 7",
}


@pytest.mark.parametrize(("line", "command"), EVERY_COMMAND)
def test_only_the_contract_s_commands_work_before_identification(
    line: str, command: Command
) -> None:
    assert allowed_before_identification(command) is (line in BEFORE_IDENTIFICATION)


_IDENT_TYPES = st.text(string.ascii_lowercase, min_size=1, max_size=1).flatmap(
    lambda first: st.text(string.ascii_lowercase + string.digits, min_size=2, max_size=6).map(
        lambda rest: first + rest
    )
)
_IDENT_IDS = st.text(string.ascii_letters + string.digits, min_size=4, max_size=20)


@given(_IDENT_TYPES, _IDENT_IDS)
def test_any_valid_ident_round_trips(ident_type: str, ident_id: str) -> None:
    ident = f"{ident_type}:{ident_id}"
    assert parse_command(f"ID {ident}") == Identify(ident)


_WORDS = st.text(st.characters(exclude_characters=" \n\r"), min_size=1)
_RESTS = st.text(st.characters(exclude_characters="\n\r"))


@given(_WORDS, _RESTS)
def test_the_rest_of_the_line_is_kept_whole(word: str, rest: str) -> None:
    assert parse_command(f"D {word} {rest}") == Data(word, rest)
    assert parse_command(f"S A {word} {rest}") == SettingAck(word, rest)
    assert parse_command(f"DB SET_SETTING {word} {rest}") == DebugSetSetting(word, rest)


@given(st.text() | st.binary())
@example("D")
@example("F G 99999999999999999999999999999999999999999 1")
@example("J 1700000000 x " + "1" * 5000)
@example("J 1700000000 x " + "{" * 5000)
def test_any_line_is_a_command_or_an_alip_error(line: str | bytes) -> None:
    try:
        parse_command(line)
    except AlipError as error:
        assert str(error)


_LINE_STARTS = st.sampled_from(
    [
        *("ID ", "D ", "E ", "J ", "A ", "B "),
        *("S A ", "S S ", "S G", "S U ", "C A ", "F N ", "F G "),
        *("DB ", "DB LAST ", "DB LOGLEVEL ", "DB SET_SETTING "),
    ]
)


@given(_LINE_STARTS, st.text(string.digits + string.ascii_letters + " -_:.,{}[]\"'"))
def test_any_arguments_to_a_known_command_give_a_command_or_an_alip_error(
    start: str, arguments: str
) -> None:
    try:
        parse_command(start + arguments)
    except AlipError as error:
        assert str(error)
