"""How the platform's processes log: one event a line, for a person or for a machine.

``logging.format: text`` writes the line a person reads; ``json`` one JSON object a line,
whose context has fields of its own (``connection_id``, ``device_id`` and ``peer`` for a
device connection, ``topic`` and ``channel`` for a consumer), so a log pipeline selects
every line about one device without parsing messages. The libraries' records (Twisted's,
the Cassandra driver's, pynsq's, Tornado's) go through the same formatter.

The bus libraries say the same thing again at every reconnection attempt (a second apart)
while an nsqd is away, for as long as it is: an edge site's uplink may be down a week.
:class:`QuietRepeats` lets each such line through once a minute; the consumers and the
publisher log the outage itself, once when it starts and once when it ends.

Devices choose part of what is logged (idents, channel names, frames). JSON escapes it;
in text, a newline in it would start a line that reads as another event. So the text
format escapes every control character, whoever wrote it: a traceback is one line too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pythonjsonlogger import json as json_logger

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LINE_BREAKERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
"""Control characters (C0, DEL, C1), Unicode's line separators, and lone surrogates
(which stderr cannot even encode)."""


class QuietRepeats(logging.Filter):
    """Lets a record of the ``loggers`` (and theirs) through at most once per ``interval``
    seconds per message: the same template, with the same arguments when they are plain
    values (an address), whatever they are otherwise (an object's repr, which changes)."""

    def __init__(self, loggers: tuple[str, ...], interval: float) -> None:
        super().__init__()
        self._loggers = loggers
        self._interval = interval
        self._last: dict[tuple[object, ...], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._loggers):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        plain = all(isinstance(arg, str | int | float) for arg in args)
        key = (record.name, record.levelno, str(record.msg), args if plain else None)
        last = self._last.get(key)
        if last is not None and record.created - last < self._interval:
            return False
        self._last[key] = record.created
        return True


def escape_control_characters(text: str) -> str:
    """``text`` on one line: ``\\n``, ``\\x1b``, ``\\u2028``… as Python would write them."""
    return _LINE_BREAKERS.sub(lambda found: found[0].encode("unicode_escape").decode(), text)


class TextFormatter(logging.Formatter):
    """``<local time> <LEVEL> <logger>: <message>``, then the device a connection's line is
    about when it said who it is (its messages already name the connection)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        device_id = getattr(record, "device_id", None)
        return f"{line} (device {device_id})" if device_id is not None else line

    def format(self, record: logging.LogRecord) -> str:
        return escape_control_characters(super().format(record))


class JsonFormatter(json_logger.JsonFormatter):
    """``time`` (UTC, milliseconds), ``level``, ``logger``, ``message``, ``exception`` (the
    traceback) when there is one, and the record's context fields (its ``extra``)."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "exc_info": "exception",
                "stack_info": "stack",
            },
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def formatter(kind: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()


class LoggedConnection(Protocol):
    """What the lines about a device connection say of it."""

    @property
    def connection_id(self) -> int: ...

    @property
    def source(self) -> str:
        """The peer's ``ip:port``."""

    @property
    def device_id(self) -> str | None: ...


class ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger about one device connection: its messages begin ``connection <id>: ``, its
    records carry ``connection_id``, ``peer`` and, once the device said who it is,
    ``device_id`` (read when each record is made)."""

    def __init__(self, logger: logging.Logger, connection: LoggedConnection) -> None:
        super().__init__(logger)
        self.connection = connection

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        connection = self.connection
        context: dict[str, object] = {
            "connection_id": connection.connection_id,
            "peer": connection.source,
        }
        if connection.device_id is not None:
            context["device_id"] = connection.device_id
        kwargs["extra"] = context
        return f"connection {connection.connection_id}: {msg}", kwargs
