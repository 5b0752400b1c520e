"""The ALIP receiver: a thin Twisted adapter between the line parser and the device session.

Each line is parsed (sans-IO) into a command and handled as one step of the connection's
:class:`InOrder` runner, so answers come in the order of the questions even when one has
to wait for Cassandra (or, for ``A <x>``, for nsqd to acknowledge what came before). Every
mistake is an :class:`~m2m.errors.InvalidInput` (the parser's :class:`AlipError`, a
store's refusal), raised wherever it is found and answered ``ERR <reason>`` by the step
runner; the connection stays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Sequence
from contextlib import aclosing
from datetime import datetime
from functools import partial

from m2m import __version__
from m2m.errors import InvalidInput, Unavailable
from m2m.metrics import ReceiverMetrics
from m2m.receivers.alip import lines
from m2m.receivers.alip.command_numbers import CommandNumbers
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
    JsonValue,
    Quit,
    SettingAck,
    SettingGet,
    SettingReport,
    SettingsGetAll,
    SettingsGetPending,
    SettingUnknown,
    Time,
    allowed_before_identification,
    only_answered,
    parse_command,
)
from m2m.receivers.alip.firmware_download import FirmwareDownload
from m2m.receivers.alip.framing import OVERLONG, LineSplitter
from m2m.receivers.alip.processors import Echo, process_data
from m2m.receivers.server import DeviceProtocol
from m2m.receivers.session_rules import ProtocolRules, Verdict
from m2m.timeseries import TimeSeriesError

DEFAULT_LOG_LEVEL = 5
_FAREWELLS = {
    "identification_timeout": lines.QUIT_IDENTIFICATION_TIMEOUT,
    "silent": lines.QUIT_NO_DATA,
}
"""The line a device closed by the session's timers is told why."""


def _refuse_overlong_line() -> None:
    raise AlipError("Line too long")


class ALIPProtocol(DeviceProtocol):
    metrics = ReceiverMetrics("alip")
    rules = ProtocolRules(closes_unidentified=False, closes_when_silent=True,
                          ping_counter_modulo=None)  # fmt: skip

    def connectionMade(self) -> None:
        self._lines = LineSplitter()
        self._command_numbers = CommandNumbers(self.factory.context.limits.command_numbers)
        self._log_level = DEFAULT_LOG_LEVEL
        super().connectionMade()
        self._firmware = FirmwareDownload(self.factory.context.firmwares, self.log)

    def feed(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            if line is OVERLONG:
                # A step too, so its ERR comes after the answers to the lines before it,
                # even those still waiting for Cassandra.
                self.steps.submit(_refuse_overlong_line)
            else:
                self.steps.submit(partial(self._line, line), len(line))

    def _line(self, line: bytes) -> Awaitable[None] | None:
        command = parse_command(line)
        self.metrics.received(command)
        if self.gone and only_answered(command):
            return None  # the device left: nobody to answer
        needs_identity = not allowed_before_identification(command)
        if self.session.rules.arrived(needs_identity) is not Verdict.HANDLE:
            raise AlipError("You need to identify first !")
        return self._handle(command)

    def _handle(self, command: Command) -> Awaitable[None] | None:
        session = self.session
        match command:
            case Identify(ident=ident):
                return self._identify(ident)
            case Data(type=device_type, content=content):
                self._store(device_type, content, None)
            case DataAt(time=moment, type=device_type, content=content):
                self._store(device_type, content, moment)
            case JsonAt(time=moment, type=record_type, value=value):
                self._store_record(record_type, value, moment)
            case SettingAck(name=name, value=value) | SettingReport(name=name, value=value):
                return session.ack_settings([(name, value)])
            case SettingsGetAll():
                return session.send_all_settings()
            case SettingsGetPending():
                return session.send_pending_settings()
            case SettingGet(name=name):
                return self._send_setting(name)
            case SettingUnknown(name=name):
                return session.forget_settings([name])
            case CommandAck(n=number):
                return self._ack_command(number)
            case CommandsList():
                return session.send_pending_commands()
            case AckRequest(x=token):
                return session.when_safe(partial(self.write, lines.ack_answer(token)))
            case AckAnswer():
                pass  # the device is alive: that was the point
            case Time():
                self.write(lines.current_time(int(time.time())))
            case FirmwareSelect(name=name):
                return self._select_firmware(name)
            case FirmwareSize():
                self.write(lines.firmware_size(self._firmware.size))
            case FirmwareGet(offset=offset, size=size):
                return self._firmware_chunk(offset, size)
            case DebugId():
                self.write(lines.debug_device_id(self._device_id()))
            case DebugSource():
                self.write(lines.debug_source(session.source, session.connection_id))
            case DebugConnected():
                connected = int(time.monotonic() - session.rules.connected_at)
                self.write(lines.debug_connected(connected))
            case DebugVersion():
                self.write(lines.debug_version(__version__))
            case DebugSetSetting(name=name, value=value):
                return self._answered(session.define_setting(name, value),
                                      lines.DEBUG_SET_SETTING_OK)  # fmt: skip
            case DebugAddCommand(text=text):
                return self._answered(session.add_command(text), lines.DEBUG_ADD_COMMAND_OK)
            case DebugLast(count=count):
                return self._debug_last(count)
            case DebugLogLevel(level=level):
                if level is not None:
                    self._log_level = level
                self.write(lines.debug_log_level(self._log_level))
            case Quit():
                self.write(lines.QUIT_BYE)
                self.close("quit")
        return None

    # -- identification ----------------------------------------------------------------

    async def _identify(self, ident: str) -> None:
        if self.session.device is not None:
            raise AlipError("You already identified !")
        await self.identify(ident)

    def answer_identification(self, accepted: bool) -> None:
        self.write(lines.IDENT_ACCEPTED if accepted else lines.IDENT_REFUSED)

    def _device_id(self) -> str:
        device_id = self.session.device_id
        if device_id is None:
            raise AlipError("Not identified !")
        return device_id

    # -- data --------------------------------------------------------------------------

    def _store(self, device_type: str, content: str, moment: datetime | None) -> None:
        processed = process_data(device_type, content)
        if isinstance(processed, Echo):
            self.write(lines.echo(processed.content))
            return
        self._store_record(processed.type, processed.value, processed.time or moment)

    def _store_record(self, record_type: str, value: JsonValue, moment: datetime | None) -> None:
        try:
            self.session.store(record_type, value, at=moment)
        except TimeSeriesError as exc:
            # A device time no time UUID can carry (before 1582, after 5236): the
            # device's mistake, not ours, so it gets a real reason.
            raise AlipError(f"Invalid time: {exc}") from None

    # -- settings and commands ---------------------------------------------------------

    async def _send_setting(self, name: str) -> None:
        value = await self.session.setting(name)
        line = self._setting_line(name, value)
        if line is None:
            raise AlipError(f'Setting "{name}" cannot be sent: its value spans lines')
        self.write(line)

    async def _ack_command(self, number: int) -> None:
        command_id = self._command_numbers.acknowledged(number)
        if command_id is None:
            raise AlipError(f"Unknown command number {number}")
        await self.session.ack_command(command_id, None)

    async def _answered(self, done: Awaitable[None], answer: bytes) -> None:
        await done
        self.write(answer)

    async def _select_firmware(self, name: str) -> None:
        found = await self._firmware.select(name)
        self.write(lines.FIRMWARE_FOUND if found else lines.FIRMWARE_NOT_FOUND)

    async def _firmware_chunk(self, offset: int, size: int) -> None:
        self.write(lines.firmware_chunk(offset, await self._firmware.chunk(offset, size)))

    async def _debug_last(self, count: int) -> None:
        self.write(lines.LAST_BEGIN)
        if count > 0:
            records = self.session.last_records(count)
            async with aclosing(records):
                async for record in records:
                    await self.drained()  # records can be large: as fast as the device reads
                    if self.gone:
                        break
                    line = lines.last_record(record.time, record.type, json.dumps(record.data))
                    self.write(line)
        self.write(lines.LAST_END)

    # -- lines to the device (the session's DeviceLink) --------------------------------

    def send_settings(self, settings: Sequence[tuple[str, str]]) -> None:
        for name, value in settings:
            line = self._setting_line(name, value)
            if line is not None:
                self.write(line)

    def _setting_line(self, name: str, value: str) -> bytes | None:
        """The ``S S`` line of a setting; None (logged) for a value with a newline.

        Such a value cannot travel on one line. Skipping it, rather than failing, keeps one
        bad value from holding back the other settings and the commands pushed after them.
        """
        try:
            return lines.setting(name, value)
        except ValueError:
            self.log.warning("setting %r not sent: its value has a newline", name)
            return None

    def send_commands(self, commands: Sequence[tuple[str, str]]) -> None:
        for command_id, text in commands:
            number = self._command_numbers.number(command_id)
            self.write(lines.command(number, text.replace("\n", " ")))

    def request_all_settings(self) -> None:
        self.write(lines.SETTINGS_REQUEST_ALL)

    def request_capabilities(self) -> None:
        """ALIP has no capability question."""

    def _step_failed(self, exc: BaseException) -> None:
        """A command refused (its ``ERR`` answer), or failed on our side (logged)."""
        if isinstance(exc, InvalidInput):
            self.metrics.decode_errors.inc()
            self.write(lines.error(str(exc)))
        elif isinstance(exc, Unavailable):
            self.log.warning("%s", exc)
            self.write(lines.error("Service unavailable, try again later"))
        else:
            super()._step_failed(exc)
            self.write(lines.error("Internal error, try again later"))

    # -- timers ------------------------------------------------------------------------

    def ping(self, counter: int) -> None:
        self.write(lines.ack_request(counter))

    def farewell(self, cause: str) -> None:
        farewell = _FAREWELLS.get(cause)
        if farewell is not None:
            self.write(farewell)
