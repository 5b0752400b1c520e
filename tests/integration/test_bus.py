"""Publisher and consumer against the real nsqd/nsqlookupd of the local stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from m2m.bus.consumer import Consumer, Handler
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.config import NsqConfig
from tests.conftest import channel_stats, run_m2m

NSQ = NsqConfig(lookupd_poll_interval=1)


def _topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def _eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def publisher(stack: None) -> AsyncIterator[Publisher]:
    publisher = Publisher(NSQ, retry_delay=0.2, reconnect_interval=0.5)
    publisher.start()
    yield publisher
    publisher.close()


async def _consume(topic: str, handler: Handler) -> Consumer:
    consumer = Consumer(topic, "tests", handler, NSQ)
    consumer.start()
    return consumer


async def _consume_numbers(topic: str) -> tuple[Consumer, list[int]]:
    """A consumer noting each message's ``n``, and the list it notes them in."""
    seen: list[int] = []

    async def handle(envelope: Envelope) -> None:
        seen.append(envelope.fields["n"])

    return await _consume(topic, handle), seen


def _message(topic: str, n: int, **extra: object) -> Envelope:
    return Envelope.make(topic, "test_call", "tests/bus", n=n, **extra)


async def test_every_published_message_is_consumed_once(publisher: Publisher) -> None:
    topic = _topic()
    consumer, seen = await _consume_numbers(topic)
    for n in range(3000):
        assert publisher.publish(_message(topic, n))
    assert await publisher.flush(timeout=30)
    await _eventually(lambda: len(seen) >= 3000)
    await asyncio.sleep(0.3)
    await consumer.close()
    assert sorted(seen) == list(range(3000))
    assert publisher.stats.published == 3000 and publisher.stats.dropped == 0
    assert consumer.stats.handled == 3000


async def test_invalid_and_misaddressed_messages_are_finished_not_retried(
    publisher: Publisher,
) -> None:
    topic = _topic()
    consumer, seen = await _consume_numbers(topic)
    publisher.publish_body(topic, b"not json at all")
    publisher.publish_body(topic, b'{"_to":"x","_from":"a/b"}')
    publisher.publish(Envelope.make(f"{topic}/another-channel", "test_call", "tests/bus", n=-1))
    publisher.publish(_message(topic, 1))
    await _eventually(lambda: seen == [1])
    await _eventually(lambda: consumer.stats.invalid == 2 and consumer.stats.skipped == 1)
    await asyncio.sleep(1.5)  # a requeued message would be back by now
    await consumer.close()
    assert seen == [1]
    assert consumer.stats.invalid == 2


async def test_a_failing_handler_gets_the_message_again_until_it_succeeds(
    publisher: Publisher,
) -> None:
    topic = _topic()
    attempts: list[int] = []

    async def flaky(envelope: Envelope) -> None:
        attempts.append(envelope.fields["n"])
        if len(attempts) < 3:
            raise RuntimeError("storage is down")

    consumer = await _consume(topic, flaky)
    publisher.publish(_message(topic, 7))
    await _eventually(lambda: consumer.stats.handled == 1)
    await consumer.close()
    assert attempts == [7, 7, 7]
    assert consumer.stats.failures == 2


async def test_nothing_accepted_is_lost_while_nsqd_restarts(publisher: Publisher) -> None:
    topic = _topic()
    seen: set[int] = set()

    async def handle(envelope: Envelope) -> None:
        seen.add(envelope.fields["n"])

    consumer = await _consume(topic, handle)
    for n in range(200):
        publisher.publish(_message(topic, n))
    assert await publisher.flush(timeout=30)
    await asyncio.to_thread(run_m2m, "stack", "stop", "nsqd")
    try:
        for n in range(200, 700):
            assert publisher.publish(_message(topic, n))
        await asyncio.sleep(0.5)
        assert publisher.buffered == 500  # kept, not dropped, while nsqd is away
    finally:
        await asyncio.to_thread(run_m2m, "stack", "start", "nsqd")
    assert await publisher.flush(timeout=30)
    await _eventually(lambda: len(seen) == 700, timeout=60)
    await consumer.close()
    assert seen == set(range(700))
    assert publisher.stats.dropped == 0


async def test_back_pressure_then_drops_are_counted(stack: None) -> None:
    pressure: list[bool] = []
    nowhere = NsqConfig(nsqd_tcp_addresses=["127.0.0.1:1"])
    publisher = Publisher(nowhere, high_water=4, capacity=6, retry_delay=10)
    publisher.add_pressure_listener(pressure.append)
    publisher.start()
    try:
        accepted = [publisher.publish(_message("nowhere", n)) for n in range(8)]
    finally:
        publisher.close()
    assert accepted == [True] * 6 + [False] * 2
    assert pressure == [True]
    assert publisher.stats.dropped == 2 and publisher.buffered == 6


async def test_messages_handled_before_close_are_finished_not_redelivered(
    publisher: Publisher,
) -> None:
    """Consumers gather their FINs for a few milliseconds: closing writes them first."""
    topic = _topic()
    consumer, seen = await _consume_numbers(topic)
    for n in range(500):
        publisher.publish(_message(topic, n))
    assert await publisher.flush(timeout=30)
    await _eventually(lambda: len(seen) >= 500)
    await consumer.close()
    await asyncio.sleep(0.5)  # nsqd takes the connection's end into account
    stats = await channel_stats(NSQ, topic, "tests")
    assert (stats["depth"], stats["in_flight_count"], stats["requeue_count"]) == (0, 0, 0)
    assert sorted(seen) == list(range(500))
