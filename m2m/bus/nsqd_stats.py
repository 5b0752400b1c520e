"""What the platform's topics hold, from every nsqd's statistics.

Which nsqd: those the lookup daemons (``nsq.lookupd_http_addresses``) know, each read
over HTTP (``/stats?format=json``). The counts of a topic or channel are summed over the
nsqd that have it, and only the platform's topics are kept (``nsq.topic_prefix``: test
runs and staging platforms share one NSQ cluster), named as the platform names them,
without the prefix.

A topic holds messages itself only while nothing takes them from it: while it has no
channel (nsqd keeps everything for the first channel to come) or is paused. A channel
holds those its consumers have not taken yet. Either growing past ``nsq.max_depth``
means a consumer is down or too slow, or nobody reads what is published:
:func:`too_deep` says which, for ``m2m bus stats``, ``m2m status`` and the web service.

The fetch is synchronous (for the commands) with an asyncio form (:func:`read_stats`);
reading the JSON is pure.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from m2m.config import NsqConfig

HTTP_TIMEOUT = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class ChannelStats:
    name: str
    depth: int
    """Messages waiting for a consumer (in memory and on disk)."""
    in_flight: int
    """Sent to a consumer, not finished yet."""
    deferred: int
    """Requeued with a delay, waiting for it to pass."""
    requeued: int
    timed_out: int
    clients: int
    """Consumers connected: none means nobody reads what the channel keeps."""
    messages: int
    """Messages the channel received since nsqd started."""
    paused: bool = False


@dataclass(frozen=True)
class TopicStats:
    name: str
    """As the platform names it (without ``nsq.topic_prefix``)."""
    depth: int
    """Messages the topic holds itself (no channel to take them, or paused)."""
    messages: int
    """Messages published since nsqd started."""
    channels: tuple[ChannelStats, ...]
    paused: bool = False


@dataclass(frozen=True)
class BusStats:
    topics: tuple[TopicStats, ...]
    """The platform's topics, summed over the nsqd that answered, by name."""
    nsqd: tuple[str, ...]
    """The nsqd (HTTP addresses) whose statistics were read."""
    nsqd_failures: Mapping[str, str]
    """nsqd → why it could not be read, or the trouble it reports (its ``health``)."""
    lookupd: Mapping[str, int]
    """Each lookup daemon that answered → how many nsqd it knows."""
    lookupd_failures: Mapping[str, str]
    """Each lookup daemon that could not be read → why."""

    @property
    def failures(self) -> list[str]:
        """One line for each daemon that did not answer or is unwell."""
        return [
            *(f"nsqlookupd {address}: {why}" for address, why in self.lookupd_failures.items()),
            *(f"nsqd {address}: {why}" for address, why in self.nsqd_failures.items()),
        ]


@dataclass(frozen=True)
class TooDeep:
    """A topic or channel holding more than the bound, and what that means."""

    topic: str
    channel: str | None
    depth: int
    why: str

    def __str__(self) -> str:
        where = self.topic if self.channel is None else f"{self.topic}/{self.channel}"
        return f"{where}: {self.why}"


def read_stats_now(config: NsqConfig) -> BusStats:
    """The platform's topics on every nsqd the lookup daemons know (blocking).

    Daemons that do not answer are in the result's failures; nothing is raised.
    """
    lookupd_failures: dict[str, str] = {}
    lookupd: dict[str, int] = {}
    nsqds: set[str] = set()
    for address in config.lookupd_http_addresses:
        try:
            found = _read(f"http://{address}/nodes", nsqd_addresses)
        except _Unreadable as exc:
            lookupd_failures[address] = str(exc)
            continue
        lookupd[address] = len(found)
        nsqds |= found
    read, per_nsqd, nsqd_failures = [], [], {}
    for address in sorted(nsqds):
        url = f"http://{address}/stats?format=json&include_clients=false"
        try:
            health, topics = _read(url, lambda stats: _health_and_topics(stats, config))
        except _Unreadable as exc:
            nsqd_failures[address] = str(exc)
            continue
        if health != "OK":  # e.g. it cannot write its disk queue
            nsqd_failures[address] = f"unwell: {health}"
        read.append(address)
        per_nsqd.append(topics)
    return BusStats(summed(per_nsqd), tuple(read), nsqd_failures, lookupd, lookupd_failures)


def _health_and_topics(stats: Mapping[str, Any], config: NsqConfig) -> tuple[str, list[TopicStats]]:
    return str(stats.get("health", "OK")), platform_topics(stats, config.topic_prefix)


async def read_stats(config: NsqConfig) -> BusStats:
    """:func:`read_stats_now`, off the event loop."""
    return await asyncio.to_thread(read_stats_now, config)


def nsqd_addresses(nodes: Mapping[str, Any]) -> set[str]:
    """The HTTP addresses of the nsqd in nsqlookupd's ``/nodes`` answer."""
    addresses = set()
    for producer in nodes.get("producers") or []:
        host = str(producer["broadcast_address"])
        host = f"[{host}]" if ":" in host else host
        addresses.add(f"{host}:{int(producer['http_port'])}")
    return addresses


def platform_topics(stats: Mapping[str, Any], prefix: str) -> list[TopicStats]:
    """The topics named ``prefix…`` in one nsqd's ``/stats?format=json``, prefix removed."""
    return [
        TopicStats(
            name=topic["topic_name"][len(prefix) :],
            depth=int(topic["depth"]),
            messages=int(topic["message_count"]),
            channels=tuple(_channel(channel) for channel in topic.get("channels") or []),
            paused=bool(topic.get("paused")),
        )
        for topic in stats.get("topics") or []
        if topic["topic_name"].startswith(prefix)
    ]


def _channel(channel: Mapping[str, Any]) -> ChannelStats:
    return ChannelStats(
        name=channel["channel_name"],
        depth=int(channel["depth"]),
        in_flight=int(channel["in_flight_count"]),
        deferred=int(channel["deferred_count"]),
        requeued=int(channel["requeue_count"]),
        timed_out=int(channel["timeout_count"]),
        clients=int(channel["client_count"]),
        messages=int(channel["message_count"]),
        paused=bool(channel.get("paused")),
    )


def summed(per_nsqd: Iterable[list[TopicStats]]) -> tuple[TopicStats, ...]:
    """One entry per topic (and channel) over all nsqd: counts added, names sorted.

    Paused anywhere is paused: some messages are held.
    """
    topics: dict[str, list[TopicStats]] = {}
    for stats in per_nsqd:
        for topic in stats:
            topics.setdefault(topic.name, []).append(topic)
    return tuple(_summed_topic(name, topics[name]) for name in sorted(topics))


def _summed_topic(name: str, copies: list[TopicStats]) -> TopicStats:
    channels: dict[str, list[ChannelStats]] = {}
    for topic in copies:
        for channel in topic.channels:
            channels.setdefault(channel.name, []).append(channel)
    return TopicStats(
        name=name,
        depth=sum(topic.depth for topic in copies),
        messages=sum(topic.messages for topic in copies),
        channels=tuple(_summed_channel(channels[channel]) for channel in sorted(channels)),
        paused=any(topic.paused for topic in copies),
    )


def _summed_channel(copies: list[ChannelStats]) -> ChannelStats:
    return ChannelStats(
        name=copies[0].name,
        depth=sum(channel.depth for channel in copies),
        in_flight=sum(channel.in_flight for channel in copies),
        deferred=sum(channel.deferred for channel in copies),
        requeued=sum(channel.requeued for channel in copies),
        timed_out=sum(channel.timed_out for channel in copies),
        clients=sum(channel.clients for channel in copies),
        messages=sum(channel.messages for channel in copies),
        paused=any(channel.paused for channel in copies),
    )


def too_deep(topics: Iterable[TopicStats], max_depth: int) -> list[TooDeep]:
    """The topics and channels holding more than ``max_depth`` messages, and why it matters."""
    found = []
    for topic in topics:
        if topic.depth > max_depth:
            found.append(TooDeep(topic.name, None, topic.depth, _topic_why(topic)))
        for channel in topic.channels:
            if channel.depth > max_depth:
                found.append(
                    TooDeep(topic.name, channel.name, channel.depth, _channel_why(channel))
                )
    return found


def _topic_why(topic: TopicStats) -> str:
    held = f"{topic.depth:,} messages held by the topic itself"
    if topic.paused:
        return f"{held}: the topic is paused (nsqd unpauses it with /topic/unpause)"
    if not topic.channels:
        return f"{held}: no channel reads it, so nsqd keeps every message it gets"
    return f"{held}: its channels do not take them"


def _channel_why(channel: ChannelStats) -> str:
    waiting = f"{channel.depth:,} messages waiting"
    if channel.paused:
        return f"{waiting}: the channel is paused (nsqd unpauses it with /channel/unpause)"
    if channel.clients == 0:
        return (
            f"{waiting} and no consumer connected: its worker is down, or the channel is "
            "left over (delete it, or it keeps every message of the topic)"
        )
    return f"{waiting}: its {channel.clients} consumer(s) do not keep up"


class _Unreadable(Exception):
    """A daemon did not answer, or not as nsqd and nsqlookupd do; the message says which."""


def _read(url: str, parse: Callable[[Any], T]) -> T:
    """``GET url``'s JSON, parsed; :class:`_Unreadable` if either fails."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        raise _Unreadable(f"answers HTTP {exc.code} to {url}") from exc
    except (OSError, ValueError) as exc:
        raise _Unreadable(f"does not answer: {failure_text(exc)}") from exc
    try:
        return parse(document)
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        raise _Unreadable(f"does not answer as NSQ does: {exc!r:.100}") from exc


def failure_text(exc: Exception) -> str:
    """One line for a request that failed: the socket's reason, not urllib's wrapping."""
    reason = getattr(exc, "reason", exc)  # a URLError wraps what the socket raised
    if isinstance(reason, OSError) and reason.strerror:
        return str(reason.strerror)
    return str(reason) or type(reason).__name__
