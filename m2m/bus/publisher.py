"""Publishing to NSQ without blocking, without losing what was accepted.

``publish`` never waits: a message joins its topic's queue in this process, and one batch
per topic is out to nsqd at a time — a single PUB when one message waits, an MPUB of up to
``max_batch`` when more do, so batches grow exactly when load does. A batch leaves
``linger`` seconds after its first message was queued (at once when ``max_batch`` wait):
each write to nsqd costs a system call that, on loopback, also delivers to nsqd, so a
couple of milliseconds of latency buy batches instead of one write per message. A
message leaves the queue only once nsqd acknowledged it; a failed batch goes back to the
front and is retried.

A message larger than ``nsq.max_message_bytes`` (nsqd's ``--max-msg-size``) is refused
where it is published (:class:`MessageTooLarge`); a batch holds at most
``MAX_BATCH_BYTES``, below nsqd's default ``--max-body-size``. If nsqd refuses a message
anyway (its limits set lower than ours), it is sent alone and, refused again, dropped and
logged: retried, it would hold back everything after it for ever.

When nsqd cannot take messages the queues grow. Past ``high_water`` buffered messages the
publisher tells its pressure listeners to stop reading from devices (back-pressure), and
tells them to resume below half of it. ``capacity`` is the hard bound: a message beyond it
is dropped, counted and logged — the only way this publisher ever drops anything.

Receivers ``publish`` and move on; workers ``deliver`` and wait for nsqd's acknowledgement
of that very message before they finish the message it came from.

Accepted messages are numbered in order (``last_accepted``), so a receiver can keep a
promise to a device about all it sent at once: ``acknowledged(n)`` tells when nsqd has
acknowledged every message up to number ``n``, whatever their topics.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import nsq

from m2m.bus.envelope import Envelope
from m2m.config import NsqConfig
from m2m.errors import InvalidInput, Unavailable
from m2m.metrics import PUBLISH_LATENCY
from m2m.tls_client import pynsq_tls

log = logging.getLogger(__name__)

PressureListener = Callable[[bool], None]
"""Called with True when readers should pause, False when they may resume."""


class PublishDropped(Unavailable):
    """The publish buffer was full: the message was not accepted."""


class PublishTimeout(Unavailable):
    """nsqd did not acknowledge a delivery in time (the message may still go later)."""


class MessageTooLarge(InvalidInput):
    """A message nsqd would refuse for its size: it is not accepted."""


class MessageRefused(InvalidInput):
    """nsqd refused a message for good (its size, its topic): it was dropped."""


DEADLINE_SWEEP = 1.0
"""Seconds between two looks for deliveries past their timeout."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""The bodies of one MPUB at most: below nsqd's default ``--max-body-size`` (5 MiB)."""
_REFUSED_FOR_GOOD = (b"E_BAD_MESSAGE", b"E_BAD_BODY", b"E_BAD_TOPIC")
"""nsqd's errors for a message or topic it will never take."""


@dataclass(slots=True)
class _Queued:
    body: bytes
    number: int
    """Its place in the order messages were accepted (see ``acknowledged``)."""
    acknowledged: asyncio.Future[None] | None
    accepted_at: float
    """``time.monotonic()`` when it was accepted."""


@dataclass
class PublisherStats:
    accepted: int = 0
    published: int = 0
    dropped: int = 0
    refused: int = 0
    """Messages nsqd refused for good (and dropped), after they were accepted."""
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
        self._tls = pynsq_tls(config)
        self._topic_prefix = config.topic_prefix
        self._max_message_bytes = config.max_message_bytes
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
        self._sending: dict[str, list[_Queued]] = {}
        """The batch out to nsqd, per topic."""
        self._alone: dict[str, int] = {}
        """Per topic, how many messages go one at a time (after nsqd refused their batch)."""
        self._deadlines: dict[asyncio.Future[None], float] = {}
        """Deliveries waiting for nsqd, and the loop time they give up at."""
        self._sweeping: asyncio.TimerHandle | None = None
        self._last_accepted = 0
        self._barriers: list[tuple[int, int, asyncio.Future[None]]] = []
        """(message number, tie-breaker, future): a heap, the lowest number first."""
        self._buffered = 0
        self._paused = False
        self._listeners: list[PressureListener] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.stats = PublisherStats()

    def start(self) -> None:
        """Connect to nsqd; call with the asyncio loop running (pynsq binds to it)."""
        self._writer = nsq.Writer(
            self._addresses, reconnect_interval=self._reconnect_interval, **self._tls
        )
        for topic in self._queues:  # what was queued before the start
            asyncio.get_running_loop().call_later(self._retry_delay, self._retry, topic)

    def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        if self._writer is not None:
            for conn in list(self._writer.conns.values()):
                conn.close()
            self._writer = None

    @property
    def buffered(self) -> int:
        """Messages accepted and not yet acknowledged by nsqd."""
        return self._buffered

    @property
    def connected(self) -> bool:
        """Whether a connection to an nsqd is up (publishing can proceed)."""
        writer = self._writer
        return writer is not None and any(conn.connected() for conn in writer.conns.values())

    @property
    def in_flight(self) -> int:
        """Messages in a PUB or MPUB out to nsqd."""
        return sum(len(batch) for batch in self._sending.values())

    @property
    def saturated(self) -> bool:
        return self._paused

    @property
    def last_accepted(self) -> int:
        """The number of the latest message accepted (0 before the first)."""
        return self._last_accepted

    def acknowledged(self, number: int) -> asyncio.Future[None] | None:
        """None if nsqd acknowledged every message accepted up to ``number``, else a future
        that is done once it has."""
        if number < self._first_unacknowledged():
            return None
        barrier: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._barriers, (number, id(barrier), barrier))
        return barrier

    def _first_unacknowledged(self) -> int:
        """The lowest number of an accepted message nsqd has not acknowledged (or the next).

        Each topic's messages leave in order, one batch at a time, so its lowest is the
        head of the batch out or, if none is out, of its queue.
        """
        lowest = self._last_accepted + 1
        for topic, queue in self._queues.items():
            sending = self._sending.get(topic)
            head = sending[0] if sending else (queue[0] if queue else None)
            if head is not None and head.number < lowest:
                lowest = head.number
        return lowest

    def _release_barriers(self) -> None:
        lowest = self._first_unacknowledged()
        barriers = self._barriers
        while barriers and barriers[0][0] < lowest:
            _, _, barrier = heapq.heappop(barriers)
            if not barrier.done():
                barrier.set_result(None)

    def add_pressure_listener(self, listener: PressureListener) -> None:
        self._listeners.append(listener)

    def remove_pressure_listener(self, listener: PressureListener) -> None:
        self._listeners.remove(listener)

    def publish(self, envelope: Envelope) -> bool:
        """Queue a message for its topic; False if it had to be dropped (at capacity).

        Raises :class:`MessageTooLarge` for a message above ``nsq.max_message_bytes``.
        """
        return self.publish_body(envelope.topic, envelope.to_json())

    def publish_body(self, topic: str, body: bytes) -> bool:
        return self._enqueue(topic, body, None)

    async def deliver(
        self, envelope: Envelope, *, topic: str | None = None, timeout: float | None = None
    ) -> None:
        """Publish (to ``topic``, else the envelope's) and wait until nsqd acknowledged it.

        Raises :class:`PublishDropped` when the buffer is full, :class:`PublishTimeout`
        after ``timeout`` seconds (the message stays queued: it may still go out later).
        """
        loop = asyncio.get_running_loop()
        acknowledged = loop.create_future()
        if not self._enqueue(topic or envelope.topic, envelope.to_json(), acknowledged):
            raise PublishDropped(f"publish buffer full ({self._capacity} messages)")
        if timeout is None:
            await acknowledged
            return
        # One sweep a second for every delivery waiting, not a timer each: deliveries are
        # the converter's hot path.
        self._deadlines[acknowledged] = loop.time() + timeout
        if self._sweeping is None:
            self._sweeping = loop.call_later(DEADLINE_SWEEP, self._sweep_deadlines)
        try:
            await acknowledged
        finally:
            self._deadlines.pop(acknowledged, None)

    def _sweep_deadlines(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for acknowledged, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[acknowledged]
                if not acknowledged.done():
                    acknowledged.set_exception(PublishTimeout("nsqd did not acknowledge in time"))
        self._sweeping = (
            loop.call_later(DEADLINE_SWEEP, self._sweep_deadlines) if self._deadlines else None
        )

    def _enqueue(self, topic: str, body: bytes, acknowledged: asyncio.Future[None] | None) -> bool:
        if len(body) > self._max_message_bytes:
            raise MessageTooLarge(
                f"a message of {len(body):,} bytes for {topic!r}, above nsq.max_message_bytes "
                f"({self._max_message_bytes:,})"
            )
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
        self._last_accepted += 1
        queue = self._queues.get(topic)
        if queue is None:
            queue = self._queues[topic] = deque()
        queue.append(_Queued(body, self._last_accepted, acknowledged, time.monotonic()))
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
        batch = _take_batch(queue, 1 if self._alone.get(topic) else self._max_batch)
        self._busy.add(topic)
        self._sending[topic] = batch
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
        del self._sending[topic]
        if _refused_for_good(response):
            if len(batch) > 1:  # which one? each goes alone
                self._alone[topic] = len(batch)
                self._queues[topic].extendleft(reversed(batch))
                self._retry(topic)
                return
            self._refuse(topic, batch[0], response)
        elif isinstance(response, nsq.Error):
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
        else:
            self.stats.published += len(batch)
            PUBLISH_LATENCY.observe(time.monotonic() - batch[0].accepted_at)
            for queued in batch:
                if queued.acknowledged is not None and not queued.acknowledged.done():
                    queued.acknowledged.set_result(None)
        if topic in self._alone:
            self._alone[topic] -= 1
            if not self._alone[topic]:
                del self._alone[topic]
        self._busy.discard(topic)
        self._buffered -= len(batch)
        if self._paused and self._buffered <= self._low_water:
            self._set_pressure(False)
        if self._buffered == 0:
            for waiter in self._drain_waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if self._barriers:
            self._release_barriers()
        self._send_next(topic)

    def _retry(self, topic: str) -> None:
        self._busy.discard(topic)
        self._send_next(topic)

    def _refuse(self, topic: str, queued: _Queued, response: object) -> None:
        self.stats.refused += 1
        log.error("nsqd refused a message of %d bytes for %r for good (%s): dropped",
                  len(queued.body), topic, response)  # fmt: skip
        if queued.acknowledged is not None and not queued.acknowledged.done():
            queued.acknowledged.set_exception(MessageRefused(f"nsqd refused it: {response}"))

    def _set_pressure(self, paused: bool) -> None:
        self._paused = paused
        log.warning(
            "NSQ publish buffer at %d: %s reading from devices",
            self._buffered,
            "pausing" if paused else "resuming",
        )
        for listener in list(self._listeners):
            listener(paused)


def _take_batch(queue: deque[_Queued], most: int) -> list[_Queued]:
    """The messages at the front of ``queue`` one PUB or MPUB takes (at least one)."""
    batch = [queue.popleft()]
    size = len(batch[0].body)
    while queue and len(batch) < most and size + len(queue[0].body) <= MAX_BATCH_BYTES:
        size += len(queue[0].body)
        batch.append(queue.popleft())
    return batch


def _refused_for_good(response: object) -> bool:
    if not isinstance(response, nsq.Error) or not response.args:
        return False
    reason = response.args[0]
    return isinstance(reason, bytes) and reason.startswith(_REFUSED_FOR_GOOD)
