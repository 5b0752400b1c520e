"""The server's lines, byte for byte as the contract and existing devices expect them."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.receivers.alip import lines
from m2m.receivers.alip.commands import (
    AckAnswer,
    AckRequest,
    CommandAck,
    Data,
    SettingReport,
    SettingsGetAll,
    parse_command,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (lines.IDENT_ACCEPTED, b"ID 1\n"),
        (lines.IDENT_REFUSED, b"ID 0\n"),
        (lines.SETTINGS_REQUEST_ALL, b"S GA\n"),
        (lines.FIRMWARE_FOUND, b"F N 1\n"),
        (lines.FIRMWARE_NOT_FOUND, b"F N 0\n"),
        (lines.DEBUG_SET_SETTING_OK, b"DB SET_SETTING OK\n"),
        (lines.DEBUG_ADD_COMMAND_OK, b"DB ADD_COMMAND OK\n"),
        (lines.LAST_BEGIN, b"BEGIN LAST\n"),
        (lines.LAST_END, b"END\n"),
        (lines.QUIT_BYE, b"QUIT bye !\n"),
        (
            lines.QUIT_IDENTIFICATION_TIMEOUT,
            b"QUIT It took you too long to identify yourself !\n",
        ),
        (lines.QUIT_NO_DATA, b"QUIT No data transmitted for more than 12 hours !\n"),
        (lines.setting("period", "60 s"), b"S S period 60 s\n"),
        (lines.setting("empty", ""), b"S S empty \n"),
        (lines.command(3, "reboot now"), b"C 3 reboot now\n"),
        (lines.ack_request(7), b"A 7\n"),
        (lines.ack_answer("7"), b"B 7\n"),
        (lines.current_time(1700000000), b"T 1700000000\n"),
        (lines.firmware_size(123456), b"F S 123456\n"),
        (lines.firmware_chunk(512, b"\x00\x01\xfe\xff"), b"F G 512 0001feff\n"),
        (lines.firmware_chunk(1024, b""), b"F G 1024 \n"),
        (
            lines.debug_device_id("0c2a7f6e-8b1d-4b1e-9f3a-2d1e0f6c5b4a"),
            b"DB ID 0c2a7f6e-8b1d-4b1e-9f3a-2d1e0f6c5b4a\n",
        ),
        (lines.debug_source("192.0.2.1:40000", 12), b"DB SOURCE 192.0.2.1:40000 12\n"),
        (lines.debug_connected(3600), b"DB CONNECTED 3600\n"),
        (lines.debug_version("0.1.0"), b"DB VERSION 0.1.0\n"),
        (lines.debug_log_level(5), b"DB LOGLEVEL 5\n"),
        (
            lines.last_record(datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), "sen:temp", '"21.5"'),
            b'2023-11-14T22:13:20+00:00 sen:temp "21.5"\n',
        ),
        (lines.quit_notice("Server shutting down"), b"QUIT Server shutting down\n"),
        (lines.error('Command "X" not understood !'), b'ERR Command "X" not understood !\n'),
        (lines.echo("are you there ?"), b"D echo are you there ?\n"),
        (lines.setting("nom", "café"), "S S nom café\n".encode()),
    ],
)
def test_each_line(line: bytes, expected: bytes) -> None:
    assert line == expected


@pytest.mark.parametrize(
    "encode",
    [
        lambda: lines.setting("name", "two\nlines"),
        lambda: lines.command(1, "reboot\nID imei:356938035643809"),
        lambda: lines.error("a\n"),
        lambda: lines.quit_notice("\n"),
    ],
)
def test_a_newline_in_a_field_is_refused_rather_than_sent(encode: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError, match="cannot contain a newline"):
        encode()


_WORDS = st.text(st.characters(exclude_characters=" \n\r", exclude_categories=["Cs"]), min_size=1)
_RESTS = st.text(st.characters(exclude_characters="\n\r", exclude_categories=["Cs"]))


@given(_WORDS, _RESTS)
def test_a_setting_sent_reads_back_as_the_device_would_report_it(name: str, value: str) -> None:
    assert parse_command(lines.setting(name, value).rstrip(b"\n")) == SettingReport(name, value)


@given(_RESTS)
def test_an_echo_reads_back_as_the_same_echo(content: str) -> None:
    assert parse_command(lines.echo(content).rstrip(b"\n")) == Data("echo", content)


@given(_RESTS)
def test_the_answer_to_an_ack_request_carries_its_token(token: str) -> None:
    request = parse_command(f"A {token}")
    assert isinstance(request, AckRequest)
    assert parse_command(lines.ack_answer(request.x).rstrip(b"\n")) == AckAnswer(token)


@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_a_command_number_sent_is_the_one_acknowledged(number: int) -> None:
    sent = lines.command(number, "reboot")
    assert sent.startswith(b"C ")
    short_number = sent.split(b" ")[1].decode()
    assert parse_command(f"C A {short_number}") == CommandAck(number)


def test_the_settings_request_is_a_command_devices_also_send() -> None:
    assert parse_command(lines.SETTINGS_REQUEST_ALL.rstrip(b"\n")) == SettingsGetAll()
