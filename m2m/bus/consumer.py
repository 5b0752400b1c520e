"""Consuming a topic: at-least-once delivery turned into "done once it is durable".

A message is finished once its handler completed. When the handler fails, what the
failure means decides what becomes of the message, and one bad message never holds back
the channel's others:

- Refused input (:class:`~m2m.errors.InvalidInput`: not an envelope, a field or a value
  a store refuses) can never succeed: the message is finished at once, counted, and logged
  once with the reason.
- An outage (:class:`~m2m.errors.Unavailable`: Cassandra down or too slow, nsqd not taking
  messages) ends some day: the message is kept in hand and tried again after a random
  delay whose bound doubles up to ``RETRY_MAX_DELAY`` (full jitter), for as long as it
  takes, and nsqd is told meanwhile that we still work on it (TOUCH). Messages in hand
  hold the in-flight slots, so a consumer in an outage stops taking new messages; and
  while the outage lasts, the messages in hand take turns: one attempt every
  ``PROBE_INTERVAL``, whichever message makes it, so a thousand messages in hand do not
  make a thousand attempts. An outage is logged when it starts and when it ends, and its
  end wakes every message in hand at once.
- Anything else is a bug. The message is requeued with a growing delay, without backing
  the reader off (the channel's other messages keep coming), for ``nsq.max_attempts``
  deliveries; then it is parked on ``<topic>.dead`` with the reason
  (:mod:`m2m.bus.dead_letters`) and finished.

A message whose ``_to`` names another channel is skipped (finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

import nsq
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)
from tornado.concurrent import Future
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from m2m.bus.dead_letters import dead_letter, dead_topic
from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.bus.publisher import Publisher
from m2m.config import NsqConfig
from m2m.errors import InvalidInput, Unavailable
from m2m.metrics import MESSAGE_AGE
from m2m.tls_client import pynsq_tls

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

OUTPUT_BUFFER_TIMEOUT_MS = 25
RETRY_FIRST_DELAY: Final = 0.5
"""Seconds: the bound of the first random delay before trying a message again in an outage."""
RETRY_MAX_DELAY: Final = 15.0
"""Seconds: the bound the delays double up to (nsqd's message timeout is 60 s)."""
OUTAGE_MIN: Final = 1.0
"""Seconds of failures without a success that make an outage (whose end wakes everyone)."""
PROBE_INTERVAL: Final = 1.0
"""Seconds between two attempts in an outage, whichever message makes them."""
TOUCH_INTERVAL: Final = 20.0
"""Seconds between two TOUCHes of a message waiting its turn (nsqd's timeout is 60 s)."""
REQUEUE_FIRST_DELAY_MS: Final = 1000
"""A message failing unexpectedly comes back after this, doubled at each delivery…"""
REQUEUE_MAX_DELAY_MS: Final = 60_000
"""…up to this."""
PARK_TIMEOUT: Final = 10.0
"""Seconds nsqd has to take a message parked on the dead-letter topic (else: requeued)."""


@dataclass
class ConsumerStats:
    handled: int = 0
    invalid: int = 0
    skipped: int = 0
    retries: int = 0
    """Attempts made again because of an outage."""
    failures: int = 0
    """Unexpected failures (bugs), each requeued or parked."""
    requeued: int = 0
    handler_calls: int = 0
    handler_seconds: float = 0.0
    """Time the handler took, over its ``handler_calls`` (whatever the outcome)."""
    dead: int = 0
    """Messages parked on the dead-letter topic."""


class Consumer:
    def __init__(
        self,
        topic: str,
        channel: str,
        handler: Handler | None,
        config: NsqConfig,
        publisher: Publisher,
    ) -> None:
        """``handler`` None: a drain, finishing every message unread (not even decoded)."""
        self.topic = topic
        self.channel = channel
        self._handler = handler
        self._config = config
        self._publisher = publisher
        """Where messages that keep failing are parked."""
        self._reader: nsq.Reader | None = None
        self._tls = pynsq_tls(config)
        self._running: dict[asyncio.Task[None], nsq.Message] = {}
        """The messages in hand, by the task handling each."""
        self.log = logging.LoggerAdapter(log, {"topic": topic, "channel": channel})
        """Its records carry ``topic`` and ``channel``; its messages name them too."""
        self._outage = _Outage(f"{topic}/{channel}", self.log)
        self.stats = ConsumerStats()
        self._message_age = MESSAGE_AGE.labels(topic, channel)

    def start(self) -> None:
        """Subscribe; call with the asyncio loop running (pynsq binds to it)."""
        self._reader = _Reader(
            topic=self._config.topic_prefix + self.topic,
            channel=self.channel,
            message_handler=self._on_message,
            # The local nsqd directly (it also creates the channel at once), every other
            # nsqd through the lookup daemons.
            nsqd_tcp_addresses=list(self._config.nsqd_tcp_addresses),
            lookupd_http_addresses=list(self._config.lookupd_http_addresses),
            lookupd_poll_interval=self._config.lookupd_poll_interval,
            max_in_flight=self._config.max_in_flight,
            max_tries=0,  # we decide when a message is given up on (parked), not pynsq
            # nsqd otherwise holds messages up to 250 ms before sending them on: at every
            # hop (converter, storage) that is latency a device's data does not need.
            output_buffer_timeout=OUTPUT_BUFFER_TIMEOUT_MS,
            **self._tls,
        )

    @property
    def connected(self) -> bool:
        """Whether the consumer holds a connection to an nsqd."""
        reader = self._reader
        return reader is not None and any(conn.connected() for conn in reader.conns.values())

    async def close(self, timeout: float = 10.0) -> None:
        """Stop taking messages and let the ones being handled finish (for ``timeout`` s).

        What is still in hand then (retrying through an outage) is given back to nsqd, to
        be delivered again at once: nothing is lost, and nothing waits for nsqd's message
        timeout (a minute) to come back.
        """
        if self._reader is not None:
            self._reader.set_max_in_flight(0)
        if self._running:
            await asyncio.wait(self._running, timeout=timeout)
            for task, message in list(self._running.items()):
                task.cancel()
                if not message.has_responded():
                    message.requeue(backoff=False, time_ms=0)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _on_message(self, message: nsq.Message) -> bool | None:
        handler = self._handler
        if handler is None:
            self.stats.handled += 1
            return True
        try:
            envelope = Envelope.from_json(message.body)
            channel = envelope.channel
        except InvalidMessage as exc:
            self._count_invalid(exc, message.body)
            return True
        if channel is not None and channel != self.channel:
            self.stats.skipped += 1
            return True
        message.enable_async()
        task = asyncio.get_running_loop().create_task(self._handle(handler, envelope, message))
        self._running[task] = message
        task.add_done_callback(self._running.pop)
        return None

    async def _handle(self, handler: Handler, envelope: Envelope, message: nsq.Message) -> None:
        started = time.time()
        self._message_age.observe(max(0.0, started - message.timestamp / 1e9))
        try:
            try:
                await handler(envelope)
            except Unavailable as exc:
                await self._until_available(handler, envelope, message, exc)
        except InvalidInput as exc:
            self._count_invalid(exc, message.body)
            message.finish()
        except Exception as exc:
            await self._failed(envelope, message, exc)
        else:
            self._outage.succeeded()
            self.stats.handled += 1
            message.finish()
        finally:
            self.stats.handler_calls += 1
            self.stats.handler_seconds += time.time() - started

    async def _until_available(
        self, handler: Handler, envelope: Envelope, message: nsq.Message, failure: Unavailable
    ) -> None:
        """Handle the message again until an attempt does not fail for an outage."""
        self._outage.failed(failure)
        first: Unavailable | None = failure
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Unavailable),
            wait=wait_random_exponential(multiplier=RETRY_FIRST_DELAY, max=RETRY_MAX_DELAY),
            sleep=partial(self._outage.wait, message),
            before_sleep=lambda state: self._held_longer(message, state),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first is not None:  # the attempt that failed already counts as the first
                    failed = first
                    first = None
                    raise failed
                await handler(envelope)

    def _held_longer(self, message: nsq.Message, state: RetryCallState) -> None:
        """Another attempt will come: tell nsqd we still work on the message."""
        self.stats.retries += 1
        if state.attempt_number > 1 and state.outcome is not None:  # the first was counted
            self._outage.failed(state.outcome.exception())
        message.touch()

    async def _failed(self, envelope: Envelope, message: nsq.Message, exc: Exception) -> None:
        """An unexpected failure: requeue the message, or park it after its last attempt."""
        self.stats.failures += 1
        attempts = message.attempts
        if attempts < self._config.max_attempts:
            self.log.error(
                "%s/%s: handling %s failed (delivery %d of %d); requeued",
                self.topic, self.channel, envelope.call, attempts, self._config.max_attempts,
                exc_info=exc if attempts == 1 else None,
            )  # fmt: skip
            delay = min(REQUEUE_FIRST_DELAY_MS << (attempts - 1), REQUEUE_MAX_DELAY_MS)
            self.stats.requeued += 1
            message.requeue(backoff=False, time_ms=delay)
            return
        reason = _reason(exc)
        parked = dead_letter(
            envelope, topic=self.topic, channel=self.channel, attempts=attempts, reason=reason
        )
        try:
            await self._publisher.deliver(
                parked, topic=dead_topic(self.topic), timeout=PARK_TIMEOUT
            )
        except Unavailable as unavailable:
            self.log.error("%s/%s: cannot park a message (%s); requeued", self.topic,
                           self.channel, unavailable)  # fmt: skip
            self.stats.requeued += 1
            message.requeue(backoff=False, time_ms=REQUEUE_MAX_DELAY_MS)
            return
        except InvalidInput as refused:  # too large to park, with its reason
            self.log.error(
                "%s/%s: %s failed %d times and cannot be parked (%s), dropped: %s: %.200r",
                self.topic, self.channel, envelope.call, attempts, refused, reason, message.body,
            )  # fmt: skip
            message.finish()
            return
        self.stats.dead += 1
        self.log.error(
            "%s/%s: %s failed %d times, parked on %s: %s",
            self.topic, self.channel, envelope.call, attempts, dead_topic(self.topic), reason,
        )  # fmt: skip
        message.finish()

    def _count_invalid(self, exc: Exception, body: bytes) -> None:
        self.stats.invalid += 1
        self.log.warning("%s/%s: invalid message finished: %s: %.200r", self.topic,
                         self.channel, exc, body)  # fmt: skip


def _reason(exc: BaseException) -> str:
    """One line: what was raised, and where (the innermost frame)."""
    what = "".join(traceback.format_exception_only(exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return what
    where = frames[-1]
    return f"{what} (at {where.filename}:{where.lineno} in {where.name})"


class _Outage:
    """The outages one consumer lives through: logged once each, their ends waking everyone.

    Failures with no success for ``OUTAGE_MIN`` seconds are an outage; its end is the
    first success after it. A message failing alone while others succeed (a request
    Cassandra keeps timing out) is no outage: it waits its own delays, and wakes nobody.
    """

    def __init__(self, name: str, log: logging.LoggerAdapter[logging.Logger]) -> None:
        self._name = name
        self._log = log
        self._failing_since: float | None = None
        self._failures = 0
        self._ended = asyncio.Event()
        self._turns = asyncio.Lock()
        self._last_turn = 0.0

    def failed(self, failure: BaseException | None) -> None:
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self._log.warning("%s: %s; holding the message and trying again", self._name,
                              failure)  # fmt: skip

    def succeeded(self) -> None:
        if self._failing_since is None:
            return  # nearly always: nothing to do
        lasted = time.monotonic() - self._failing_since
        if lasted >= OUTAGE_MIN:
            self._log.warning("%s: working again after %.0f s and %d failed attempts",
                              self._name, lasted, self._failures)  # fmt: skip
            self._ended.set()
            self._ended = asyncio.Event()
        self._failing_since = None
        self._failures = 0

    @property
    def lasting(self) -> bool:
        """Whether an outage is under way (failures, and no success, for OUTAGE_MIN s)."""
        since = self._failing_since
        return since is not None and time.monotonic() - since >= OUTAGE_MIN

    async def wait(self, message: nsq.Message, seconds: float) -> None:
        """Before ``message`` is tried again: ``seconds``, then, while an outage lasts, its
        turn. The end of the outage ends the wait of every message at once."""
        ended = self._ended
        if await _set_within(ended, seconds) or not self.lasting:
            return
        while not await _acquired_within(self._turns, TOUCH_INTERVAL):
            message.touch()  # still ours: nsqd must not give it to another consumer
        try:
            if not ended.is_set():
                await _set_within(ended, self._last_turn + PROBE_INTERVAL - time.monotonic())
            self._last_turn = time.monotonic()
        finally:
            self._turns.release()


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set within ``seconds`` (waiting no longer)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, seconds))
    return event.is_set()


async def _acquired_within(lock: asyncio.Lock, seconds: float) -> bool:
    try:
        await asyncio.wait_for(lock.acquire(), seconds)
    except TimeoutError:
        return False
    return True


class _Reader(nsq.Reader):
    """pynsq's Reader, whose ready connections read and write in bulk.

    pynsq reads a frame's size and then its body, each through a future and a loop
    callback, and writes every FIN (and REQ, TOUCH, RDY) to the socket as it is made: a
    system call per message, which on loopback also carries the delivery to nsqd. On a
    busy consumer that costs more than handling the message. Once a connection is ready
    (its handshake done, pynsq's way), it reads whatever arrived and hands over every
    whole frame in it, and what it sends waits up to ``WRITE_GATHERING`` seconds (or
    until ``WRITE_GATHERING_MAX`` commands wait) to go out in one write. Only nsqd's
    accounting waits: the messages were handled already.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._gathered: dict[str, _GatheredWrites] = {}

    def _on_connection_ready(self, conn: nsq.AsyncConn, **kwargs: object) -> None:
        self._gathered[conn.id] = gathered = _GatheredWrites(conn)
        conn.send = gathered.send
        conn._start_read = _BulkReads(conn).start  # taken from the next frame on
        super()._on_connection_ready(conn, **kwargs)

    def close(self) -> None:
        for gathered in self._gathered.values():
            gathered.write()  # the last FINs, before the connections close
        super().close()


READ_SIZE = 64 * 1024
WRITE_GATHERING = 0.005
WRITE_GATHERING_MAX = 100
_FRAME_SIZE = struct.Struct(">L")


class _BulkReads:
    def __init__(self, conn: nsq.AsyncConn) -> None:
        self._conn = conn
        self._buffer = bytearray()

    def start(self) -> None:
        stream = self._conn.stream
        if stream is None:
            return
        try:
            received = stream.read_bytes(READ_SIZE, partial=True)
        except StreamClosedError:
            self._closed()
            return
        IOLoop.current().add_future(received, self._received)

    def _received(self, received: Future[bytes]) -> None:
        try:
            self._buffer += received.result()
        except StreamClosedError:
            self._closed()
            return
        buffer, start = self._buffer, 0
        while len(buffer) - start >= _FRAME_SIZE.size:
            end = start + _FRAME_SIZE.size + _FRAME_SIZE.unpack_from(buffer, start)[0]
            if len(buffer) < end:
                break
            frame = bytes(buffer[start + _FRAME_SIZE.size : end])
            start = end
            try:
                self._conn.trigger(nsq.event.DATA, conn=self._conn, data=frame)
            except Exception:
                log.exception("uncaught exception in data event")
        del buffer[:start]
        self.start()

    def _closed(self) -> None:
        """As pynsq reacts to a closed stream."""
        self._conn.close()
        self._conn.trigger(
            nsq.event.ERROR,
            conn=self._conn,
            error=nsq.protocol.ConnectionClosedError("Stream is closed"),
        )


class _GatheredWrites:
    def __init__(self, conn: nsq.AsyncConn) -> None:
        self._conn = conn
        self._pending: list[bytes] = []
        self._due: asyncio.TimerHandle | None = None

    def send(self, data: bytes) -> None:
        self._pending.append(data)
        if len(self._pending) >= WRITE_GATHERING_MAX:
            self.write()
        elif self._due is None:
            self._due = asyncio.get_running_loop().call_later(WRITE_GATHERING, self.write)

    def write(self) -> None:
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        conn = self._conn
        # Closed meanwhile: pynsq's own handling of the close already went through.
        with contextlib.suppress(StreamClosedError):
            conn.stream.write(conn.encoder.encode(data))
