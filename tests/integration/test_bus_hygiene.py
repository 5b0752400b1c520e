"""Topics and channels nobody reads do not fill nsqd: ``events`` is drained by the receivers
that publish it, and a crashed web service's live-feed channels are deleted by the next."""

from __future__ import annotations

import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from m2m.bus import topics
from m2m.bus.nsqd_stats import TopicStats, read_stats
from m2m.config import load_config
from m2m.receivers.m2mp.client import M2MPClient
from m2m.services import EVENTS_DRAIN_CHANNEL, STORAGE_CHANNEL
from m2m.stack.nsq import HOST as NSQD_HOST
from m2m.stack.nsq import NSQD_HTTP_PORT
from tests.conftest import config_with_own_topics, eventually, start_platform


async def topic_stats(config_file: Path, name: str) -> TopicStats | None:
    stats = await read_stats(load_config(config_file).nsq)
    return next((topic for topic in stats.topics if topic.name == name), None)


def channel_names(topic: TopicStats | None) -> set[str]:
    return {channel.name for channel in topic.channels} if topic else set()


async def test_events_are_let_go_once_published(config_file: Path, tmp_path: Path) -> None:
    platform = start_platform(config_with_own_topics(config_file, tmp_path), tmp_path,
                              only="m2mp")  # fmt: skip
    try:
        for n in range(5):
            async with await M2MPClient.connect("127.0.0.1", platform.m2mp_port) as device:
                assert await device.identify(f"hygiene-{n}-{uuid.uuid4().hex[:8]}")
        events = await eventually(
            lambda: topic_stats(platform.config_file, topics.EVENTS),
            lambda found: (
                found is not None
                and found.messages >= 15  # connected, identified, disconnected each
                and found.depth == 0
                and all(channel.depth == 0 for channel in found.channels)
            ),
            "events published and none kept",
        )
        assert events is not None
        assert channel_names(events) == {EVENTS_DRAIN_CHANNEL}
    finally:
        platform.stop()


def nsqd_post(path: str, **query: str) -> None:
    url = f"http://{NSQD_HOST}:{NSQD_HTTP_PORT}{path}?{urllib.parse.urlencode(query)}"
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).close()


async def test_a_crashed_web_services_channels_are_deleted_by_the_next(
    config_file: Path, tmp_path: Path
) -> None:
    own_topics = config_with_own_topics(config_file, tmp_path)
    storage = load_config(own_topics).nsq.topic_prefix + topics.STORAGE
    nsqd_post("/topic/create", topic=storage)
    nsqd_post("/channel/create", topic=storage, channel="web-gone-host-8080")
    nsqd_post("/channel/create", topic=storage, channel=STORAGE_CHANNEL)
    assert "web-gone-host-8080" in channel_names(await topic_stats(own_topics, topics.STORAGE))

    platform = start_platform(own_topics, tmp_path, only="web")
    try:

        def own(names: set[str]) -> bool:
            return any(n.startswith("web-") and n.endswith(f"-{platform.web_port}") for n in names)

        left = await eventually(
            lambda: topic_stats(own_topics, topics.STORAGE),
            lambda found: (
                "web-gone-host-8080" not in channel_names(found) and own(channel_names(found))
            ),
            "the abandoned channel deleted, the running web service's there",
        )
        # The worker's channel stays too.
        assert STORAGE_CHANNEL in channel_names(left)
    finally:
        platform.stop()
