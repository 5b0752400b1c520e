"""What every request of the web service shares: the stores, the bus, who is who, live events."""

from __future__ import annotations

from dataclasses import dataclass

from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.config import Config
from m2m.registry.device import Devices
from m2m.timeseries import TimeSeries
from m2m.web.auth import Authenticator
from m2m.web.live import LiveHub


@dataclass(frozen=True)
class WebContext:
    config: Config
    database: Database
    publisher: Publisher
    auth: Authenticator
    live: LiveHub
    timeseries: TimeSeries

    @property
    def devices(self) -> Devices:
        return Devices(self.database)
