"""Records up after an outage: how fast an edge site's backlog reaches the cloud.

Two nsqd of our own, the cloud's and the edge's, and a throw-away keyspace (the edge's
sync service keeps only its status there). First the
cloud's own ingest ceiling: N records published at once on its ``storage`` topic, stored
by ``m2m serve --only storage``. Then the catch-up: the same N records waiting on the
edge's ``storage/sync`` channel, as an outage leaves them, forwarded by
``m2m serve --only sync`` (``sync.catch_up_rate`` unbounded) while the cloud's storage
worker stores them. Both as records per second until the last one was stored, and the
catch-up as a ratio to the ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import urllib.request
import uuid
from pathlib import Path

from bench.keyspace import bench_workspace
from bench.receivers import HOST, Nsqd, Serve, channel_state, start_serve
from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.config import Config, dump_with_secrets, load_config
from m2m.stack import nsq
from m2m.stack.provision import nsq_artifact
from m2m.sync.status import SYNC_CHANNEL

SERIES = 1000
"""Records are spread over this many series, as a site's devices spread them."""
PUBLISH_BATCH = 5000
POLL = 0.5
UNBOUNDED = 1e9


def records(count: int) -> list[bytes]:
    """``count`` store_ts messages, each with the time UUID it was born with."""
    return [
        Envelope.make(
            topics.STORAGE, topics.STORE_TS, "bench/sync",
            key=f"bench-sync-{i % SERIES}", type="sen:temp",
            date_uuid=str(uuid.uuid1()), data=20 + i % 100 / 10,
        ).to_json()
        for i in range(count)
    ]  # fmt: skip


def publish(nsqd: Nsqd, topic: str, bodies: list[bytes]) -> None:
    for start in range(0, len(bodies), PUBLISH_BATCH):
        request = urllib.request.Request(
            f"http://{HOST}:{nsqd.http_port}/mpub?topic={topic}",
            data=b"\n".join(bodies[start : start + PUBLISH_BATCH]),
            method="POST",
        )
        urllib.request.urlopen(request, timeout=60).close()


def create_channel(nsqd: Nsqd, topic: str, channel: str) -> None:
    for path in (f"topic/create?topic={topic}", f"channel/create?topic={topic}&channel={channel}"):
        request = urllib.request.Request(f"http://{HOST}:{nsqd.http_port}/{path}", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


async def stored_rate(nsqd: Nsqd, already: int, count: int, serves: dict[str, Serve]) -> float:
    """Records a second the cloud's storage channel finished (beyond the ``already``
    finished before), from the first to the ``count``-th, with each serve's CPU per
    record; the serves stopped afterwards."""
    first: tuple[float, int] | None = None
    try:
        while True:
            state = channel_state(nsqd.stats(), topics.STORAGE, "storage")
            finished = (state.finished if state is not None else 0) - already
            now = time.perf_counter()
            if first is None and finished > 0:
                first = (now, finished)
            if finished >= count and first is not None:
                for name, serve in serves.items():
                    print(f"  {name} CPU/record: {serve.cpu_seconds() / count * 1e6:.0f} µs")
                return (finished - first[1]) / (now - first[0])
            for serve in serves.values():
                if serve.process.poll() is not None:
                    raise RuntimeError(f"m2m serve stopped:\n{serve.log.read_text()[-3000:]}")
            await asyncio.sleep(POLL)
    finally:
        for serve in serves.values():
            serve.stop()


async def run(config: Config, count: int, directory: Path) -> None:
    binary = nsq_artifact(config.stack.cache_dir.expanduser(), config.stack.nsq_version).home
    binary = binary / "bin" / "nsqd"
    settings = dump_with_secrets(config, exclude_defaults=True)
    bodies = records(count)

    cloud = Nsqd(binary, directory, nsq.OPTIONS)
    edge = Nsqd(binary, directory, nsq.OPTIONS)
    try:
        print(f"ceiling: {count:,} records published on the cloud's storage topic", flush=True)
        create_channel(cloud, topics.STORAGE, "storage")
        await asyncio.to_thread(publish, cloud, topics.STORAGE, bodies)
        storage = start_serve(settings, cloud, directory, "storage", None)
        ceiling = await stored_rate(cloud, 0, count, {"storage": storage})
        print(f"  stored: {ceiling:,.0f} records/s", flush=True)

        print(f"catch-up: {count:,} records waiting on the edge's storage/sync", flush=True)
        create_channel(edge, topics.STORAGE, SYNC_CHANNEL)
        await asyncio.to_thread(publish, edge, topics.STORAGE, bodies)
        edge_settings = {
            **settings,
            "sync": {
                "upstream": {"nsqd_tcp_addresses": [cloud.tcp_address]},
                "catch_up_rate": UNBOUNDED,
            },
        }
        storage = start_serve(settings, cloud, directory, "storage", None)
        sync = start_serve(edge_settings, edge, directory, "sync", None)
        catch_up = await stored_rate(cloud, count, count, {"storage": storage, "sync": sync})
        left = channel_state(edge.stats(), topics.STORAGE, SYNC_CHANNEL)
        print(f"  stored: {catch_up:,.0f} records/s; left on the edge: "
              f"{left.unfinished if left else 'no channel'}", flush=True)  # fmt: skip
        print(json.dumps({
            "records": count,
            "ceiling_per_s": round(ceiling),
            "catch_up_per_s": round(catch_up),
            "catch_up_over_ceiling": round(catch_up / ceiling, 3),
        }))  # fmt: skip
    finally:
        cloud.stop()
        edge.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: as the m2m command)")
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="the backlog (default 1,000,000)")  # fmt: skip
    arguments = parser.parse_args()
    with bench_workspace(load_config(arguments.config), "m2m-bench-") as (config, directory):
        print(f"keyspace {config.cassandra.keyspace}, {os.cpu_count()} CPUs", flush=True)
        asyncio.run(run(config, arguments.records, directory))


if __name__ == "__main__":
    main()
