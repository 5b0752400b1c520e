"""Live events as the browsers get them: who gets which, how a slow reader is told it missed
some, and the Server-Sent Events text itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.cassandra import Database
from m2m.registry.user import User
from m2m.web import live
from m2m.web.auth import Principal
from m2m.web.live import QUEUE_LIMIT, LiveEvent, LiveHub, Subscription
from m2m.web.liveness import MISSED_BEATS, ReceiverLiveness

NO_DATABASE = cast(Database, None)
"""For what never reads the registry."""
LAG_LIMIT = 5.0
HEARTBEAT = 1.0


def principal(domain_id: str | None, admin: bool = False) -> Principal:
    return Principal(User(NO_DATABASE, "user-id", "/user/"), "someone", admin, domain_id)


def event(device_id: str | None = "dev-1", domain_id: str | None = "dom-a") -> LiveEvent:
    return LiveEvent("record", device_id, domain_id, {"type": "sen:temp", "data": "21.5"})


def text_of(subscription: Subscription) -> AsyncGenerator[str, None]:
    """The stream's text, as the generator it is (closed by each test)."""
    return cast(AsyncGenerator[str, None], subscription.stream())


async def next_text(stream: AsyncIterator[str]) -> str:
    return await asyncio.wait_for(anext(stream), 1)


# --- The text --------------------------------------------------------------------------------


def test_an_event_is_its_name_and_one_line_of_json_with_its_device() -> None:
    text = LiveEvent("setting_acked", "dev-1", "dom-a", {"name": "period", "value": "a\nb"}).sse()
    assert text == (
        'event: setting_acked\ndata: {"device_id":"dev-1","name":"period","value":"a\\nb"}\n\n'
    )


def test_an_event_of_no_device_carries_its_data_alone() -> None:
    text = LiveEvent("receiver_lost", None, None, {"receiver": "r1"}).sse()
    assert text == 'event: receiver_lost\ndata: {"receiver":"r1"}\n\n'


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    kind=st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
    device_id=st.none() | st.uuids().map(str),
    data=st.dictionaries(st.text().filter(lambda key: key != "device_id"), JSON_VALUES),
)
def test_any_event_is_one_sse_message_that_reads_back(
    kind: str, device_id: str | None, data: dict[str, Any]
) -> None:
    text = LiveEvent(kind, device_id, "a-domain", data).sse()
    assert text.endswith("\n\n")
    # Any of \r\n, \n and \r ends a line for a browser: none may hide inside the data.
    name_line, data_line = text[:-2].replace("\r", "\n").split("\n")
    assert name_line == f"event: {kind}"
    expected = {"device_id": device_id, **data} if device_id else data
    assert json.loads(data_line.removeprefix("data: ")) == expected


# --- Who gets which --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "device_filter", "domain_filter", "wanted"),
    [
        (principal("dom-a"), None, None, True),
        (principal("dom-b"), None, None, False),
        (principal(None), None, None, False),
        (principal("dom-b", admin=True), None, None, True),
        (principal(None, admin=True), "dev-1", None, True),
        (principal(None, admin=True), "dev-2", None, False),
        (principal("dom-a"), "dev-2", None, False),
        (principal(None, admin=True), None, "dom-a", True),
        (principal(None, admin=True), None, "dom-b", False),
        (principal("dom-a"), "dev-1", "dom-a", True),
    ],
)
def test_a_stream_gets_the_events_its_user_may_see_and_its_filters_want(
    who: Principal, device_filter: str | None, domain_filter: str | None, wanted: bool
) -> None:
    subscription = Subscription(who, device_filter, domain_filter)
    assert subscription.wants(event("dev-1", "dom-a")) is wanted


def test_a_device_without_a_domain_is_seen_by_admins_only() -> None:
    assert not Subscription(principal("dom-a")).wants(event("dev-1", None))
    assert Subscription(principal(None, admin=True)).wants(event("dev-1", None))


@pytest.mark.parametrize("who", [principal("dom-b"), principal(None, admin=True)])
def test_events_of_no_device_reach_every_stream_whatever_its_filters(who: Principal) -> None:
    lost = LiveEvent("receiver_lost", None, None, {"receiver": "r1"})
    assert Subscription(who, "dev-9", "dom-z").wants(lost)


# --- A slow reader ---------------------------------------------------------------------------


async def test_a_stream_starts_with_its_retry_delay_then_sends_events_in_order() -> None:
    subscription = Subscription(principal("dom-a"))
    first, second = event("dev-1"), event("dev-2")
    subscription.offer(first)
    subscription.offer(second)
    async with aclosing(text_of(subscription)) as stream:
        assert await next_text(stream) == "retry: 2000\n\n"
        assert await next_text(stream) == first.sse()
        assert await next_text(stream) == second.sse()
        later = event("dev-3")
        subscription.offer(later)
        assert await next_text(stream) == later.sse()


async def test_events_past_the_queue_limit_are_counted_and_told_before_the_rest() -> None:
    subscription = Subscription(principal("dom-a"))
    events = [LiveEvent("record", "dev-1", "dom-a", {"n": n}) for n in range(QUEUE_LIMIT + 7)]
    for offered in events:
        subscription.offer(offered)
    assert subscription.skipped == 7
    async with aclosing(text_of(subscription)) as stream:
        assert await next_text(stream) == "retry: 2000\n\n"
        assert await next_text(stream) == 'event: skipped\ndata: {"count": 7}\n\n'
        sent = [await next_text(stream) for _ in range(QUEUE_LIMIT)]
        assert sent == [offered.sse() for offered in events[:QUEUE_LIMIT]]
        assert subscription.skipped == 0
        subscription.skip(2)
        assert await next_text(stream) == 'event: skipped\ndata: {"count": 2}\n\n'


async def test_a_closed_stream_ends() -> None:
    subscription = Subscription(principal("dom-a"))
    async with aclosing(text_of(subscription)) as stream:
        assert await next_text(stream) == "retry: 2000\n\n"
        subscription.close()
        with pytest.raises(StopAsyncIteration):
            await next_text(stream)


async def test_a_quiet_stream_sends_keep_alive_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "KEEPALIVE", 0.01)
    subscription = Subscription(principal("dom-a"))
    async with aclosing(text_of(subscription)) as stream:
        assert await next_text(stream) == "retry: 2000\n\n"
        assert await next_text(stream) == ": keep-alive\n\n"


# --- The hub, where it needs no registry -----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def hub_with(clock: Clock) -> LiveHub:
    return LiveHub(NO_DATABASE, ReceiverLiveness(HEARTBEAT, clock), LAG_LIMIT, clock)


def sent_at(at: float, call: str, **fields: Any) -> Envelope:
    return replace(Envelope.make(topics.EVENTS, call, "receivers/r", **fields), time=at)


def waiting(subscription: Subscription) -> list[LiveEvent]:
    """The events a stream holds for its browser."""
    return list(subscription._queue)


async def test_a_receiver_that_stops_beating_is_announced_lost_to_every_stream() -> None:
    clock = Clock()
    hub = hub_with(clock)
    streams = [Subscription(principal("dom-a")), Subscription(principal("dom-b"), "dev-1")]
    for subscription in streams:
        hub.subscribe(subscription)
    await hub.on_event(sent_at(clock.now, topics.RECEIVER_ALIVE, receiver="r1"))
    assert hub.liveness.alive("r1")
    hub.sweep()
    assert [waiting(subscription) for subscription in streams] == [[], []]
    clock.now += MISSED_BEATS * HEARTBEAT
    hub.sweep()
    hub.sweep()
    lost = LiveEvent("receiver_lost", None, None, {"receiver": "r1"})
    for subscription in streams:
        assert waiting(subscription) == [lost]


async def test_a_message_read_too_late_is_skipped_and_every_stream_told() -> None:
    clock = Clock()
    hub = hub_with(clock)
    streams = [Subscription(principal("dom-a")), Subscription(principal(None, admin=True))]
    for subscription in streams:
        hub.subscribe(subscription)
    at = clock.now - LAG_LIMIT - 1
    await hub.on_event(sent_at(at, topics.DEVICE_IDENTIFIED, device_id="dev-1"))
    assert hub.skipped_late == 1
    assert [subscription.skipped for subscription in streams] == [1, 1]
    hub.unsubscribe(streams[0])
    hub.close()
    assert hub.streams == 0 and streams[1].closed and not streams[0].closed
