"""Publisher and consumer against the real nsqd/nsqlookupd of the local stack.

Topics carry the run's prefix (the session config's ``nsq.topic_prefix``), so they go when
the run ends. What a handler's failure means decides what becomes of its message: refused
input is finished at once, an outage is waited out with the message in hand, a bug is
retried a few times and then parked as a dead letter, which ``m2m bus dead`` lists and
replays.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from m2m.bus.consumer import Consumer, Handler
from m2m.bus.dead_letters import DeadLetters, dead_topic
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.config import Config, NsqConfig
from m2m.errors import Unavailable
from m2m.timeseries import TimeSeriesError
from tests.conftest import WAIT, channel_stats, run_m2m

CHANNEL = "tests"


def _topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def _eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def nsq(config: Config) -> NsqConfig:
    """The run's NSQ settings, finding a restarted nsqd again within a second."""
    return config.nsq.model_copy(update={"lookupd_poll_interval": 1, "max_attempts": 2})


@pytest.fixture
async def publisher(nsq: NsqConfig) -> AsyncIterator[Publisher]:
    publisher = Publisher(nsq, retry_delay=0.2, reconnect_interval=0.5)
    publisher.start()
    yield publisher
    publisher.close()


def _consume(
    nsq: NsqConfig, topic: str, handler: Handler, publisher: Publisher, channel: str = CHANNEL
) -> Consumer:
    consumer = Consumer(topic, channel, handler, nsq, publisher)
    consumer.start()
    return consumer


def _consume_numbers(
    nsq: NsqConfig, topic: str, publisher: Publisher
) -> tuple[Consumer, list[int]]:
    """A consumer noting each message's ``n``, and the list it notes them in."""
    seen: list[int] = []

    async def handle(envelope: Envelope) -> None:
        seen.append(envelope.fields["n"])

    return _consume(nsq, topic, handle, publisher), seen


async def _subscribed(nsq: NsqConfig, topic: str, channel: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        try:
            await channel_stats(nsq, topic, channel)
            return
        except AssertionError:  # no such channel yet
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


def _message(topic: str, n: int, **extra: object) -> Envelope:
    return Envelope.make(topic, "test_call", "tests/bus", n=n, **extra)


async def test_every_published_message_is_consumed_once(
    nsq: NsqConfig, publisher: Publisher
) -> None:
    topic = _topic()
    consumer, seen = _consume_numbers(nsq, topic, publisher)
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
    nsq: NsqConfig, publisher: Publisher
) -> None:
    topic = _topic()
    consumer, seen = _consume_numbers(nsq, topic, publisher)
    publisher.publish_body(topic, b"not json at all")
    publisher.publish_body(topic, b'{"_to":"x","_from":"a/b"}')
    publisher.publish_body(topic, b'{"_to":"/x","_from":"a/b","_call":"c"}')
    publisher.publish_body(topic, b"[" * 2000 + b"]" * 2000)
    publisher.publish(Envelope.make(f"{topic}/another-channel", "test_call", "tests/bus", n=-1))
    publisher.publish(_message(topic, 1))
    await _eventually(lambda: seen == [1])
    await _eventually(lambda: consumer.stats.invalid == 4 and consumer.stats.skipped == 1)
    await asyncio.sleep(1.5)  # a requeued message would be back by now
    await consumer.close()
    assert seen == [1]
    assert consumer.stats.invalid == 4
    stats = await channel_stats(nsq, topic, CHANNEL)
    assert stats["requeue_count"] == 0


async def test_input_a_store_refuses_is_finished_at_once(
    nsq: NsqConfig, publisher: Publisher
) -> None:
    topic = _topic()
    attempts: list[int] = []

    async def refuse(envelope: Envelope) -> None:
        attempts.append(envelope.fields["n"])
        raise TimeSeriesError("a record type must be non-empty")

    consumer = _consume(nsq, topic, refuse, publisher)
    publisher.publish(_message(topic, 7))
    await _eventually(lambda: consumer.stats.invalid == 1)
    await asyncio.sleep(1.5)
    await consumer.close()
    assert attempts == [7]
    assert (consumer.stats.failures, consumer.stats.dead) == (0, 0)


async def test_an_outage_is_waited_out_with_the_message_in_hand(
    nsq: NsqConfig, publisher: Publisher
) -> None:
    topic = _topic()
    down = True
    attempts: list[int] = []

    async def unavailable_for_now(envelope: Envelope) -> None:
        attempts.append(envelope.fields["n"])
        if down:
            raise Unavailable("Cassandra unavailable")

    consumer = _consume(nsq, topic, unavailable_for_now, publisher)
    publisher.publish(_message(topic, 3))
    await _eventually(lambda: len(attempts) >= 3)
    down = False
    await _eventually(lambda: consumer.stats.handled == 1)
    await consumer.close()
    assert set(attempts) == {3}
    assert consumer.stats.retries == len(attempts) - 1
    assert (consumer.stats.failures, consumer.stats.dead) == (0, 0)
    stats = await channel_stats(nsq, topic, CHANNEL)
    # Held and tried again here: never requeued, never redelivered (attempts stay 1).
    assert (stats["requeue_count"], stats["timeout_count"], stats["depth"]) == (0, 0, 0)


async def test_a_message_failing_unexpectedly_is_parked_and_holds_back_nothing(
    nsq: NsqConfig, publisher: Publisher, config_file: Path
) -> None:
    topic = _topic()
    handled: list[int] = []

    async def broken_for_zero(envelope: Envelope) -> None:
        if envelope.fields["n"] == 0:
            raise RuntimeError("a bug")
        handled.append(envelope.fields["n"])

    consumer = _consume(nsq, topic, broken_for_zero, publisher)
    publisher.publish(_message(topic, 0))
    for n in range(1, 101):
        publisher.publish(_message(topic, n))
    # The others pass while 0 waits its second delivery (a second away).
    await _eventually(lambda: len(handled) == 100 and consumer.stats.dead == 0)
    await _eventually(lambda: consumer.stats.dead == 1)
    await consumer.close()
    assert sorted(handled) == list(range(1, 101))
    assert consumer.stats.failures == nsq.max_attempts
    stats = await channel_stats(nsq, topic, CHANNEL)
    assert (stats["depth"], stats["in_flight_count"]) == (0, 0)

    held = await DeadLetters(nsq, topic).list()
    ((letter, _),) = held.letters
    assert letter.envelope.fields["n"] == 0
    assert (letter.topic, letter.channel, letter.attempts) == (topic, CHANNEL, 2)
    assert letter.reason.startswith("RuntimeError: a bug (at ")
    listed = run_m2m("bus", "dead", "ls", topic, config=config_file)
    assert "RuntimeError: a bug" in listed.stdout.decode()
    assert f"1 dead letter(s) of {topic} ({dead_topic(topic)})" in listed.stderr.decode()


async def test_dead_letters_are_replayed_to_the_channel_that_failed_them(
    nsq: NsqConfig, publisher: Publisher, config_file: Path
) -> None:
    topic = _topic()
    fixed = False
    handled: list[int] = []
    other_channel: list[int] = []

    async def fixed_later(envelope: Envelope) -> None:
        if not fixed:
            raise RuntimeError("a bug, fixed later")
        handled.append(envelope.fields["n"])

    async def other(envelope: Envelope) -> None:
        other_channel.append(envelope.fields["n"])

    failing = _consume(nsq, topic, fixed_later, publisher)
    working = _consume(nsq, topic, other, publisher, channel="another")
    for channel in (CHANNEL, "another"):  # a channel gets what is published once it exists
        await _subscribed(nsq, topic, channel)
    for n in range(3):
        publisher.publish(_message(topic, n))
    await _eventually(lambda: failing.stats.dead == 3 and len(other_channel) == 3)

    listed = run_m2m("bus", "dead", "ls", "--json", topic, config=config_file)
    rows = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert sorted(row["message"]["n"] for row in rows) == [0, 1, 2]
    assert {row["channel"] for row in rows} == {CHANNEL}
    assert "_dead" not in rows[0]["message"]
    again = run_m2m("bus", "dead", "ls", topic, config=config_file)  # listing kept them
    assert f"3 dead letter(s) of {topic}" in again.stderr.decode()

    fixed = True
    replayed = run_m2m("bus", "dead", "replay", topic, config=config_file)
    assert f"replayed 3 dead letter(s) of {topic}" in replayed.stderr.decode()
    await _eventually(lambda: sorted(handled) == [0, 1, 2])
    await asyncio.sleep(1)  # the other channel would have them again by now
    assert sorted(other_channel) == [0, 1, 2]  # it did its part already and skipped them
    assert (await DeadLetters(nsq, topic).list()).letters == []
    for consumer in (failing, working):
        await consumer.close()


def test_dead_letters_of_a_bad_topic_name_are_refused(config_file: Path) -> None:
    for topic in ("a topic", "storage.dead", "x" * 60):
        result = run_m2m("bus", "dead", "ls", topic, config=config_file, check=False)
        assert result.returncode != 0
        assert len(result.stderr.decode().strip().splitlines()) == 1


async def test_a_barrier_is_passed_once_nsqd_acknowledged_everything_before_it(
    nsq: NsqConfig, publisher: Publisher
) -> None:
    topic = _topic()
    assert publisher.acknowledged(publisher.last_accepted) is None  # nothing outstanding
    for n in range(50):
        publisher.publish(_message(topic, n))
    barrier = publisher.acknowledged(publisher.last_accepted)
    assert barrier is not None
    await asyncio.wait_for(barrier, WAIT)
    assert publisher.buffered == 0
    await asyncio.to_thread(run_m2m, "stack", "stop", "nsqd")
    try:
        publisher.publish(_message(topic, 50))
        waiting = publisher.acknowledged(publisher.last_accepted)
        assert waiting is not None
        await asyncio.sleep(1)
        assert not waiting.done()  # nsqd is away: nothing is acknowledged
    finally:
        await asyncio.to_thread(run_m2m, "stack", "start", "nsqd")
    await asyncio.wait_for(waiting, WAIT)


async def test_nothing_accepted_is_lost_while_nsqd_restarts(
    nsq: NsqConfig, publisher: Publisher
) -> None:
    topic = _topic()
    seen: set[int] = set()

    async def handle(envelope: Envelope) -> None:
        seen.add(envelope.fields["n"])

    consumer = _consume(nsq, topic, handle, publisher)
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
    nsq: NsqConfig, publisher: Publisher
) -> None:
    """Consumers gather their FINs for a few milliseconds: closing writes them first."""
    topic = _topic()
    consumer, seen = _consume_numbers(nsq, topic, publisher)
    for n in range(500):
        publisher.publish(_message(topic, n))
    assert await publisher.flush(timeout=30)
    await _eventually(lambda: len(seen) >= 500)
    await consumer.close()
    await asyncio.sleep(0.5)  # nsqd takes the connection's end into account
    stats = await channel_stats(nsq, topic, CHANNEL)
    assert (stats["depth"], stats["in_flight_count"], stats["requeue_count"]) == (0, 0, 0)
    assert sorted(seen) == list(range(500))
