"""Consuming a topic: at-least-once delivery turned into "done once it is durable".

A message is finished only after its handler's coroutine completed; a handler that fails
has the message requeued with a growing delay (and pynsq backs the reader off), and it is
retried for as long as it takes — never given up on. A message that is not an envelope,
or that the handler declares invalid, is logged, counted and finished: retrying it could
never succeed. A message whose ``_to`` names another channel is skipped (finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nsq
from tornado.concurrent import Future
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.config import NsqConfig

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

OUTPUT_BUFFER_TIMEOUT_MS = 25


@dataclass
class ConsumerStats:
    handled: int = 0
    invalid: int = 0
    skipped: int = 0
    failures: int = 0


class Consumer:
    def __init__(
        self,
        topic: str,
        channel: str,
        handler: Handler,
        config: NsqConfig,
        *,
        requeue_delay: int = 1,
    ) -> None:
        self.topic = topic
        self.channel = channel
        self._handler = handler
        self._config = config
        self._requeue_delay = requeue_delay
        self._reader: nsq.Reader | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.stats = ConsumerStats()

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
            max_tries=0,  # never give up on a message: its data would be lost
            requeue_delay=self._requeue_delay,
            # nsqd otherwise holds messages up to 250 ms before sending them on: at every
            # hop (converter, storage) that is latency a device's data does not need.
            output_buffer_timeout=OUTPUT_BUFFER_TIMEOUT_MS,
        )

    async def close(self, timeout: float = 10.0) -> None:
        """Stop taking messages and let the ones being handled finish."""
        if self._reader is not None:
            self._reader.set_max_in_flight(0)
        if self._running:
            await asyncio.wait(self._running, timeout=timeout)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _on_message(self, message: nsq.Message) -> bool | None:
        try:
            envelope = Envelope.from_json(message.body)
        except InvalidMessage as exc:
            self._count_invalid(exc, message.body)
            return True
        channel = envelope.channel
        if channel is not None and channel != self.channel:
            self.stats.skipped += 1
            return True
        message.enable_async()
        task = asyncio.get_running_loop().create_task(self._handle(envelope, message))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return None

    async def _handle(self, envelope: Envelope, message: nsq.Message) -> None:
        try:
            await self._handler(envelope)
        except InvalidMessage as exc:
            self._count_invalid(exc, message.body)
            message.finish()
        except Exception:
            self.stats.failures += 1
            log.exception(
                "%s/%s: handling %s failed (attempt %d); requeued",
                self.topic,
                self.channel,
                envelope.call,
                message.attempts,
            )
            message.requeue(backoff=True)
        else:
            self.stats.handled += 1
            message.finish()

    def _count_invalid(self, exc: Exception, body: bytes) -> None:
        self.stats.invalid += 1
        log.warning("%s/%s: invalid message finished: %s: %.200r", self.topic, self.channel,
                    exc, body)  # fmt: skip


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
