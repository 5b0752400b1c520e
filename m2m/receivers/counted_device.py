"""Simulated devices that count: numbered records, kept until acknowledged, sent again.

A careful field device keeps each record until the platform acknowledges it (ALIP
``A <x>`` answered ``B <x>``, an M2MP ping answered) and, when its connection drops,
connects again and sends again whatever was not. The fault tests and ``bench/faults.py``
play such devices against a platform whose processes they kill, and count per device what
was sent, what was acknowledged and what Cassandra holds.

Records are dated by the device and numbered in their data (ALIP ``E <time> seq <n>``,
M2MP the array ``[time, n]`` on ``sen:seq``), so a record sent twice is the same record
(its time UUID is derived from what it is) and :func:`stored_numbers` can count each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from contextlib import aclosing
from typing import Any, Final, Generic, TypeVar

from m2m.receivers.alip.client import ALIPClient, LineRefused
from m2m.receivers.device_client import DeviceClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.receivers.m2mp.codec import DataArray, encode
from m2m.registry.device import device_id_for
from m2m.timeseries import TimeSeries

log = logging.getLogger(__name__)

ALIP_RECORD_TYPE: Final = "seq"
M2MP_CHANNEL: Final = "sen:seq"
RECONNECT_DELAY: Final = 0.5
"""Seconds between attempts to connect and identify while the platform does not answer."""

_UNIX_TIME = struct.Struct(">I")
Client = TypeVar("Client", bound=DeviceClient)


class CountedDevice(ABC, Generic[Client]):
    """One device: ``run`` sends numbered records in batches, each closed by a barrier.

    ``acknowledged`` holds the numbers the platform acknowledged; a record is only ever
    counted acknowledged once the answer to a barrier sent after it came back on the same
    connection.
    """

    record_type: str

    def __init__(
        self,
        ident: str,
        host: str,
        port: int,
        *,
        batch: int = 10,
        answer_timeout: float = 10.0,
        quota: int | None = None,
    ) -> None:
        self.ident = ident
        self.quota = quota
        """Records to send at most (None: until ``run`` is told to stop)."""
        self.host = host
        self.port = port
        self.batch = batch
        self.answer_timeout = answer_timeout
        self.acknowledged: set[int] = set()
        self.connections = 0
        """Connections that identified."""
        self.acknowledged_at: list[float] = []
        """``time.monotonic()`` of each barrier answered."""
        self._times: dict[int, int] = {}
        """Every record numbered so far -> its unix time (kept to send it again)."""
        self._barriers = 0
        self._client: Client | None = None

    @property
    def series_id(self) -> str:
        return f"dev-{device_id_for(self.ident)}"

    @property
    def sent(self) -> int:
        """Records numbered (and sent at least once)."""
        return len(self._times)

    @property
    def unacknowledged(self) -> list[int]:
        return sorted(number for number in self._times if number not in self.acknowledged)

    def cut(self) -> None:
        """End the connection in the middle of a record, as a device losing power mid-write."""
        if self._client is not None:
            self._client.send_raw(self._partial_record())
            self._client.close()

    async def run(
        self, stop: asyncio.Event, interval: float = 0.0, deadline: float = 600.0
    ) -> None:
        """Send new records until ``stop`` is set (or ``quota`` sent), then until every one
        is acknowledged.

        A batch waits ``interval`` seconds after the previous one. Connections that break
        (or never answer) are opened again, and what they did not acknowledge is sent
        again; ``deadline`` seconds after ``stop``, whatever is left stays unacknowledged.
        """
        give_up = asyncio.get_running_loop().create_future()
        stop_watch = asyncio.ensure_future(self._deadline(stop, deadline, give_up))
        try:
            while not give_up.done():
                if self._sending_over(stop) and not self.unacknowledged:
                    return
                try:
                    client = await self._connected()
                except (OSError, TimeoutError, LineRefused, ConnectionError, ValueError):
                    await asyncio.sleep(RECONNECT_DELAY)
                    continue
                self._client = client
                async with client:
                    await self._converse(client, stop, interval, give_up)
                self._client = None
        finally:
            stop_watch.cancel()

    async def _deadline(
        self, stop: asyncio.Event, seconds: float, give_up: asyncio.Future[None]
    ) -> None:
        await stop.wait()
        await asyncio.sleep(seconds)
        give_up.set_result(None)

    async def _converse(
        self, client: Client, stop: asyncio.Event, interval: float, give_up: asyncio.Future[None]
    ) -> None:
        """Send on one connection until it breaks: first what is owed, then new records."""
        try:
            owed = self.unacknowledged
            for start in range(0, len(owed), self.batch):
                await self._send_batch(client, owed[start : start + self.batch])
            while not self._sending_over(stop) and not give_up.done():
                count = (
                    self.batch if self.quota is None else min(self.batch, self.quota - self.sent)
                )
                await self._send_batch(client, [self._number() for _ in range(count)])
                if interval:
                    await asyncio.sleep(interval)
        except (OSError, TimeoutError, ConnectionError):
            return  # the connection broke: a new one sends what is owed

    def _sending_over(self, stop: asyncio.Event) -> bool:
        return stop.is_set() or (self.quota is not None and self.sent >= self.quota)

    def _number(self) -> int:
        number = len(self._times)
        self._times[number] = int(time.time())
        return number

    async def _send_batch(self, client: Client, numbers: Iterable[int]) -> None:
        numbers = list(numbers)
        for number in numbers:
            if client.over:  # writing on would only make asyncio complain
                raise ConnectionError("the connection is over")
            self._send_record(client, number, self._times[number])
        self._barriers += 1
        await self._barrier(client, self._barriers % 256)
        self.acknowledged.update(numbers)
        self.acknowledged_at.append(time.monotonic())

    async def _connected(self) -> Client:
        client = await self._connect()
        try:
            if not await self._identify(client):
                raise ConnectionError(f"{self.ident} refused")
        except BaseException:
            client.close()
            raise
        self.connections += 1
        return client

    @abstractmethod
    async def _connect(self) -> Client: ...

    @abstractmethod
    async def _identify(self, client: Client) -> bool: ...

    @abstractmethod
    def _send_record(self, client: Client, number: int, unix_time: int) -> None: ...

    @abstractmethod
    async def _barrier(self, client: Client, token: int) -> None:
        """Ask for an acknowledgement and wait for it (``TimeoutError`` if none comes)."""

    @abstractmethod
    def _partial_record(self) -> bytes:
        """The first bytes of a record, never completed."""


class CountedALIPDevice(CountedDevice[ALIPClient]):
    record_type = ALIP_RECORD_TYPE

    async def _connect(self) -> ALIPClient:
        return await ALIPClient.connect(self.host, self.port)

    async def _identify(self, client: ALIPClient) -> bool:
        return await client.identify(self.ident, timeout=self.answer_timeout)

    def _send_record(self, client: ALIPClient, number: int, unix_time: int) -> None:
        client.send_line(f"E {unix_time} {ALIP_RECORD_TYPE} {number}")

    async def _barrier(self, client: ALIPClient, token: int) -> None:
        await client.ping(str(token), timeout=self.answer_timeout)

    def _partial_record(self) -> bytes:
        return f"E {int(time.time())} {ALIP_RECORD_TYPE} ".encode()


class CountedM2MPDevice(CountedDevice[M2MPClient]):
    record_type = M2MP_CHANNEL

    async def _connect(self) -> M2MPClient:
        return await M2MPClient.connect(self.host, self.port)

    async def _identify(self, client: M2MPClient) -> bool:
        return await client.identify(self.ident, timeout=self.answer_timeout)

    def _send_record(self, client: M2MPClient, number: int, unix_time: int) -> None:
        client.send_array(M2MP_CHANNEL, [_UNIX_TIME.pack(unix_time), str(number).encode()])

    async def _barrier(self, client: M2MPClient, token: int) -> None:
        await client.ping(token, timeout=self.answer_timeout)

    def _partial_record(self) -> bytes:
        frame = encode(DataArray(0, (_UNIX_TIME.pack(int(time.time())), b"0")))
        return frame[: len(frame) // 2]


async def stored_numbers(timeseries: TimeSeries, device: CountedDevice[Any]) -> Counter[int]:
    """How many times each number of ``device`` is stored (more than once: a duplicate)."""
    counts: Counter[int] = Counter()
    records = timeseries.records(device.series_id, device.record_type)
    async with aclosing(records):
        async for record in records:
            with contextlib.suppress(TypeError, ValueError):
                counts[int(record.data)] += 1
    return counts
