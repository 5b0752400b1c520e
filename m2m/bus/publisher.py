"""Publishing to NSQ without blocking, without losing what was accepted.

``publish`` never waits: a message joins its topic's queue in this process, and one batch
per topic is out to nsqd at a time — a single PUB when one message waits, an MPUB of up to
``max_batch`` when more do, so batches grow exactly when load does. A batch leaves
``linger`` seconds after its first message was queued (at once when ``max_batch`` wait):
each write to nsqd costs a system call that, on loopback, also delivers to nsqd, so a
couple of milliseconds of latency buy batches instead of one write per message. A
message leaves the queue only once nsqd acknowledged it; a failed batch goes back to the
front and is retried.

When nsqd cannot take messages the queues grow. Past ``high_water`` buffered messages the
publisher tells its pressure listeners to stop reading from devices (back-pressure), and
tells them to resume below half of it. ``capacity`` is the hard bound: a message beyond it
is dropped, counted and logged — the only way this publisher ever drops anything.

Receivers ``publish`` and move on; workers ``deliver`` and wait for nsqd's acknowledgement
of that very message before they finish the message it came from.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import nsq

from m2m.bus.envelope import Envelope
from m2m.config import NsqConfig

log = logging.getLogger(__name__)

PressureListener = Callable[[bool], None]
"""Called with True when readers should pause, False when they may resume."""


class PublishDropped(Exception):
    """The publish buffer was full: the message was not accepted."""


@dataclass(slots=True)
class _Queued:
    body: bytes
    acknowledged: asyncio.Future[None] | None


@dataclass
class PublisherStats:
    accepted: int = 0
    published: int = 0
    dropped: int = 0
    failed_batches: int = 0


class Publisher:
    def __init__(
        self,
        config: NsqConfig,
        *,
        high_water: int = 10_000,
        capacity: int = 100_000,
        max_batch: int = 256,
        linger: float = 0.002,
        retry_delay: float = 0.5,
        reconnect_interval: float = 1.0,
    ) -> None:
        if not 0 < high_water <= capacity:
            raise ValueError("need 0 < high_water <= capacity")
        self._addresses = list(config.nsqd_tcp_addresses)
        self._topic_prefix = config.topic_prefix
        self._high_water = high_water
        self._low_water = high_water // 2
        self._capacity = capacity
        self._max_batch = max_batch
        self._linger = linger
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._retry_delay = retry_delay
        self._reconnect_interval = reconnect_interval
        self._writer: nsq.Writer | None = None
        self._queues: dict[str, deque[_Queued]] = {}
        self._busy: set[str] = set()
        """Topics with a batch out to nsqd, or waiting to retry one."""
        self._buffered = 0
        self._paused = False
        self._listeners: list[PressureListener] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.stats = PublisherStats()

    def start(self) -> None:
        """Connect to nsqd; call with the asyncio loop running (pynsq binds to it)."""
        self._writer = nsq.Writer(self._addresses, reconnect_interval=self._reconnect_interval)
        for topic in self._queues:  # what was queued before the start
            asyncio.get_running_loop().call_later(self._retry_delay, self._retry, topic)

    def close(self) -> None:
        if self._writer is not None:
            for conn in list(self._writer.conns.values()):
                conn.close()
            self._writer = None

    @property
    def buffered(self) -> int:
        """Messages accepted and not yet acknowledged by nsqd."""
        return self._buffered

    @property
    def saturated(self) -> bool:
        return self._paused

    def add_pressure_listener(self, listener: PressureListener) -> None:
        self._listeners.append(listener)

    def remove_pressure_listener(self, listener: PressureListener) -> None:
        self._listeners.remove(listener)

    def publish(self, envelope: Envelope) -> bool:
        """Queue a message for its topic; False if it had to be dropped (at capacity)."""
        return self.publish_body(envelope.topic, envelope.to_json())

    def publish_body(self, topic: str, body: bytes) -> bool:
        return self._enqueue(topic, _Queued(body, None))

    async def deliver(self, envelope: Envelope) -> None:
        """Publish and wait until nsqd acknowledged this message; PublishDropped if full."""
        acknowledged = asyncio.get_running_loop().create_future()
        if not self._enqueue(envelope.topic, _Queued(envelope.to_json(), acknowledged)):
            raise PublishDropped(f"publish buffer full ({self._capacity} messages)")
        await acknowledged

    def _enqueue(self, topic: str, queued: _Queued) -> bool:
        if self._buffered >= self._capacity:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                log.error(
                    "NSQ publish buffer full (%d messages): dropped %d message(s) so far",
                    self._capacity,
                    self.stats.dropped,
                )
            return False
        self.stats.accepted += 1
        self._buffered += 1
        self._queues.setdefault(topic, deque()).append(queued)
        if not self._paused and self._buffered >= self._high_water:
            self._set_pressure(True)
        self._send_next(topic)
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait until nsqd acknowledged everything accepted; False on timeout."""
        if self._buffered == 0:
            return True
        drained = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(drained)
        try:
            await asyncio.wait_for(asyncio.shield(drained), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if drained in self._drain_waiters:
                self._drain_waiters.remove(drained)

    def _send_next(self, topic: str) -> None:
        """Send the next batch: at once if full, else once the first has lingered."""
        queue = self._queues[topic]
        if topic in self._busy or not queue or self._writer is None:
            return
        if len(queue) < self._max_batch:
            if topic not in self._lingering:
                self._lingering[topic] = asyncio.get_running_loop().call_later(
                    self._linger, self._send_lingered, topic
                )
            return
        self._send_batch(topic)

    def _send_lingered(self, topic: str) -> None:
        del self._lingering[topic]
        if topic not in self._busy and self._queues[topic] and self._writer is not None:
            self._send_batch(topic)

    def _send_batch(self, topic: str) -> None:
        assert self._writer is not None
        queue = self._queues[topic]
        lingering = self._lingering.pop(topic, None)
        if lingering is not None:
            lingering.cancel()
        batch = [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]
        self._busy.add(topic)
        settled = False

        def done(conn: object, response: object) -> None:
            # pynsq can report one send twice: a send that fails on a connection closing
            # under it calls back at once, and again when the closed connection calls
            # back everything still queued on it. Only the first report counts, or the
            # batch would be requeued (and published) twice.
            nonlocal settled
            if not settled:
                settled = True
                self._on_sent(topic, batch, conn, response)

        nsq_topic = self._topic_prefix + topic
        if len(batch) == 1:
            self._writer.pub(nsq_topic, batch[0].body, callback=done)
        else:
            self._writer.mpub(nsq_topic, [queued.body for queued in batch], callback=done)

    def _on_sent(self, topic: str, batch: list[_Queued], _conn: object, response: object) -> None:
        if isinstance(response, nsq.Error):
            self.stats.failed_batches += 1
            if self.stats.failed_batches == 1 or self.stats.failed_batches % 100 == 0:
                log.warning(
                    "NSQ refused a batch of %d for %r (%s); %d message(s) kept for retry",
                    len(batch),
                    topic,
                    response,
                    self._buffered,
                )
            self._queues[topic].extendleft(reversed(batch))
            asyncio.get_running_loop().call_later(self._retry_delay, self._retry, topic)
            return
        self._busy.discard(topic)
        self._buffered -= len(batch)
        self.stats.published += len(batch)
        for queued in batch:
            if queued.acknowledged is not None and not queued.acknowledged.done():
                queued.acknowledged.set_result(None)
        if self._paused and self._buffered <= self._low_water:
            self._set_pressure(False)
        if self._buffered == 0:
            for waiter in self._drain_waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._send_next(topic)

    def _retry(self, topic: str) -> None:
        self._busy.discard(topic)
        self._send_next(topic)

    def _set_pressure(self, paused: bool) -> None:
        self._paused = paused
        log.warning(
            "NSQ publish buffer at %d: %s reading from devices",
            self._buffered,
            "pausing" if paused else "resuming",
        )
        for listener in list(self._listeners):
            listener(paused)
