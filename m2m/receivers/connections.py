"""The device connections this process holds, and the routing of control messages to them.

Every receiver process consumes the ``receivers`` topic on a channel of its own, so every
process sees every control message; each acts on the connections it holds and ignores the
rest. Messages are addressed ``receivers;device_id=<uuid>`` or
``receivers;connection_id=<n>`` (bus.md).

A receiver's channel outlives it, so one that restarts finds what was sent while it was
away: meant for connections that are gone (and whose connection ids are now other
devices'), it is skipped. A message counts as older than the process when its ``_time``
is more than ``STALE_AFTER`` seconds before the process started (``_time`` is in whole
seconds, from the sender's clock).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from typing import Protocol

from m2m.bus import topics
from m2m.bus.envelope import Envelope, InvalidMessage

log = logging.getLogger(__name__)

_CONTROL_CALLS = frozenset({topics.DISCONNECT, topics.SEND_SETTINGS, topics.SEND_COMMANDS})
STALE_AFTER = 1.0


class ControlledConnection(Protocol):
    """What a device connection does when the platform tells it to."""

    connection_id: int

    @property
    def device_id(self) -> str | None: ...

    def disconnect(self) -> None: ...

    async def send_settings(self) -> None: ...

    async def send_commands(self) -> None: ...


class Connections:
    def __init__(self) -> None:
        self.started_at = time.time()
        self.skipped_stale = 0
        self._ids = itertools.count(1)
        self._by_id: dict[int, ControlledConnection] = {}
        self._by_device: dict[str, dict[int, ControlledConnection]] = {}

    def next_id(self) -> int:
        """A connection id unique in this process, as the events and messages carry it."""
        return next(self._ids)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ControlledConnection]:
        return iter(list(self._by_id.values()))

    def opened(self, connection: ControlledConnection) -> None:
        self._by_id[connection.connection_id] = connection

    def identified(self, connection: ControlledConnection) -> None:
        if connection.device_id is not None:
            self._by_device.setdefault(connection.device_id, {})[connection.connection_id] = (
                connection
            )

    def closed(self, connection: ControlledConnection) -> None:
        self._by_id.pop(connection.connection_id, None)
        if connection.device_id is not None:
            of_device = self._by_device.get(connection.device_id, {})
            of_device.pop(connection.connection_id, None)
            if not of_device:
                self._by_device.pop(connection.device_id, None)

    def addressed(self, envelope: Envelope) -> list[ControlledConnection]:
        """The connections of this process a control message is for (often none)."""
        params = envelope.address.params
        if "connection_id" in params:
            try:
                connection = self._by_id.get(int(params["connection_id"]))
            except ValueError:
                raise InvalidMessage(f"bad connection_id in {envelope.to!r}") from None
            return [connection] if connection is not None else []
        if "device_id" in params:
            return list(self._by_device.get(params["device_id"], {}).values())
        raise InvalidMessage(f"control message {envelope.to!r} names no device or connection")

    async def control(self, envelope: Envelope) -> None:
        """Carry out a ``receivers`` message on the connections it addresses."""
        if envelope.call not in _CONTROL_CALLS:
            raise InvalidMessage(f"unknown control call {envelope.call!r}")
        if envelope.time < self.started_at - STALE_AFTER:
            self.skipped_stale += 1
            log.info("%s for %s skipped: sent before this receiver started", envelope.call,
                     envelope.to)  # fmt: skip
            return
        targets = self.addressed(envelope)
        for connection in targets:
            if envelope.call == topics.DISCONNECT:
                connection.disconnect()
            elif connection.device_id is None:
                # Nothing is pending for a device that has not said who it is yet; what is
                # will be pushed when it does. Failing instead would requeue the message,
                # and back this process's control consumer off, for as long as it waits.
                continue
            elif envelope.call == topics.SEND_SETTINGS:
                await connection.send_settings()
            else:
                await connection.send_commands()
        if targets:
            log.info("%s for %s: %d connection(s)", envelope.call, envelope.to, len(targets))
