"""``m2m bus``: the bus (NSQ) from the command line.

``m2m bus dead ls TOPIC`` lists the messages a consumer of TOPIC parked after they kept
failing unexpectedly (see :mod:`m2m.bus.dead_letters`), oldest first; ``m2m bus dead
replay TOPIC`` sends them back to the channels that failed them, once the cause is
fixed. Topics are the platform's own names (``storage``, ``converter-m2mp``…), without
``nsq.topic_prefix``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from m2m.bus.dead_letters import DEAD_TOPIC_SUFFIX, MAX_HELD, DeadLetters, Held, dead_topic
from m2m.bus.publisher import Publisher
from m2m.cli.app import App, OneLineErrors, pass_app
from m2m.cli.output import json_option, print_rows
from m2m.cli.push import mute_bus_libraries
from m2m.text import unix_time_text

F = TypeVar("F", bound=Callable[..., Any])

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,59}")
"""An NSQ topic name has at most 64 characters, and ``.dead`` takes five."""


class TopicParam(click.ParamType):
    name = "TOPIC"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if not _TOPIC.fullmatch(text):
            self.fail(f"{text!r} is not a topic name (letters, digits, '.', '_', '-')", param, ctx)
        if text.endswith(DEAD_TOPIC_SUFFIX):
            self.fail(f"name the topic whose dead letters you want, not {text!r}", param, ctx)
        return text


@click.group(cls=OneLineErrors)
def bus() -> None:
    """The bus (NSQ): messages parked as dead letters."""


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
