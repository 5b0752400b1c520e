"""The lines the server sends to ALIP devices, encoded as bytes ready for the transport.

All the wire formatting lives here, next to the contract, so the protocol adapter never
builds a string itself and a change of wording is made in one place. Fixed lines are
constants; the others are functions of their variable parts. Every line ends with
`\\n`, and a field that would smuggle in another `\\n` (a setting value or a command
text from the registry) is refused with `ValueError` rather than desynchronising the
device.
"""

from datetime import datetime

IDENT_ACCEPTED = b"ID 1\n"
IDENT_REFUSED = b"ID 0\n"
SETTINGS_REQUEST_ALL = b"S GA\n"
"""Sent after identification to a device that has no settings yet."""
FIRMWARE_FOUND = b"F N 1\n"
FIRMWARE_NOT_FOUND = b"F N 0\n"
DEBUG_SET_SETTING_OK = b"DB SET_SETTING OK\n"
DEBUG_ADD_COMMAND_OK = b"DB ADD_COMMAND OK\n"
LAST_BEGIN = b"BEGIN LAST\n"
LAST_END = b"END\n"
QUIT_BYE = b"QUIT bye !\n"
QUIT_IDENTIFICATION_TIMEOUT = b"QUIT It took you too long to identify yourself !\n"
QUIT_NO_DATA = b"QUIT No data transmitted for more than 12 hours !\n"


def setting(name: str, value: str) -> bytes:
    """`S S <name> <value>`: a setting the device must apply (or asked for)."""
    return _line("S S", name, value)


def command(number: int, text: str) -> bytes:
    """`C <n> <text>`: a command; `number` is this connection's short number for it."""
    return _line("C", str(number), text)


def ack_request(counter: int) -> bytes:
    """`A <counter>`: is the link still alive? The device answers `B <counter>`."""
    return _line("A", str(counter))


def ack_answer(token: str) -> bytes:
    """`B <token>`: the answer to a device's `A <token>`."""
    return _line("B", token)


def current_time(unix_seconds: int) -> bytes:
    """`T <unix seconds>`: the answer to `T`."""
    return _line("T", str(unix_seconds))


def firmware_size(size: int) -> bytes:
    """`F S <bytes>`: the size of the selected firmware file."""
    return _line("F S", str(size))


def firmware_chunk(offset: int, chunk: bytes) -> bytes:
    """`F G <offset> <hex>`: a part of the selected firmware file, read at `offset`."""
    return _line("F G", str(offset), chunk.hex())


def debug_device_id(device_id: str) -> bytes:
    """`DB ID <device id>`."""
    return _line("DB ID", device_id)


def debug_source(address: str, connection_id: int) -> bytes:
    """`DB SOURCE <address> <connection id>`: where the server sees the device from."""
    return _line("DB SOURCE", address, str(connection_id))


def debug_connected(seconds: int) -> bytes:
    """`DB CONNECTED <seconds>`: how long the connection has been open."""
    return _line("DB CONNECTED", str(seconds))


def debug_version(version: str) -> bytes:
    """`DB VERSION <version>`: the server's version."""
    return _line("DB VERSION", version)


def debug_log_level(level: int) -> bytes:
    """`DB LOGLEVEL <n>`: the connection's log level, after any change."""
    return _line("DB LOGLEVEL", str(level))


def last_record(time: datetime, record_type: str, data: str) -> bytes:
    """One record listed between `BEGIN LAST` and `END`: `<ISO time> <type> <data>`."""
    return _line(time.isoformat(), record_type, data)


def quit_notice(reason: str) -> bytes:
    """`QUIT <reason>`: the server is about to close the connection."""
    return _line("QUIT", reason)


def error(reason: str) -> bytes:
    """`ERR <reason>`: the last line was refused; the connection stays open."""
    return _line("ERR", reason)


def echo(content: str) -> bytes:
    """`D echo <content>`: the answer to `D echo <content>`."""
    return _line("D echo", content)


def _line(*fields: str) -> bytes:
    text = " ".join(fields)
    if "\n" in text:
        raise ValueError(f"An ALIP line cannot contain a newline: {text!r}")
    return f"{text}\n".encode()
