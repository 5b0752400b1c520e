"""Dead letters: messages a consumer parked because handling them kept failing unexpectedly.

A failure that is neither refused input nor an outage is a bug, and retrying cannot be
counted on to fix it. After ``nsq.max_attempts`` deliveries the consumer parks the message
on ``<topic>.dead`` — the envelope as it came, plus ``_dead``: the topic and channel that
failed it, how many deliveries, when, and why — and finishes it, so it holds nothing
back. ``m2m bus dead ls TOPIC`` lists them; once the cause is fixed, ``m2m bus dead
replay TOPIC`` sends each back to the channel that failed it (its ``_to`` names that
channel, so the topic's other channels, which did their part, skip it).

Dead letters wait on the ``dead`` channel of ``<topic>.dead``. Reading them holds them in
flight (at most ``MAX_HELD`` at once: nsqd's ``--max-rdy-count``) until no more come, then
lists and requeues them, or replays and finishes them. Two readers at once would share
them: run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import nsq

from m2m.bus.envelope import Address, Envelope, InvalidMessage
from m2m.bus.publisher import Publisher
from m2m.config import NsqConfig
from m2m.errors import M2MError
from m2m.tls_client import pynsq_tls

DEAD_TOPIC_SUFFIX: Final = ".dead"
DEAD_CHANNEL: Final = "dead"
DEAD_FIELD: Final = "_dead"
MAX_HELD: Final = 2500
"""Dead letters read at once: nsqd's default ``--max-rdy-count``."""
CONNECT_TIMEOUT: Final = 10.0
QUIET: Final = 0.5
"""Seconds without a new message after which every dead letter has arrived."""


class BusUnreachableError(M2MError):
    """No nsqd answered."""


def dead_topic(topic: str) -> str:
    """Where ``topic``'s dead letters are parked."""
    return f"{topic}{DEAD_TOPIC_SUFFIX}"


def dead_letter(
    envelope: Envelope, *, topic: str, channel: str, attempts: int, reason: str
) -> Envelope:
    """``envelope`` as parked after failing on ``topic``/``channel``: its ``_dead`` says why."""
    dead = {
        "topic": topic,
        "channel": channel,
        "attempts": attempts,
        "reason": reason,
        "time": int(time.time()),
    }
    return Envelope(
        envelope.to,
        envelope.sender,
        envelope.call,
        envelope.time,
        {**envelope.fields, DEAD_FIELD: dead},
    )


@dataclass(frozen=True)
class DeadLetter:
    """A parked message: the envelope to send again, and why it was parked."""

    envelope: Envelope
    """As it first came, without ``_dead``."""
    topic: str
    channel: str
    attempts: int
    reason: str
    parked_at: int

    @classmethod
    def of(cls, body: bytes) -> DeadLetter:
        """Read a dead letter; :class:`InvalidMessage` if ``body`` is not one."""
        parked = Envelope.from_json(body)
        dead = parked.fields.get(DEAD_FIELD)
        if not isinstance(dead, Mapping) or not all(
            isinstance(dead.get(key), str) and dead.get(key) for key in ("topic", "channel")
        ):
            raise InvalidMessage(f"a dead letter needs {DEAD_FIELD} with its topic and channel")
        fields = {key: value for key, value in parked.fields.items() if key != DEAD_FIELD}
        return cls(
            envelope=Envelope(parked.to, parked.sender, parked.call, parked.time, fields),
            topic=dead["topic"],
            channel=dead["channel"],
            attempts=_number(dead.get("attempts")),
            reason=str(dead.get("reason", "")),
            parked_at=_number(dead.get("time")),
        )

    def replayed(self) -> Envelope:
        """The envelope to send again, addressed to the channel that failed it alone."""
        envelope = self.envelope
        try:
            address = envelope.address
        except InvalidMessage:
            address = Address(self.topic)
        to = Address(address.topic, address.channel or self.channel, address.params)
        return Envelope(str(to), envelope.sender, envelope.call, envelope.time, envelope.fields)


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class Held:
    """Dead letters in hand: those readable, and the bodies that are not dead letters."""

    letters: list[tuple[DeadLetter, nsq.Message]]
    unreadable: list[nsq.Message]


class DeadLetters:
    """The dead letters of one topic, on the nsqd of ``config``."""

    def __init__(self, config: NsqConfig, topic: str) -> None:
        self._config = config
        self.topic = topic

    async def list(self, limit: int = MAX_HELD) -> Held:
        """Up to ``limit`` dead letters, oldest first; they stay where they are."""
        async with self._held(limit) as held:
            return held

    async def replay(self, publisher: Publisher, limit: int = MAX_HELD) -> Held:
        """Send up to ``limit`` dead letters back, each dropped once nsqd took it again.

        Returns those replayed; messages that are not dead letters are left in place.
        """
        async with self._held(limit) as held:
            for letter, message in held.letters:
                await publisher.deliver(letter.replayed(), topic=letter.topic)
                message.finish()
            return held

    @contextlib.asynccontextmanager
    async def _held(self, limit: int) -> AsyncIterator[Held]:
        """The dead letters that come within ``QUIET`` s; what is not finished is requeued."""
        if not 1 <= limit <= MAX_HELD:
            raise ValueError(f"between 1 and {MAX_HELD} dead letters at once")
        messages: list[nsq.Message] = []
        arrived = asyncio.Event()

        def hold(message: nsq.Message) -> None:
            message.enable_async()
            messages.append(message)
            arrived.set()

        config = self._config
        reader = nsq.Reader(
            topic=config.topic_prefix + dead_topic(self.topic),
            channel=DEAD_CHANNEL,
            message_handler=hold,
            nsqd_tcp_addresses=list(config.nsqd_tcp_addresses),
            lookupd_http_addresses=list(config.lookupd_http_addresses),
            lookupd_poll_interval=config.lookupd_poll_interval,
            max_in_flight=limit,
            max_tries=0,
            **pynsq_tls(config),
        )
        try:
            await self._until_quiet(reader, arrived)
            messages.sort(key=lambda message: message.timestamp)
            yield _sorted_out(messages)
        finally:
            reader.set_max_in_flight(0)  # nothing more comes, not even what we requeue
            for message in messages:
                if not message.has_responded():
                    message.requeue(backoff=False, time_ms=0)
            reader.close()

    async def _until_quiet(self, reader: nsq.Reader, arrived: asyncio.Event) -> None:
        await until_subscribed(reader, self._config)
        while True:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), QUIET)
            except TimeoutError:
                return


def _sorted_out(messages: list[nsq.Message]) -> Held:
    letters, unreadable = [], []
    for message in messages:
        try:
            letters.append((DeadLetter.of(message.body), message))
        except InvalidMessage:
            unreadable.append(message)
    return Held(letters, unreadable)


async def until_subscribed(reader: nsq.Reader, config: NsqConfig) -> None:
    """Until an nsqd took ``reader``'s subscription; :class:`BusUnreachableError` if none
    does within ``CONNECT_TIMEOUT``."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while not any(conn.rdy for conn in reader.conns.values()):
        if time.monotonic() > deadline:
            tried = ", ".join([*config.nsqd_tcp_addresses, *config.lookupd_http_addresses])
            raise BusUnreachableError(f"no nsqd answered (tried {tried})")
        await asyncio.sleep(0.05)
