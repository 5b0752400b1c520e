"""``m2m bus``: the bus (NSQ) from the command line.

``m2m bus stats`` shows what each of the platform's topics and channels holds, summed over
every nsqd (see :mod:`m2m.bus.nsqd_stats`), and exits 3 when one holds more than
``nsq.max_depth``: a consumer is down or too slow, or nobody reads the topic. ``m2m bus
tail TOPIC`` prints a topic's messages as they come, on a channel of its own.

``m2m bus dead ls TOPIC`` lists the messages a consumer of TOPIC parked after they kept
failing unexpectedly (see :mod:`m2m.bus.dead_letters`), oldest first; ``m2m bus dead
replay TOPIC`` sends them back to the channels that failed them, once the cause is
fixed. Topics are the platform's own names (``storage``, ``converter-m2mp``…), without
``nsq.topic_prefix``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, TypeVar

import click
import nsq

from m2m.bus.consumer import OUTPUT_BUFFER_TIMEOUT_MS
from m2m.bus.dead_letters import (
    DEAD_TOPIC_SUFFIX,
    MAX_HELD,
    BusUnreachableError,
    DeadLetters,
    Held,
    dead_topic,
    until_subscribed,
)
from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.bus.nsqd_stats import BusStats, TooDeep, TopicStats, read_stats_now, too_deep
from m2m.bus.publisher import Publisher
from m2m.cli.app import PROBLEMS_FOUND, App, OneLineErrors, pass_app
from m2m.cli.output import json_option, print_rows
from m2m.cli.push import mute_bus_libraries
from m2m.config import NsqConfig
from m2m.text import unix_time_text

F = TypeVar("F", bound=Callable[..., Any])

EPHEMERAL: Final = "#ephemeral"

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,59}")
"""An NSQ topic name has at most 64 characters, and ``.dead`` takes five."""
_CHANNEL = re.compile(rf"(?=.{{1,64}}$)[A-Za-z0-9._-]+(?:{EPHEMERAL})?")
"""An NSQ channel name: at most 64 characters, ``#ephemeral`` included."""
STATS_COUNTS = ("depth", "in_flight", "deferred", "requeued", "timed_out", "clients", "messages")
"""The counts ``bus stats`` shows; a topic's own row has only depth and messages."""
TAIL_IN_FLIGHT = 100
"""Messages nsqd may send ``bus tail`` before it finished printing the first."""
SHOWN_BYTES = 100
"""What ``bus tail`` shows of a message that is not an envelope."""


class TopicParam(click.ParamType):
    name = "TOPIC"

    def __init__(self, dead_ok: bool = False) -> None:
        self.dead_ok = dead_ok
        """Whether ``TOPIC.dead`` is taken as it is (not for ``dead``: its TOPIC has them)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if not _TOPIC.fullmatch(text):
            self.fail(f"{text!r} is not a topic name (letters, digits, '.', '_', '-')", param, ctx)
        if text.endswith(DEAD_TOPIC_SUFFIX) and not self.dead_ok:
            self.fail(f"name the topic whose dead letters you want, not {text!r}", param, ctx)
        return text


class ChannelParam(click.ParamType):
    name = "CHANNEL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if not _CHANNEL.fullmatch(text):
            self.fail(
                f"{text!r} is not a channel name (letters, digits, '.', '_', '-', then "
                f"{EPHEMERAL} if it is to go with its last reader; 64 characters at most)",
                param,
                ctx,
            )
        return text


@click.group(cls=OneLineErrors)
def bus() -> None:
    """The bus (NSQ): what its topics hold, their messages, and those parked as dead letters."""


@bus.command("stats")
@click.option(
    "--max-depth",
    type=click.IntRange(min=0),
    metavar="N",
    default=None,
    help="Flag what holds more than N messages (default: nsq.max_depth).",
)
@json_option
@pass_app
def stats(app: App, max_depth: int | None, as_json: bool) -> None:
    """What each topic of the platform and its channels hold, summed over every nsqd.

    A topic's own row (CHANNEL -) counts what the topic holds itself: messages no channel
    took yet, all of them while it has no channel. Exit 3 when something holds more than
    the bound (one line on stderr each says what it means), or an nsqd or nsqlookupd did
    not answer; exit 1 when no nsqd did.
    """
    config = app.config.nsq
    bound = config.max_depth if max_depth is None else max_depth
    found = read_stats_now(config)
    if not found.nsqd:
        raise BusUnreachableError(_no_nsqd(config, found))
    deep = too_deep(found.topics, bound)
    print_rows(_stats_rows(found.topics, deep), as_json)
    click.echo(
        f"{len(found.topics)} topic(s) on {len(found.nsqd)} nsqd: {', '.join(found.nsqd)}",
        err=True,
    )
    for failure in found.failures:
        click.echo(failure, err=True)
    for problem in deep:
        click.echo(str(problem), err=True)
    if deep or found.failures:
        sys.exit(PROBLEMS_FOUND)


def _no_nsqd(config: NsqConfig, found: BusStats) -> str:
    if found.failures:
        return f"no nsqd answered: {'; '.join(found.failures)}"
    if not config.lookupd_http_addresses:
        return "nsq.lookupd_http_addresses is empty: no nsqd to ask"
    return f"nsqlookupd ({', '.join(config.lookupd_http_addresses)}) knows no nsqd"


def _stats_rows(topics: Iterable[TopicStats], deep: list[TooDeep]) -> list[dict[str, Any]]:
    """A row for each topic (what it holds itself), then one for each of its channels."""
    flagged = {(problem.topic, problem.channel) for problem in deep}
    rows = []
    for topic in topics:
        for channel, counted in [(None, topic), *((c.name, c) for c in topic.channels)]:
            counts = {name: getattr(counted, name, None) for name in STATS_COUNTS}
            too_deep = (topic.name, channel) in flagged
            rows.append({"topic": topic.name, "channel": channel, **counts, "too_deep": too_deep})
    return rows


@bus.command("tail")
@click.argument("topic", type=TopicParam(dead_ok=True))
@click.option(
    "--channel",
    type=ChannelParam(),
    default=None,
    help="Read this durable channel instead of an ephemeral one: nothing is dropped, but "
    "it stays, keeping every message of TOPIC, until deleted (nsqd's /channel/delete). "
    "A channel a worker reads would share its messages with tail: do not name one.",
)
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Stop after N messages.",
)
@json_option
@pass_app
def tail(app: App, topic: str, channel: str | None, count: int | None, as_json: bool) -> None:
    """Print TOPIC's messages as they come, until Ctrl-C (or N of them).

    TOPIC is the platform's name (storage, events, converter-m2mp, storage.dead…). Each
    message is a line: its time (UTC), topic, call, _to when it names more than the
    topic, and its fields as JSON.

    tail reads a channel of its own, tail-<8 hex digits>#ephemeral, which nsqd deletes when
    tail stops. On an nsqd run with --mem-queue-size=0 (the local stack and deploy/), an
    ephemeral channel holds no message: those that come while tail is not ready for them
    (busy printing one) are dropped. --channel reads a durable channel instead.
    """
    mute_bus_libraries()
    reading = _Tail(topic, count, as_json)
    try:
        asyncio.run(reading.run(app.config.nsq, channel or _ephemeral_channel()))
    finally:
        if reading.pipe_closed:  # `m2m bus tail … | head`: nothing more to say, to anyone
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _ephemeral_channel() -> str:
    return f"tail-{secrets.token_hex(4)}{EPHEMERAL}"


class _Tail:
    """Prints the messages of one topic as they come, up to ``count`` of them."""

    def __init__(self, topic: str, count: int | None, as_json: bool) -> None:
        self.topic = topic
        self.count = count
        self.as_json = as_json
        self.printed = 0
        self.pipe_closed = False
        self._done = asyncio.Event()

    async def run(self, config: NsqConfig, channel: str) -> None:
        """Until ``count`` messages were printed, or SIGINT/SIGTERM."""
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, self._done.set)
        reader = nsq.Reader(
            topic=config.topic_prefix + self.topic,
            channel=channel,
            message_handler=self._on_message,
            nsqd_tcp_addresses=list(config.nsqd_tcp_addresses),
            lookupd_http_addresses=list(config.lookupd_http_addresses),
            lookupd_poll_interval=config.lookupd_poll_interval,
            max_in_flight=min(self.count or TAIL_IN_FLIGHT, TAIL_IN_FLIGHT),
            max_tries=0,
            output_buffer_timeout=OUTPUT_BUFFER_TIMEOUT_MS,
        )
        try:
            await until_subscribed(reader, config)
            click.echo(f"following {self.topic} on channel {channel}", err=True)
            await self._done.wait()
        finally:
            reader.close()

    def _on_message(self, message: nsq.Message) -> bool | None:
        if self._done.is_set():  # more than asked for came meanwhile: not ours to take
            message.enable_async()
            message.requeue(backoff=False, time_ms=0)
            return None
        try:
            self._print(message)
        except BrokenPipeError:
            self.pipe_closed = True
            self._done.set()
            return False
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self._done.set()
        return True

    def _print(self, message: nsq.Message) -> None:
        try:
            envelope = Envelope.from_json(message.body)
        except InvalidMessage:
            received = unix_time_text(message.timestamp // 1_000_000_000)
            more = "…" if len(message.body) > SHOWN_BYTES else ""
            shown = f"{message.body[:SHOWN_BYTES]!r}{more}"
            click.echo(f"{received} {self.topic} (not an envelope) {shown}", err=self.as_json)
            return
        click.echo(envelope.to_json().decode() if self.as_json else tail_line(self.topic, envelope))


def tail_line(topic: str, envelope: Envelope) -> str:
    """How ``bus tail`` shows a message to a person: one line."""
    sent = unix_time_text(int(envelope.time))
    to = "" if envelope.to == topic else f" to={envelope.to}"
    fields = json.dumps(envelope.fields, separators=(",", ":"), ensure_ascii=False)
    return f"{sent} {topic} {envelope.call}{to} {fields}"


@bus.group(cls=OneLineErrors)
def dead() -> None:
    """Messages a consumer of TOPIC parked on TOPIC.dead after failing unexpectedly."""


def limit_option(command: F) -> F:
    """``-n/--limit``: how many dead letters one command takes at most."""
    return click.option(
        "-n",
        "--limit",
        type=click.IntRange(1, MAX_HELD),
        default=MAX_HELD,
        show_default=True,
        help="Take at most this many (they are held in flight meanwhile).",
    )(command)


@dead.command("ls")
@click.argument("topic", type=TopicParam())
@limit_option
@json_option
@pass_app
def dead_ls(app: App, topic: str, limit: int, as_json: bool) -> None:
    """List TOPIC's dead letters, oldest first, and why each was parked (they stay)."""
    held = _run(lambda: DeadLetters(app.config.nsq, topic).list(limit))
    rows = [
        {
            "parked": unix_time_text(letter.parked_at),
            "channel": letter.channel,
            "call": letter.envelope.call,
            "attempts": letter.attempts,
            "reason": letter.reason,
            **({"message": json.loads(letter.envelope.to_json())} if as_json else {}),
        }
        for letter, _ in held.letters
    ]
    print_rows(rows, as_json)
    _summary(held, topic, limit, "")


@dead.command("replay")
@click.argument("topic", type=TopicParam())
@limit_option
@pass_app
def dead_replay(app: App, topic: str, limit: int) -> None:
    """Send TOPIC's dead letters back to the channels that failed them, and drop them."""
    config = app.config.nsq

    async def replay() -> Held:
        publisher = Publisher(config, retry_delay=0.05)
        publisher.start()
        try:
            return await DeadLetters(config, topic).replay(publisher, limit)
        finally:
            publisher.close()

    held = _run(replay)
    _summary(held, topic, limit, "replayed ")


def _run(work: Callable[[], Coroutine[Any, Any, Held]]) -> Held:
    mute_bus_libraries()
    return asyncio.run(work())


def _summary(held: Held, topic: str, limit: int, done: str) -> None:
    count = len(held.letters)
    click.echo(f"{done}{count} dead letter(s) of {topic} ({dead_topic(topic)})", err=True)
    if count + len(held.unreadable) >= limit:
        click.echo(f"the first {limit} only: more may wait", err=True)
    if held.unreadable:
        click.echo(
            f"{len(held.unreadable)} message(s) on {dead_topic(topic)} are not dead letters "
            "(left in place)",
            err=True,
        )
