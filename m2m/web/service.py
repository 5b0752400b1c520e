"""The ``web`` service: the API and console over HTTP, live events read from the bus.

It reads ``events``, ``storage`` and ``receivers`` on channels of its own, named by host
and port (``web-<host>-<port>``): durable like the receivers' (an ephemeral channel drops
messages with nsqd's memory queue off), and taken up again by the same service when it
restarts, which skips what went stale meanwhile (:mod:`m2m.web.live`). It deletes them
when it stops; those of a web service that crashed and never came back on its port are
deleted by the next web service to start: a ``web-`` channel no consumer reads would
otherwise keep every record of the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from m2m.bus import topics
from m2m.bus.channels import delete_channel, host_in_channel_name
from m2m.bus.consumer import Handler
from m2m.bus.nsqd_stats import read_stats
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.config import Config
from m2m.http_server import HTTPServer
from m2m.metrics import LIVE_STREAMS
from m2m.timeseries import TimeSeries
from m2m.web.app import create_app
from m2m.web.auth import Authenticator, session_key
from m2m.web.context import WebContext
from m2m.web.live import LiveHub
from m2m.web.liveness import ReceiverLiveness

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "web-"
SWEEP_INTERVAL = 5.0
"""Seconds between looks for receivers that stopped beating."""


class WebService:
    def __init__(self, config: Config, database: Database, publisher: Publisher) -> None:
        self._config = config
        self._database = database
        self._publisher = publisher
        liveness = ReceiverLiveness(config.receivers.timing.heartbeat_interval)
        self.live = LiveHub(database, liveness, config.web.live_lag_limit)
        LIVE_STREAMS.set_function(lambda: self.live.streams)
        self._server: HTTPServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Serve HTTP; the port served on."""
        authenticator = Authenticator(
            self._database,
            await session_key(self._database),
            self._config.web.session_hours * 3600,
        )
        context = WebContext(
            config=self._config,
            database=self._database,
            publisher=self._publisher,
            auth=authenticator,
            live=self.live,
            timeseries=TimeSeries(self._database),
        )
        self._server = HTTPServer(create_app(context), self._config.web.listen, "web.listen")
        self.port = await self._server.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return self.port

    @property
    def channel(self) -> str:
        return f"{CHANNEL_PREFIX}{host_in_channel_name()}-{self.port}"

    def subscriptions(self) -> list[tuple[str, str, Handler]]:
        """(topic, channel, handler) for each topic the live events come from."""
        channel = self.channel
        return [
            (topics.EVENTS, channel, self.live.on_event),
            (topics.STORAGE, channel, self.live.on_record),
            (topics.RECEIVERS, channel, self.live.on_control),
        ]

    async def forget_channels(self) -> None:
        """Delete the live feed's channels, once their consumers are closed: nobody will
        read what they would gather (a web service that crashed leaves them; the same one
        restarted takes them up again)."""
        prefix = self._config.nsq.topic_prefix
        for topic, channel, _ in self.subscriptions():
            await delete_channel(self._config.nsq, prefix + topic, channel)

    async def forget_abandoned_channels(self) -> list[str]:
        """Delete the live-feed channels (``web-…``) other than ours that no consumer
        reads; ``topic/channel`` of each deleted (only from the nsqd that answered)."""
        stats = await read_stats(self._config.nsq)
        ours = {topic for topic, _, _ in self.subscriptions()}
        abandoned = [
            (topic.name, channel.name)
            for topic in stats.topics
            if topic.name in ours
            for channel in topic.channels
            if channel.name.startswith(CHANNEL_PREFIX)
            and channel.name != self.channel
            and channel.clients == 0
        ]
        prefix = self._config.nsq.topic_prefix
        for topic, channel in abandoned:
            await delete_channel(self._config.nsq, prefix + topic, channel)
            log.info("web: deleted %s/%s: nobody reads it (a web service gone)", topic, channel)
        return [f"{topic}/{channel}" for topic, channel in abandoned]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.live.sweep()

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.serving

    async def stop(self) -> None:
        """Close the live streams (or the server would wait for them), then the server."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.live.close()
        if self._server is not None:
            await self._server.stop()
