"""Records up: every record stored at the edge, forwarded to the cloud's ``storage`` topic.

The edge's ``storage`` topic has a channel of the sync service's own (``sync``), beside the
storage worker's: nsqd keeps a copy of every record there, on disk, until the forwarder
finished it, which it does only once the cloud's nsqd acknowledged the record. While the
uplink is down the records wait in that channel (an outage, to the consumer: the messages
in hand are tried again, the rest stay queued), across restarts of any process, and go up
oldest first when it is back, at most ``sync.catch_up_rate`` a second. A record's UUID
travels in its message (decided where it was born), so the cloud stores each once,
however often it is sent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.errors import Unavailable
from m2m.workers.storage import StoreRequest

FORWARD_TIMEOUT = 10.0
"""Seconds the cloud's nsqd has to acknowledge a record; then it is tried again."""


class UplinkDown(Unavailable):
    """The cloud's nsqd cannot be reached: the record stays in the edge's queue."""


@dataclass
class Pace:
    """At most ``rate`` calls of :meth:`wait` return a second, evenly spaced."""

    rate: float
    _next: float = 0.0

    async def wait(self) -> None:
        delay = self.delay(time.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)

    def delay(self, now: float) -> float:
        """How long a call made at ``now`` waits for its turn (and takes it)."""
        slot = max(now, self._next)
        self._next = slot + 1 / self.rate
        return slot - now


@dataclass
class RecordForwarder:
    upstream: Publisher
    """Publishes to the cloud's nsqd (``sync.upstream``)."""
    pace: Pace
    forwarded: int = 0
    _waiting: dict[int, float] = field(default_factory=dict)
    """The records in hand, not yet forwarded (by id of their envelope, which the consumer
    hands over again for each attempt): when each was published."""

    async def handle(self, envelope: Envelope) -> None:
        StoreRequest.of(envelope)  # what the cloud's storage would refuse is not sent up
        key = id(envelope)
        self._waiting.setdefault(key, envelope.time)
        try:
            if not self.upstream.connected:
                raise UplinkDown("the cloud's nsqd is not connected")
            await self.pace.wait()
            await self.upstream.deliver(envelope, topic=topics.STORAGE, timeout=FORWARD_TIMEOUT)
        except Unavailable:
            raise  # still in hand: the consumer tries again
        except BaseException:
            del self._waiting[key]
            raise
        del self._waiting[key]
        self.forwarded += 1

    @property
    def oldest_waiting(self) -> float | None:
        """When the oldest record in hand, unsent, was published, if any."""
        return min(self._waiting.values(), default=None)
