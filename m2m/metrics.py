"""The platform's Prometheus metrics, every one named here and counted where it happens.

Names follow Prometheus's conventions: ``m2m_`` first, ``_total`` for counters, base units
(``_seconds``, ``_bytes``). Each ``m2m serve`` process counts its own; ``metrics.listen``
exposes them (:mod:`m2m.operations`), with the Python process's own (CPU, memory, file
descriptors, garbage collections). What the publisher and the consumers already count on
themselves is read when Prometheus scrapes (:class:`BusCollector`), so their hot paths
pay nothing for it. Hot paths use children bound once to their labels (``.labels()`` is
a dictionary lookup under a lock).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from m2m.bus.nsqd_stats import read_stats
from m2m.config import NsqConfig

if TYPE_CHECKING:
    from m2m.bus.consumer import Consumer
    from m2m.bus.publisher import Publisher

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip
"""Seconds: from half a millisecond (a loopback round trip) to a request's timeout."""
AGE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
"""Seconds a message waited on the bus: milliseconds when all is well, minutes in a backlog."""

# -- receivers ------------------------------------------------------------------------------
CONNECTIONS_OPEN = Gauge(
    "m2m_connections_open", "Device connections open.", ["protocol"]
)  # fmt: skip
CONNECTIONS_IDENTIFIED = Gauge(
    "m2m_connections_identified", "Open device connections whose device identified.",
    ["protocol"],
)  # fmt: skip
CONNECTIONS_ACCEPTED = Counter(
    "m2m_connections_accepted_total", "Device connections accepted.", ["protocol"]
)
CONNECTIONS_REFUSED = Counter(
    "m2m_connections_refused_total",
    "Device connections refused at once (the receiver's or an address's limit).",
    ["protocol"],
)
CONNECTIONS_CLOSED = Counter(
    "m2m_connections_closed_total",
    "Device connections the receiver closed for a cause (not the device's own close).",
    ["protocol", "cause"],
)
FRAMES_RECEIVED = Counter(
    "m2m_frames_received_total",
    "Frames (M2MP) and lines (ALIP) received from devices, by kind.",
    ["protocol", "kind"],
)
RECEIVED_BYTES = Counter(
    "m2m_received_bytes_total", "Bytes received from devices.", ["protocol"]
)  # fmt: skip
DECODE_ERRORS = Counter(
    "m2m_decode_errors_total",
    "Frames or lines from devices that could not be decoded or were refused.",
    ["protocol"],
)
SETTINGS_PUSHED = Counter(
    "m2m_settings_pushed_total", "Settings sent to devices.", ["protocol"]
)  # fmt: skip
SETTINGS_ACKNOWLEDGED = Counter(
    "m2m_settings_acknowledged_total", "Settings devices acknowledged.", ["protocol"]
)
COMMANDS_PUSHED = Counter(
    "m2m_commands_pushed_total", "Commands sent to devices.", ["protocol"]
)  # fmt: skip
COMMANDS_ACKNOWLEDGED = Counter(
    "m2m_commands_acknowledged_total", "Commands devices acknowledged.", ["protocol"]
)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class ReceiverMetrics:
    """One protocol's receiver metrics, bound to its label once."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.open = CONNECTIONS_OPEN.labels(protocol)
        self.identified = CONNECTIONS_IDENTIFIED.labels(protocol)
        self.accepted = CONNECTIONS_ACCEPTED.labels(protocol)
        self.refused = CONNECTIONS_REFUSED.labels(protocol)
        self.received_bytes = RECEIVED_BYTES.labels(protocol)
        self.decode_errors = DECODE_ERRORS.labels(protocol)
        self.settings_pushed = SETTINGS_PUSHED.labels(protocol)
        self.settings_acknowledged = SETTINGS_ACKNOWLEDGED.labels(protocol)
        self.commands_pushed = COMMANDS_PUSHED.labels(protocol)
        self.commands_acknowledged = COMMANDS_ACKNOWLEDGED.labels(protocol)
        self._frames: dict[type, Counter] = {}

    def received(self, what: object) -> None:
        """Count a frame or line received, its kind named by its class (``data_array``)."""
        counter = self._frames.get(type(what))
        if counter is None:
            kind = _snake_case(type(what).__name__)
            counter = self._frames[type(what)] = FRAMES_RECEIVED.labels(self.protocol, kind)
        counter.inc()

    def closed(self, cause: str) -> None:
        CONNECTIONS_CLOSED.labels(self.protocol, cause).inc()


# -- the bus ------------------------------------------------------------------------------
PUBLISH_LATENCY = Histogram(
    "m2m_publish_latency_seconds",
    "From a message's acceptance by the publisher to nsqd's acknowledgement (one "
    "observation per PUB or MPUB: its oldest message).",
    buckets=LATENCY_BUCKETS,
)
MESSAGE_AGE = Histogram(
    "m2m_consumer_message_age_seconds",
    "Age of a message (since nsqd took it) when its consumer starts handling it: the lag.",
    ["topic", "channel"],
    buckets=AGE_BUCKETS,
)

# -- Cassandra ----------------------------------------------------------------------------
CASSANDRA_REQUESTS = Histogram(
    "m2m_cassandra_request_seconds",
    "Cassandra requests, by statement (verb and table), from sending to the answer.",
    ["statement"],
    buckets=LATENCY_BUCKETS,
)
CASSANDRA_ERRORS = Counter(
    "m2m_cassandra_request_errors_total",
    "Cassandra requests that failed: timeout, unavailable (an outage) or error (refused).",
    ["statement", "error"],
)
CASSANDRA_RETRIES = Counter(
    "m2m_cassandra_retries_total",
    "Requests sent again because the driver's connections were full (never sent before).",
)

# -- what is stored -------------------------------------------------------------------------
RECORDS_STORED = Counter("m2m_records_stored_total", "Time-series records written.")
BLOB_BYTES_STORED = Counter("m2m_blob_bytes_stored_total", "File (blob) bytes written.")

BUS_DEPTH = Gauge(
    "m2m_bus_depth_messages",
    "Messages waiting in nsqd on a channel this process consumes (summed over nsqd), "
    "read every DEPTH_INTERVAL seconds.",
    ["topic", "channel"],
)
DEPTH_INTERVAL: Final = 15.0

# -- health -------------------------------------------------------------------------------
READY = Gauge("m2m_ready", "1 when every readiness check of the process passes (/readyz).")
READY_CHECK = Gauge(
    "m2m_ready_check", "1 when the readiness check passes, 0 when it fails.", ["check"]
)

# -- the web service ----------------------------------------------------------------------
LIVE_STREAMS = Gauge("m2m_web_live_streams", "Browsers following the live events.")

_TABLE = re.compile(r"\b(?:FROM|INTO)\s+(?:\w+\.)?(\w+)|^\s*UPDATE\s+(?:\w+\.)?(\w+)", re.I)


def statement_label(cql: str) -> str:
    """``select registrynode``: the verb and table of a statement, a label of few values."""
    words = cql.split(None, 1)
    verb = words[0].lower() if words else "?"
    table = _TABLE.search(cql)
    return f"{verb} {(table.group(1) or table.group(2)).lower()}" if table else verb


class BusCollector(Collector):
    """The publisher's and consumers' own counts, read when Prometheus scrapes."""

    def __init__(self, publisher: Publisher, consumers: Iterable[Consumer]) -> None:
        self._publisher = publisher
        self._consumers = consumers

    def collect(self) -> Iterator[Metric]:
        stats = self._publisher.stats
        yield GaugeMetricFamily(
            "m2m_publisher_buffered_messages",
            "Messages accepted and not yet acknowledged by nsqd.",
            value=self._publisher.buffered,
        )
        yield GaugeMetricFamily(
            "m2m_publisher_in_flight_messages",
            "Messages in a PUB or MPUB out to nsqd.",
            value=self._publisher.in_flight,
        )
        for name, value, text in (
            ("accepted", stats.accepted, "Messages accepted for publishing."),
            ("published", stats.published, "Messages nsqd acknowledged."),
            ("dropped", stats.dropped, "Messages dropped: the publish buffer was full."),
            ("refused", stats.refused, "Messages nsqd refused for good (dropped)."),
        ):
            yield CounterMetricFamily(f"m2m_publisher_{name}_messages", text, value=value)
        yield CounterMetricFamily(
            "m2m_publisher_failed_batches",
            "PUBs or MPUBs that failed and were sent again.",
            value=stats.failed_batches,
        )
        consumed = [
            ("handled", "Messages handled and finished."),
            ("invalid", "Messages refused as invalid and finished."),
            ("skipped", "Messages addressed to another channel (finished)."),
            ("retries", "Attempts made again through an outage."),
            ("requeued", "Messages requeued after an unexpected failure."),
            ("dead", "Messages parked on the dead-letter topic."),
        ]
        families = {
            name: CounterMetricFamily(
                f"m2m_consumer_{name}_messages", text, labels=["topic", "channel"]
            )
            for name, text in consumed
        }
        handler = SummaryMetricFamily(
            "m2m_consumer_handler_seconds",
            "Time a consumer's handler took for a message, whatever the outcome (a sum and "
            "a count: the per-message cost of a histogram is the consumers' hot path).",
            labels=["topic", "channel"],
        )
        for consumer in self._consumers:
            labels = [consumer.topic, consumer.channel]
            counts = consumer.stats
            handler.add_metric(labels, counts.handler_calls, counts.handler_seconds)
            for name, value in (
                ("handled", counts.handled),
                ("invalid", counts.invalid),
                ("skipped", counts.skipped),
                ("retries", counts.retries),
                ("requeued", counts.requeued),
                ("dead", counts.dead),
            ):
                families[name].add_metric(labels, value)
        yield from families.values()
        yield handler


async def follow_bus_depths(config: NsqConfig, consumers: Iterable[Consumer]) -> None:
    """Keep ``m2m_bus_depth_messages`` of the consumed channels current (runs until
    cancelled): nsqd has no Prometheus endpoint of its own."""
    while True:
        stats = await read_stats(config)
        consumed = {(consumer.topic, consumer.channel) for consumer in consumers}
        for topic in stats.topics:
            for channel in topic.channels:
                if (topic.name, channel.name) in consumed:
                    BUS_DEPTH.labels(topic.name, channel.name).set(channel.depth)
        await asyncio.sleep(DEPTH_INTERVAL)


def watch_bus(publisher: Publisher, consumers: Iterable[Consumer]) -> BusCollector:
    """Register the bus's counts with the process's registry; unregister on stop."""
    collector = BusCollector(publisher, consumers)
    REGISTRY.register(collector)
    return collector


def unwatch(collector: Collector) -> None:
    REGISTRY.unregister(collector)
