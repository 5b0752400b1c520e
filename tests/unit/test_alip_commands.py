"""Every ALIP command the contract names, and every way a line can be refused."""

import dataclasses
import json
import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from m2m.errors import InvalidInput
from m2m.receivers.alip.commands import (
    MAX_LAST_COUNT,
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
from m2m.receivers.alip.processors import Reading, process_data
from m2m.registry.device_series import check_device_record_type
from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.rules import MAX_DATA_DEPTH, encode_data

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


_WORDS = st.text(st.characters(exclude_characters=" \n\r", exclude_categories=["Cs"]), min_size=1)
_RESTS = st.text(st.characters(exclude_characters="\n\r", exclude_categories=["Cs"]))
"""Text a line decoded from bytes can hold: no lone surrogates (a line with one is refused)."""


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


# --- The store's rules, checked where the line arrives ----------------------------------

LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


def nested_json(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    "json_text",
    [
        '{"a\\ud800": 1}',
        '"\\ud800"',
        '["ok", "\\udfff"]',
        '{"a": {"b": "x\\udc00y"}}',
        '"\\udd1e\\ud834"',  # a pair in the wrong order is two lone surrogates
    ],
)
def test_json_with_a_lone_surrogate_escape_is_refused(json_text: str) -> None:
    line = f"J 1700000000 sen:x {json_text}"  # the escape as a device sends it: plain ASCII
    with pytest.raises(AlipError) as raised:
        parse_command(line.encode("ascii"))
    assert str(raised.value) == "Invalid JSON: record data holds a lone surrogate: it is not text"


def test_json_with_a_surrogate_pair_escape_is_the_character_it_encodes() -> None:
    assert parse_command('J 1700000000 sen:x "\\ud834\\udd1e"') == JsonAt(
        NOV_14_2023, "sen:x", "\U0001d11e"
    )


def test_json_nested_as_deep_as_the_store_allows_is_accepted() -> None:
    command = parse_command(f"J 1700000000 sen:x {nested_json(MAX_DATA_DEPTH)}")
    assert isinstance(command, JsonAt)
    assert json.dumps(command.value, separators=(",", ":")) == nested_json(MAX_DATA_DEPTH)


@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH + 1, 200, 900, 1000, 2000, 100_000])
def test_json_nested_deeper_than_the_store_allows_is_refused(depth: int) -> None:
    with pytest.raises(AlipError, match=r"^Invalid JSON: "):
        parse_command(f"J 1700000000 sen:x {nested_json(depth)}")


def test_objects_nested_too_deep_are_refused_like_arrays() -> None:
    text = '{"a":' * (MAX_DATA_DEPTH + 1) + "1" + "}" * (MAX_DATA_DEPTH + 1)
    with pytest.raises(AlipError) as raised:
        parse_command(f"J 1700000000 sen:x {text}")
    assert str(raised.value) == f"Invalid JSON: record data is nested deeper than {MAX_DATA_DEPTH}"


@pytest.mark.parametrize(
    ("record_type", "reason"),
    [
        ("lsen:..", """Invalid type "lsen:..": invalid registry path"""),
        ("lsen:.", "it contains a '.' segment"),
        ("lsen:", "a child name cannot be empty"),
        ("lsen:a/b", "a child name cannot contain '/'"),
        ("lsen:a\x01b", "it contains a control character"),
        ("x" * 1025, "a record type is 1025 bytes long, above 1024"),
    ],
)
def test_json_under_a_type_no_device_record_can_have_is_refused(
    record_type: str, reason: str
) -> None:
    with pytest.raises(AlipError) as raised:
        parse_command(f"J 1700000000 {record_type} 1")
    assert str(raised.value).startswith('Invalid type "')
    assert reason in str(raised.value)


def test_the_refused_type_is_quoted_briefly() -> None:
    with pytest.raises(AlipError) as raised:
        parse_command(f"J 1700000000 {'x' * 100_000} 1")
    assert len(str(raised.value)) < 200


def test_json_under_a_listed_sensor_is_accepted() -> None:
    assert parse_command("J 1700000000 lsen:pressure 1013") == JsonAt(
        NOV_14_2023, "lsen:pressure", 1013
    )


def test_a_reserved_type_is_refused_as_forbidden_before_its_name_is_checked() -> None:
    with pytest.raises(AlipError, match=r'^Forbidden type "_\.\./x"'):
        parse_command("J 1700000000 _../x 1")


@pytest.mark.parametrize("count", [0, 1, MAX_LAST_COUNT])
def test_db_last_lists_up_to_the_most_it_may(count: int) -> None:
    assert parse_command(f"DB LAST {count}") == DebugLast(count)


@pytest.mark.parametrize("count", [MAX_LAST_COUNT + 1, 10**6, 10**17])
def test_db_last_refuses_to_list_more_than_the_most_it_may(count: int) -> None:
    with pytest.raises(AlipError) as raised:
        parse_command(f"DB LAST {count}")
    assert str(raised.value) == f"DB LAST lists at most {MAX_LAST_COUNT} records, not {count}"


def test_db_last_still_refuses_a_number_too_long_to_read() -> None:
    with pytest.raises(AlipError, match=r'^Invalid count "1000000000000000000"'):
        parse_command(f"DB LAST {10**18}")


def test_every_refusal_of_the_parser_is_invalid_input_never_worth_retrying() -> None:
    with pytest.raises(InvalidInput):
        parse_command("J 1700000000 lsen:.. 1")


@pytest.mark.parametrize(
    "line",
    ["D T \ud800", "E 1700000000 SMS a\udfffb", "D sen:x \udc00", "J 1700000000 sen:\ud800 1"],
)
def test_a_str_line_with_a_lone_surrogate_is_refused(line: str) -> None:
    """Bytes from the wire decode without lone surrogates; a str line is checked for them."""
    with pytest.raises(AlipError, match=r"^Invalid line: it holds a lone surrogate"):
        parse_command(line)


# --- Properties: whatever the line, a refusal or a record the store accepts -------------

_SURROGATE_TEXTS = st.tuples(
    st.text(max_size=6), st.sampled_from(LONE_SURROGATES), st.text(max_size=6)
).map("".join)
_TEXTS = st.text(max_size=12) | _SURROGATE_TEXTS
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXTS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXTS, children, max_size=3),
    max_leaves=10,
)
_JSON_TEXTS = st.one_of(
    st.builds(
        lambda value, ascii: json.dumps(value, ensure_ascii=ascii), _JSON_VALUES, st.booleans()
    ),
    st.integers(0, 3 * MAX_DATA_DEPTH).map(nested_json),
    st.text(string.digits + ' -_:.,{}[]"\\u' + "abcdefn", max_size=30),
)
_VALID_TIMES = st.sampled_from(["1700000000", "231114221320", "20231114221320.5"])
_TIMES = st.one_of(_VALID_TIMES, _VALID_TIMES, _VALID_TIMES, st.text(string.digits, max_size=15))
_TYPES = st.sampled_from(
    [
        "sen:x",
        "lsen:p",
        "lsen:..",
        "lsen:",
        "lsen:a/b",
        "_x",
        "L",
        "G",
        "T",
        "LS:a",
        "LS:..",
        "echo",
    ]
) | st.lists(
    st.sampled_from(["lsen:", "LS:", "/", ".", "\t", "\ud800", "x"]) | st.characters(),
    min_size=1,
    max_size=6,
).map("".join)
_CONTENTS = _TEXTS | st.sampled_from(["48.85,2.35", "7", "1700000000,48.85,2.35", "nan,1"])
_JSON_LINES = st.builds(lambda *parts: "J " + " ".join(parts), _TIMES, _TYPES, _JSON_TEXTS)
_STR_LINES = st.one_of(
    _JSON_LINES,
    _JSON_LINES,
    st.builds(lambda *parts: "D " + " ".join(parts), _TYPES, _CONTENTS),
    st.builds(lambda *parts: "E " + " ".join(parts), _TIMES, _TYPES, _CONTENTS),
    st.lists(st.sampled_from(["J ", "D ", " ", "\ud800", "\r"]) | st.characters(), max_size=12).map(
        "".join
    ),
)
_BYTES_LINES = st.binary(max_size=40) | _STR_LINES.map(
    lambda line: line.encode("utf-8", "surrogatepass")
)


def check_what_the_store_gets(command: Any) -> None:
    """What a JsonAt, Data or DataAt leads to is what the time series of a device accept."""
    if isinstance(command, JsonAt):
        check_device_record_type(command.type)
        assert json.loads(encode_data(command.value).encode("utf-8")) == command.value
    elif isinstance(command, Data | DataAt):
        try:
            processed = process_data(command.type, command.content)
        except AlipError as error:
            assert str(error)
            return
        if isinstance(processed, Reading):
            check_device_record_type(processed.type)
            encode_data(processed.value)


@given(_BYTES_LINES | _STR_LINES)
@example(b'J 1700000000 sen:x {"a\\ud800": 1}')
@example(b"J 1700000000 lsen:.. 1")
@example(b"D LS:.. 1")
@example(b"D T \xed\xa0\x80")  # a surrogate encoded as if it were UTF-8: replaced
@example(b"J 1700000000 sen:x " + nested_json(2000).encode())
@example('J 1700000000 sen:x {"a\\ud800": 1}')
@example('J 1700000000 sen:x {"a\ud800": 1}')
@example("J 1700000000 sen:\ud800 1")
@example("D LS:\udfff 1")
@example("E 1700000000 lsen:.. 1")
def test_any_line_gives_an_alip_error_or_a_record_the_store_accepts(line: bytes | str) -> None:
    try:
        command = parse_command(line)
    except AlipError as error:
        assert str(error)
        return
    check_what_the_store_gets(command)


@given(_VALID_TIMES, st.sampled_from(["sen:x", "lsen:p", "x_y"]), _JSON_VALUES)
def test_a_json_value_is_accepted_exactly_when_the_store_accepts_it(
    time: str, record_type: str, value: Any
) -> None:
    line = f"J {time} {record_type} {json.dumps(value)}"
    try:
        stored = encode_data(value)
    except TimeSeriesError:  # NaN, infinities, lone surrogates
        with pytest.raises(AlipError, match=r"^Invalid JSON: "):
            parse_command(line.encode())
        return
    command = parse_command(line.encode())
    assert isinstance(command, JsonAt)
    assert command.type == record_type
    assert encode_data(command.value) == stored
