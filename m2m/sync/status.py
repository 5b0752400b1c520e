"""The uplink as ``m2m sync status`` shows it.

The sync service writes what only it knows (whether the cloud's nsqd is connected, how many
records it forwarded, when the oldest record it holds was published) to a hidden registry
node every ``sync.status_interval``; the backlog is what the edge's nsqd holds on the sync
channel, read when asked. A status older than three intervals means the service is not
running: the backlog then only grows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from m2m.bus import topics
from m2m.bus.nsqd_stats import read_stats_now
from m2m.cassandra import Database, run_with_database
from m2m.config import Config, NsqConfig, SyncConfig
from m2m.registry.node import RegistryNode
from m2m.sync.forwarder import RecordForwarder

STATUS_NODE = "/.sync/uplink/"
SYNC_CHANNEL = "sync"
"""The sync service's channel on the edge's ``storage`` topic."""
STALE_INTERVALS = 3


@dataclass(frozen=True)
class UplinkStatus:
    upstream: str
    """The cloud's nsqd addresses."""
    connected: bool
    forwarded: int
    """Records forwarded since the service started."""
    oldest_waiting: float | None
    """When the oldest record the service holds, unsent, was published (unix seconds)."""
    updated: float

    def values(self) -> dict[str, str]:
        oldest = "" if self.oldest_waiting is None else repr(self.oldest_waiting)
        return {
            "upstream": self.upstream,
            "connected": "true" if self.connected else "false",
            "forwarded": str(self.forwarded),
            "oldest_waiting": oldest,
            "updated": repr(self.updated),
        }

    @classmethod
    def of_values(cls, values: dict[str, str]) -> UplinkStatus:
        oldest = values.get("oldest_waiting", "")
        return cls(
            upstream=values.get("upstream", ""),
            connected=values.get("connected") == "true",
            forwarded=int(values.get("forwarded", "0")),
            oldest_waiting=float(oldest) if oldest else None,
            updated=float(values.get("updated", "0")),
        )

    def is_stale(self, interval: float, now: float) -> bool:
        return now - self.updated > STALE_INTERVALS * interval


async def report_status(database: Database, forwarder: RecordForwarder, config: SyncConfig) -> None:
    """Write the uplink's status every ``sync.status_interval``, until cancelled."""
    assert config.upstream is not None
    node = RegistryNode(database, STATUS_NODE)
    await node.check()
    while True:
        status = UplinkStatus(
            upstream=", ".join(config.upstream.nsqd_tcp_addresses),
            connected=forwarder.upstream.connected,
            forwarded=forwarder.forwarded,
            oldest_waiting=forwarder.oldest_waiting,
            updated=time.time(),
        )
        await node.set_values(status.values())
        await asyncio.sleep(config.status_interval)


async def read_status(database: Database) -> UplinkStatus | None:
    values = await RegistryNode(database, STATUS_NODE).values()
    return UplinkStatus.of_values(values) if values else None


CONNECTED = "connected"


@dataclass(frozen=True)
class UplinkReport:
    """The uplink as a person is told about it (``m2m sync status``, ``m2m status``)."""

    upstream: str
    state: str
    """``connected``, ``disconnected``, or why nobody knows (the service is not running)."""
    backlog: int | None
    """Records waiting on the edge's nsqd; None when it has no sync channel yet."""
    oldest_unsent: float | None
    """Seconds the oldest record waiting has waited, if any waits."""
    forwarded: int

    @property
    def ok(self) -> bool:
        return self.state == CONNECTED


def uplink_report(config: Config) -> UplinkReport:
    """Read the sync service's status and the edge's backlog now (blocking)."""
    sync = config.sync
    assert sync.upstream is not None
    found = run_with_database(config.cassandra, read_status)
    waiting = backlog(config.nsq)
    now = time.time()
    oldest = found.oldest_waiting if found is not None and waiting else None
    return UplinkReport(
        upstream=", ".join(sync.upstream.nsqd_tcp_addresses),
        state=_state(found, sync.status_interval, now),
        backlog=waiting,
        oldest_unsent=None if oldest is None else round(now - oldest, 1),
        forwarded=found.forwarded if found is not None else 0,
    )


def _state(found: UplinkStatus | None, interval: float, now: float) -> str:
    if found is None:
        return "sync service never ran"
    if found.is_stale(interval, now):
        return f"sync service not running (last seen {now - found.updated:.0f} s ago)"
    return CONNECTED if found.connected else "disconnected"


def backlog(nsq: NsqConfig) -> int | None:
    """Records the edge's nsqd holds for the sync service (queued, in flight, deferred);
    None when no nsqd has its channel yet."""
    stats = read_stats_now(nsq)
    for topic in stats.topics:
        if topic.name == topics.STORAGE:
            for channel in topic.channels:
                if channel.name == SYNC_CHANNEL:
                    return channel.depth + channel.in_flight + channel.deferred
    return None
