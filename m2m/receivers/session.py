"""A device's session, whatever protocol it speaks: identity, events, settings, commands.

M2MP and ALIP differ on the wire and agree on everything else, so that part lives here once.
The rules that need no I/O (identify first, timers, what to push when) are
:class:`~m2m.receivers.session_rules.SessionRules`; this is the I/O they need:
identification against the registry in one request (with the enrollment policy), the
``events`` of the connection's life and its ``_server`` records, pushing settings and
commands, acknowledgements, the records the device sends, and the control messages from
the bus. A protocol adapter owns the wire and implements :class:`DeviceLink`.

What the device sends is only published: it is safe once nsqd acknowledged it. When the
device asks whether it is (ALIP ``A``, M2MP ping), ``when_safe`` answers once everything
the connection published before is acknowledged (``receivers.ack: nsqd``), so a device
that resends what was not acknowledged when its connection drops loses nothing, whatever
process crashes. Records the device dates itself get a time UUID derived from what they
are, so such a resend overwrites them instead of adding a twin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from cryptography import x509

from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.config import LimitsConfig, TimingConfig
from m2m.logs import ConnectionLog
from m2m.metrics import ReceiverMetrics
from m2m.receivers.admission import Admission
from m2m.receivers.connections import Connections
from m2m.receivers.session_rules import Greeting, ProtocolRules, SessionRules
from m2m.registry.device import Device, Devices
from m2m.registry.device_series import check_device_record_type
from m2m.registry.device_views import SERVER_RECORD_TYPE
from m2m.registry.firmware import Firmwares
from m2m.registry.paths import InvalidPathError
from m2m.registry.routes import ChannelRouter
from m2m.timeseries import Record, TimeSeries
from m2m.timeseries.rules import encode_data
from m2m.timeseries.timeuuids import new_timeuuid, seeded_timeuuid
from m2m.tls import certificate_idents, fingerprint

log = logging.getLogger(__name__)

LAST_PAGE_SIZE = 10
"""Records ``last_records`` reads at once: held until the device read them (each up to a
line)."""


class DeviceLink(Protocol):
    """The wire side of a session: what the protocol adapter sends for it."""

    def send_settings(self, settings: Sequence[tuple[str, str]]) -> None: ...

    def send_commands(self, commands: Sequence[tuple[str, str]]) -> None:
        """Each command as (command id, text)."""

    def request_all_settings(self) -> None: ...

    def request_capabilities(self) -> None: ...

    def close(self, cause: str) -> None: ...

    def peer_certificate(self) -> x509.Certificate | None:
        """The device's TLS client certificate, if it presented one."""

    @property
    def metrics(self) -> ReceiverMetrics: ...


@dataclass(frozen=True)
class ReceiverContext:
    """What every connection of one receiver process shares."""

    publisher: Publisher
    devices: Devices
    timeseries: TimeSeries
    firmwares: Firmwares
    connections: Connections
    timing: TimingConfig
    limits: LimitsConfig
    admission: Admission
    enrollment: str
    ack: Literal["nsqd", "immediate"]
    address: str
    """This process's bus address (``receivers/<its channel>``): the ``_from`` of its messages."""
    host: str
    instance: str
    """This receiver process among all that ever ran: its events, ``_server`` records and
    heartbeats carry it as ``receiver``, so whoever sees it stop beating knows which
    devices it held."""


class DeviceSession:
    """A device's session: its :class:`SessionRules` decide, this does the I/O they need."""

    def __init__(
        self, context: ReceiverContext, link: DeviceLink, source: str, protocol: ProtocolRules
    ) -> None:
        self.context = context
        self.link = link
        self.source = source
        """The peer's address, ``ip:port``, as events and records name it."""
        self.connection_id = context.connections.next_id()
        self.log = ConnectionLog(log, self)
        self.connected_at = datetime.now(UTC)
        self.rules = SessionRules(protocol, context.timing, time.monotonic())
        self.device: Device | None = None
        self.router: ChannelRouter | None = None
        self._published = 0
        """The publisher's number of the last message this connection published."""
        self._dropped = False
        """A message of this connection was dropped (publish buffer full) since it opened."""

    @property
    def device_id(self) -> str | None:
        return self.device.id if self.device else None

    @property
    def sender(self) -> str:
        return f"{self.context.address};connection_id={self.connection_id}"

    # -- the connection's life ---------------------------------------------------------

    def opened(self) -> None:
        self.context.connections.opened(self)
        self._event(topics.DEVICE_CONNECTED)

    def closed(self) -> None:
        self.context.connections.closed(self)
        duration = int((datetime.now(UTC) - self.connected_at).total_seconds())
        self._event(topics.DEVICE_DISCONNECTED, connection_duration=duration)
        if self.device is not None:
            self._server_record("device_disconnected", connection_duration=duration)

    async def identify(self, ident: str) -> Greeting | None:
        """Find (or, when enrollment is open, create) the device: what to greet it with;
        None if refused."""
        enrollment = self.context.enrollment
        if enrollment == "certificate" and not self._certified(ident):
            return None
        try:
            state = await self.context.devices.identify(ident, enroll=enrollment != "registered")
        except InvalidPathError:
            self.log.info("refused unusable ident %r", ident)
            return None
        if state is None:
            self.log.info("unknown device %r refused", ident)
            return None
        self.device = state.device
        self.router = state.router(self.context.limits.routes_cached)
        self.context.connections.identified(self)
        self.link.metrics.identified.inc()
        self._event(topics.DEVICE_IDENTIFIED)
        self._server_record("device_identified")
        self._server_record("device_connected", at=self.connected_at)
        return self.rules.greet(
            state.settings, state.settings_to_send, state.commands, state.status, time.monotonic()
        )

    def _certified(self, ident: str) -> bool:
        """Whether the device's client certificate names ``ident`` (``enrollment:
        certificate``); a refusal is logged with the certificate's fingerprint."""
        certificate = self.link.peer_certificate()
        if certificate is None:
            self.log.warning("ident %r refused: no client certificate", ident)
            return False
        named = certificate_idents(certificate)
        if ident not in named:
            names = ", ".join(sorted(named)) or "none"
            self.log.warning("ident %r refused: certificate sha256:%s names %s", ident,
                             fingerprint(certificate), names)  # fmt: skip
            return False
        return True

    def greet(self, greeting: Greeting) -> None:
        """Send what a freshly identified device is sent: pending work, then questions."""
        if greeting.settings:
            self._push_settings(greeting.settings)
        if greeting.commands:
            self._push_commands(greeting.commands)
        if greeting.ask_capabilities:
            self.link.request_capabilities()
        if greeting.ask_all_settings:
            self.link.request_all_settings()

    # -- settings and commands ---------------------------------------------------------

    async def send_settings(self) -> None:
        """Push the pending settings, except those pushed here within the resend interval."""
        pending = await self._identified().settings_to_send()
        due = self.rules.settings_due(pending, time.monotonic())
        if due:
            self._push_settings(due)

    async def send_all_settings(self) -> None:
        settings = await self._identified().settings()
        self._push_settings(sorted(settings.items()))

    async def send_pending_settings(self) -> None:
        """Push every pending setting, whenever it was pushed before (the device asked)."""
        pending = await self._identified().settings_to_send()
        self._push_settings(sorted(pending.items()))

    async def setting(self, name: str) -> str:
        """The device's value of a setting ("" if it has none)."""
        return (await self._identified().settings()).get(name, "")

    async def define_setting(self, name: str, value: str) -> None:
        """Define a setting for the device, then have it pushed as the CLI would."""
        await self._identified().define_setting(name, value)
        self._ask_receivers(topics.SEND_SETTINGS)

    def _push_settings(self, settings: Sequence[tuple[str, str]]) -> None:
        self.link.send_settings(settings)
        self.link.metrics.settings_pushed.inc(len(settings))

    async def send_commands(self) -> None:
        """Push the pending commands this connection has not been sent yet."""
        new = self.rules.commands_new(await self._identified().commands())
        if new:
            self._push_commands(new)

    async def send_pending_commands(self) -> None:
        """Push every pending command, sent before or not (the device asked)."""
        self._push_commands(sorted((await self._identified().commands()).items()))

    async def add_command(self, text: str) -> None:
        """Add a command for the device, then have it pushed as the CLI would."""
        await self._identified().add_command(text)
        self._ask_receivers(topics.SEND_COMMANDS)

    def _ask_receivers(self, call: str) -> None:
        """Every receiver holding the device (this one too) pushes what is pending."""
        to = f"{topics.RECEIVERS};device_id={self._identified().id}"
        self.context.publisher.publish(Envelope.make(to, call, self.sender))

    def _push_commands(self, commands: Sequence[tuple[str, str]]) -> None:
        self.link.send_commands(commands)
        self.link.metrics.commands_pushed.inc(len(commands))

    async def ack_settings(self, settings: Sequence[tuple[str, str]]) -> None:
        device = self._identified()
        for name, value in settings:
            acknowledged = await device.ack_setting(name, value)
            if acknowledged:
                self.link.metrics.settings_acknowledged.inc()
            self._event(topics.SETTING_ACKED, name=name, value=value, acknowledged=acknowledged)

    async def forget_settings(self, names: Sequence[str]) -> None:
        device = self._identified()
        for name in names:
            await device.delete_setting(name)

    async def ack_command(self, command_id: str, response: str | None) -> None:
        await self._identified().ack_command(command_id, response)
        self.link.metrics.commands_acknowledged.inc()
        self._event(topics.COMMAND_ANSWERED, command_id=command_id, response=response)

    async def set_status(self, values: dict[str, str]) -> None:
        await self._identified().set_status(values)
        self._event(topics.STATUS_CHANGED, status=values)

    # -- what the device sends ---------------------------------------------------------

    def store(self, record_type: str, data: Any, at: datetime | None = None) -> None:
        """A record of this device, to the storage worker; its time UUID decided now.

        A record of now gets a fresh UUID. One the device dated (``at``) gets the UUID
        derived from the device, type, time and data: sent again, it is the same record.
        """
        device = self._identified()
        if at is None:
            record_uuid = new_timeuuid(datetime.now(UTC))
        else:
            identity = "\0".join((device.id, record_type, encode_data(data)))
            record_uuid = seeded_timeuuid(at, identity.encode())
        self._publish(
            topics.STORAGE,
            topics.STORE_TS,
            key=device.series_id,
            type=record_type,
            date_uuid=str(record_uuid),
            data=data,
        )

    def forward(self, default_topic: str, call: str, channel: str, **fields: Any) -> None:
        """Channel data to the topic the device's routes choose, else ``default_topic``.

        Raises :class:`~m2m.errors.InvalidInput` for a channel no record can be stored
        under: nothing unusable is published.
        """
        check_device_record_type(channel)
        device = self._identified()
        router = self.router
        topic = (router.topic_for(channel) if router else None) or default_topic
        self._publish(
            topic,
            call,
            device_id=device.id,
            connection_id=str(self.connection_id),
            channel=channel,
            date_uuid=str(new_timeuuid(datetime.now(UTC))),
            **fields,
        )

    def last_records(self, count: int) -> AsyncGenerator[Record, None]:
        """The device's ``count`` newest records, newest first, read a page at a time."""
        return self.context.timeseries.records(
            self._identified().series_id, limit=count, page_size=LAST_PAGE_SIZE
        )

    def when_safe(self, answer: Callable[[], None]) -> Awaitable[None] | None:
        """``answer`` a device's acknowledgement request once what it sent before is safe.

        With ``receivers.ack: nsqd``, that is once nsqd acknowledged every message this
        connection published (None: it already has, and ``answer`` ran). A connection
        that had a message dropped is closed instead, unanswered: the device sends again
        what was not acknowledged. With ``immediate``, ``answer`` runs at once.
        """
        if self.context.ack == "immediate":
            answer()
            return None
        if self._dropped:
            self.log.warning("closed, a message of it was dropped")
            self.link.close("publish_dropped")
            return None
        pending = self.context.publisher.acknowledged(self._published)
        if pending is None:
            answer()
            return None
        return _after(pending, answer)

    # -- control from the bus ----------------------------------------------------------

    def disconnect(self) -> None:
        self.link.close("disconnect_requested")

    # -- helpers -----------------------------------------------------------------------

    def _identified(self) -> Device:
        if self.device is None:
            raise RuntimeError("the device has not identified")  # adapters check first
        return self.device

    def _event(self, call: str, **fields: Any) -> None:
        if self.device is not None:
            fields["device_id"] = self.device.id
        self._publish(
            topics.EVENTS,
            call,
            source=self.source,
            connection_id=str(self.connection_id),
            host=self.context.host,
            receiver=self.context.instance,
            **fields,
        )

    def _server_record(self, kind: str, at: datetime | None = None, **fields: Any) -> None:
        data = {
            "type": kind,
            "source": self.source,
            "connection_id": str(self.connection_id),
            "receiver": self.context.instance,
        }
        self.store(SERVER_RECORD_TYPE, {**data, **fields}, at=at)

    def _publish(self, topic: str, call: str, **fields: Any) -> None:
        publisher = self.context.publisher
        if publisher.publish(Envelope.make(topic, call, self.sender, **fields)):
            self._published = publisher.last_accepted
        else:
            self._dropped = True


async def _after(pending: Awaitable[None], answer: Callable[[], None]) -> None:
    await pending
    answer()
