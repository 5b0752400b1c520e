"""Live events for the browsers: what the bus says, turned into Server-Sent Events.

The web service reads ``events``, ``storage`` and ``receivers`` on channels of its own
(:data:`LIVE_TOPICS`), so it never slows the workers that read them too. Each message
becomes at most one :class:`LiveEvent`, offered to every open stream that may see it (an
admin's, or one of the device's domain) and wants it (its device or domain filter).

Never late, never blocking: a message older than ``web.live_lag_limit`` when read is
skipped, and a stream that has ``QUEUE_LIMIT`` events waiting drops the newer ones; both
are counted and the streams told (a ``skipped`` event), so the page catches up from the
API instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.cassandra import Database
from m2m.registry.device import Device
from m2m.registry.device_series import device_of_series
from m2m.text import utc_text
from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.timeuuids import time_of
from m2m.web.auth import Principal
from m2m.web.liveness import ReceiverLiveness

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
"""Events one stream holds for a browser that reads slowly; more are skipped."""
KEEPALIVE = 15.0
"""Seconds of silence after which a stream sends a comment, so proxies keep it open."""
DOMAINS_CACHED = 100_000
DOMAIN_CACHE_SECONDS = 60.0
"""A device moved to another domain shows in its old domain's streams this long at most."""

_CONNECTION_EVENTS = {
    topics.DEVICE_IDENTIFIED: "connected",
    topics.DEVICE_DISCONNECTED: "disconnected",
}
_DEVICE_EVENTS = {
    topics.SETTING_ACKED: "setting_acked",
    topics.COMMAND_ANSWERED: "command_answered",
    topics.STATUS_CHANGED: "status",
}
_CONTROL_EVENTS = {
    topics.SEND_SETTINGS: "settings_changed",
    topics.SEND_COMMANDS: "commands_changed",
}


@dataclass(frozen=True)
class LiveEvent:
    kind: str
    device_id: str | None
    domain_id: str | None
    data: dict[str, Any]

    def sse(self) -> str:
        payload = {"device_id": self.device_id, **self.data} if self.device_id else self.data
        return f"event: {self.kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


@dataclass(eq=False)
class Subscription:
    """One open stream: its filters and the events waiting for the browser."""

    principal: Principal
    device_id: str | None = None
    domain_id: str | None = None
    skipped: int = 0
    closed: bool = False
    _queue: deque[LiveEvent] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, event: LiveEvent) -> bool:
        if event.device_id is None:
            return True
        if not self.principal.sees(event.domain_id):
            return False
        if self.device_id is not None and event.device_id != self.device_id:
            return False
        return self.domain_id is None or event.domain_id == self.domain_id

    def offer(self, event: LiveEvent) -> bool:
        """Queue ``event`` for the browser; False (and counted) if the queue is full."""
        if len(self._queue) >= QUEUE_LIMIT:
            self.skip()
            return False
        self._queue.append(event)
        self._ready.set()
        return True

    def skip(self, count: int = 1) -> None:
        self.skipped += count
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def stream(self) -> AsyncIterator[str]:
        """The stream's text: events, ``skipped`` notices, and keep-alive comments."""
        yield "retry: 2000\n\n"
        while not self.closed:
            try:
                await asyncio.wait_for(self._ready.wait(), KEEPALIVE)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            self._ready.clear()
            if self.skipped:
                yield f"event: skipped\ndata: {json.dumps({'count': self.skipped})}\n\n"
                self.skipped = 0
            while self._queue:
                yield self._queue.popleft().sse()


class _DomainCache:
    """Device id → domain id, read from the registry on a miss, kept a minute."""

    def __init__(self, database: Database, clock: Callable[[], float]) -> None:
        self._database = database
        self._clock = clock
        self._known: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    async def domain_of(self, device_id: str) -> str | None:
        now = self._clock()
        found = self._known.get(device_id)
        if found is not None and now - found[1] < DOMAIN_CACHE_SECONDS:
            return found[0]
        domain_id = await Device(self._database, device_id).domain_id()
        self._known[device_id] = (domain_id, now)
        self._known.move_to_end(device_id)
        if len(self._known) > DOMAINS_CACHED:
            self._known.popitem(last=False)
        return domain_id


class LiveHub:
    def __init__(
        self,
        database: Database,
        liveness: ReceiverLiveness,
        lag_limit: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.liveness = liveness
        self.skipped_late = 0
        """Bus messages skipped because they were older than the lag limit when read."""
        self.skipped_slow = 0
        """Events not queued for a stream whose browser reads too slowly."""
        self._lag_limit = lag_limit
        self._clock = clock
        self._domains = _DomainCache(database, time.monotonic)
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, subscription: Subscription) -> None:
        self._subscriptions.add(subscription)

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    @property
    def streams(self) -> int:
        return len(self._subscriptions)

    # -- from the bus ------------------------------------------------------------------

    async def on_event(self, envelope: Envelope) -> None:
        """A message of ``events``: connections, heartbeats, acknowledgements."""
        fields = envelope.fields
        if envelope.call == topics.RECEIVER_ALIVE:
            # An old beat (read by a web service just restarted) proves nothing now.
            if self._clock() - envelope.time <= self._lag_limit:
                self.liveness.beat(str(fields.get("receiver")))
            return
        if self._late(envelope):
            return
        device_id = fields.get("device_id")
        if envelope.call in _CONNECTION_EVENTS and isinstance(device_id, str):
            data = {
                "source": fields.get("source"),
                "receiver": fields.get("receiver"),
                "since": utc_text_of(envelope.time),
            }
            await self._offer(_CONNECTION_EVENTS[envelope.call], device_id, data)
        elif envelope.call in _DEVICE_EVENTS and isinstance(device_id, str):
            data = {k: v for k, v in fields.items() if k not in ("device_id", "source", "host")}
            await self._offer(_DEVICE_EVENTS[envelope.call], device_id, data)

    async def on_record(self, envelope: Envelope) -> None:
        """A message of ``storage``: a device's new record."""
        if envelope.call != topics.STORE_TS:
            return
        device_id = device_of_series(str(envelope.fields.get("key", "")))
        if device_id is None or self._late(envelope):
            return
        fields = envelope.fields
        uuid_text = fields.get("date_uuid")
        data = {"type": fields.get("type"), "time": _record_time(fields), "uuid": uuid_text,
                "data": fields.get("data")}  # fmt: skip
        await self._offer("record", device_id, data)

    async def on_control(self, envelope: Envelope) -> None:
        """A message of ``receivers``: someone changed a device's settings or commands."""
        kind = _CONTROL_EVENTS.get(envelope.call)
        device_id = envelope.address.params.get("device_id")
        if kind is None or device_id is None or self._late(envelope):
            return
        await self._offer(kind, device_id, {})

    def sweep(self) -> None:
        """Tell every stream about receivers that stopped beating: their devices are gone."""
        for receiver in self.liveness.newly_lost():
            log.warning("receiver %s stopped beating: its devices are shown disconnected",
                        receiver)  # fmt: skip
            self._broadcast(LiveEvent("receiver_lost", None, None, {"receiver": receiver}))

    # -- helpers -----------------------------------------------------------------------

    def _late(self, envelope: Envelope) -> bool:
        if self._clock() - envelope.time <= self._lag_limit:
            return False
        self.skipped_late += 1
        for subscription in self._subscriptions:
            subscription.skip()
        return True

    async def _offer(self, kind: str, device_id: str, data: dict[str, Any]) -> None:
        if not self._subscriptions:
            return
        event = LiveEvent(kind, device_id, await self._domains.domain_of(device_id), data)
        self._broadcast(event)

    def _broadcast(self, event: LiveEvent) -> None:
        for subscription in self._subscriptions:
            if subscription.wants(event) and not subscription.offer(event):
                self.skipped_slow += 1


def utc_text_of(unix_seconds: float) -> str:
    return utc_text(datetime.fromtimestamp(unix_seconds, UTC))


def _record_time(fields: Mapping[str, Any]) -> str | None:
    """When a ``store_ts`` record is of: its time UUID's time, or its ``date_nano``."""
    uuid_text, nanoseconds = fields.get("date_uuid"), fields.get("date_nano")
    try:
        if isinstance(uuid_text, str):
            return utc_text(time_of(UUID(uuid_text)))
        if isinstance(nanoseconds, int):
            return utc_text_of(nanoseconds / 1e9)
    except (ValueError, TimeSeriesError):
        pass
    return None
