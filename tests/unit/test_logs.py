"""How the platform logs: one event a line, JSON for machines with its context as fields,
text for people that a device's input cannot split into forged lines."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import given
from hypothesis import strategies as st

from m2m.logs import ConnectionLog, QuietRepeats, formatter

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ANY_CHARACTER = st.characters(exclude_categories=())
"""Control characters, line separators and lone surrogates included."""


@dataclass
class Connection:
    connection_id: int = 7
    source: str = "192.0.2.1:40000"
    device_id: str | None = None


def logged(kind: Literal["text", "json"], log: Callable[[logging.Logger], None]) -> str:
    """What ``log`` writes, through the format ``kind``, to a UTF-8 stream (as stderr is)."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(kind))
    logger = logging.getLogger(f"m2m.test_logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        log(logger)
    finally:
        logger.removeHandler(handler)
    stream.seek(0)
    return stream.read()


def logged_json(log: Callable[[logging.Logger], None]) -> list[dict[str, Any]]:
    """The records ``log`` makes, each checked to be one line of JSON."""
    output = logged("json", log)
    assert output.endswith("\n")
    return [json.loads(line) for line in output.splitlines()]


def raise_and_log(logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        logger.exception("handling %s failed", "store_ts")


def test_a_json_line_has_time_level_logger_and_the_formatted_message() -> None:
    [record] = logged_json(lambda log: log.warning("%d frames from %r", 3, "dev"))
    assert TIME.match(record["time"]), record["time"]
    assert record["level"] == "WARNING"
    assert record["logger"].startswith("m2m.test_logs.")
    assert record["message"] == "3 frames from 'dev'"
    assert "exception" not in record


def test_every_record_is_one_json_line() -> None:
    def log(logger: logging.Logger) -> None:
        logger.info("first")
        logger.error("second")
        logger.debug("third")

    records = logged_json(log)
    assert [(r["level"], r["message"]) for r in records] == [
        ("INFO", "first"),
        ("ERROR", "second"),
        ("DEBUG", "third"),
    ]


def test_the_exception_is_in_the_same_json_line_with_its_traceback() -> None:
    [record] = logged_json(raise_and_log)
    assert record["message"] == "handling store_ts failed"
    assert record["exception"].startswith("Traceback (most recent call last):\n")
    assert record["exception"].endswith("ValueError: broken\non two lines")


@given(st.text(ANY_CHARACTER))
def test_a_json_message_is_one_line_whatever_it_holds(text: str) -> None:
    [record] = logged_json(lambda log: log.warning("ident %s refused", text))
    assert record["message"] == f"ident {text} refused"


def test_a_connection_s_lines_carry_its_id_and_peer_then_its_device() -> None:
    connection = Connection()

    def log(logger: logging.Logger) -> None:
        connection_log = ConnectionLog(logger, connection)
        connection_log.info("opened")
        connection.device_id = "2f1c3d8e-0000-4000-8000-000000000001"
        connection_log.warning("frame dropped (%d so far)", 1)
        raise_and_log(connection_log)

    opened, dropped, failed = logged_json(log)
    assert opened["message"] == "connection 7: opened"
    assert (opened["connection_id"], opened["peer"]) == (7, "192.0.2.1:40000")
    assert "device_id" not in opened
    assert dropped["message"] == "connection 7: frame dropped (1 so far)"
    assert (dropped["connection_id"], dropped["device_id"]) == (7, connection.device_id)
    assert failed["device_id"] == connection.device_id
    assert "ValueError: broken" in failed["exception"]


def test_a_consumer_s_lines_carry_its_topic_and_channel() -> None:
    def log(logger: logging.Logger) -> None:
        consumer_log = logging.LoggerAdapter(logger, {"topic": "storage", "channel": "storage"})
        consumer_log.error("storage/storage: store_ts failed 5 times")

    [record] = logged_json(log)
    assert (record["topic"], record["channel"]) == ("storage", "storage")


def test_a_text_line_is_as_a_person_reads_it_with_the_device_it_is_about() -> None:
    connection = Connection(device_id="2f1c3d8e-0000-4000-8000-000000000001")
    output = logged("text", lambda log: ConnectionLog(log, connection).warning("closing it"))
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING m2m\.test_logs\.\w+: "
        r"connection 7: closing it \(device 2f1c3d8e-0000-4000-8000-000000000001\)\n",
        output,
    ), output


@given(st.text(ANY_CHARACTER))
def test_device_input_cannot_forge_a_second_text_line(ident: str) -> None:
    output = logged(
        "text", lambda log: ConnectionLog(log, Connection()).info("unknown device %s", ident)
    )
    assert len(output.splitlines()) == 1, output
    assert output.endswith("\n")


def test_control_characters_in_text_are_escaped_as_python_writes_them() -> None:
    forged = "x\r\n2026-01-01 00:00:00,000 ERROR   m2m: forged\x1b[2K\u2028\ud800"
    output = logged("text", lambda log: log.info("ident %s refused", forged))
    line = output.removesuffix("\n")
    assert "\n" not in line
    assert line.endswith(
        r"ident x\r\n2026-01-01 00:00:00,000 ERROR   m2m: forged\x1b[2K\u2028\ud800 refused"
    )


def test_a_text_traceback_stays_on_its_event_s_line() -> None:
    output = logged("text", raise_and_log)
    [line] = output.splitlines()
    assert r"handling store_ts failed\nTraceback (most recent call last):\n" in line
    assert line.endswith(r"ValueError: broken\non two lines")


def _record(name: str, msg: str, args: tuple[Any, ...], created: float) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)
    record.created = created
    return record


def test_a_bus_library_s_repeated_line_passes_once_a_minute() -> None:
    quiet = QuietRepeats(("nsq", "tornado"), interval=60)
    closed = "[%s] connection closed"
    seen = [quiet.filter(_record("nsq.writer", closed, ("10.0.0.5:4150",), t))
            for t in (0, 1, 2, 59, 61)]  # fmt: skip
    assert seen == [True, False, False, False, True]
    assert quiet.filter(_record("nsq.writer", closed, ("10.0.0.6:4150",), 3))  # another nsqd
    callback = "Exception in callback %r"  # an object's repr, new every time
    assert quiet.filter(_record("tornado.application", callback, (object(),), 0))
    assert not quiet.filter(_record("tornado.application", callback, (object(),), 1))
    assert all(quiet.filter(_record("m2m.bus.consumer", closed, ("x",), t)) for t in (0, 1))
