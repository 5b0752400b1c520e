"""Devices played against any deployment: ``m2m simulate m2mp|alip``, and bench/.

An operator wants to know what a deployment does with N devices sending R records a
second: whether they all get in, whether what they send is acknowledged, and how long an
acknowledgement takes. The devices are the clients the tests use
(:class:`~m2m.receivers.m2mp.client.M2MPClient`,
:class:`~m2m.receivers.alip.client.ALIPClient`): asyncio streams with one reading task
each and no thread, so one process plays thousands of them.

A run has two phases. First the devices connect and identify, ``CONNECT_BATCH`` at a
time: Twisted's default listen backlog, which any receiver takes (m2m's own listen with
more), since more connecting at once than a backlog holds would have the kernel drop
connection attempts that are then retried only seconds later.
:func:`connect_devices` does that part alone for whoever wants identified clients back
(bench/). Then, for the duration, each identified device sends location records at its
share of the total rate and, about every second, raises a barrier (M2MP device ping,
ALIP ``A <n>``): the receiver answers only once everything the device sent before is on
the bus, so the records sent before an answered barrier are *acknowledged*, and the
barrier's round trip is a latency sample. A last barrier at the end acknowledges what
remains (its round trip is no sample: every device raises it at once).

Shares: ``t`` seconds into the run the fleet owes ``k = floor(R·t)`` records, of which
device ``i`` of ``N`` has sent ``(k + i) // N``. Together the devices have then sent
exactly ``k`` (Hermite's identity), each within one of the others, one after the other
rather than in bursts of N.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import resource
import ssl
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from m2m.errors import M2MError
from m2m.receivers.alip.client import ALIPClient, LineRefused
from m2m.receivers.device_client import DeviceClient
from m2m.receivers.m2mp.client import M2MPClient

CONNECT_BATCH: Final = 50
"""Devices connecting at once: Twisted's default listen backlog, the smallest to expect."""
ANSWER_TIMEOUT: Final = 30.0
"""Seconds a device waits for a connection, its identification's answer or a barrier's."""
BARRIER_INTERVAL: Final = 1.0
"""Seconds between a device's barriers."""
SHORTEST_SLEEP: Final = 0.01
"""A device wakes at most this often: a fast one sends what it owes in one write."""
PROGRESS_INTERVAL: Final = 0.2
RESERVED_FILES: Final = 64
"""Open files the process needs besides one socket per device."""
IDENT_DIGITS: Final = 5
"""Idents count with at least this many digits: ``sim:00000``."""

LOCATION_CHANNEL: Final = "sen:loc"
LATITUDE, LONGITUDE = 48.8566, 2.3522
M2MP_LOCATION: Final = struct.pack(">ff", LATITUDE, LONGITUDE)
"""A ``sen:loc`` data frame's content: f32 latitude, f32 longitude."""
ALIP_LOCATION: Final = f"D L {LATITUDE},{LONGITUDE}"

_RATE = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?:/s)?")

C = TypeVar("C", bound=DeviceClient)


class SimulationError(M2MError):
    """The simulation cannot run at all: nothing listens, too few open files, …"""


# --- Rates and shares -----------------------------------------------------------------


def parse_rate(text: str) -> float:
    """Records a second from ``200``, ``200/s`` or ``0.5/s``; ValueError for anything else."""
    found = _RATE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a rate: records a second, such as 200 or 200/s")
    return float(found["number"])


@dataclass(frozen=True)
class Pace:
    """When each of ``devices`` devices sends, for ``rate`` records a second together."""

    rate: float
    devices: int
    duration: float

    def due(self, index: int, elapsed: float) -> int:
        """Records device ``index`` has sent ``elapsed`` seconds into the run."""
        owed = math.floor(self.rate * min(elapsed, self.duration))  # by the fleet: exact
        return (owed + index) // self.devices

    def next_due(self, index: int, sent: int) -> float:
        """Seconds into the run when device ``index`` owes one more than ``sent``."""
        if self.rate == 0:
            return math.inf
        return ((sent + 1) * self.devices - index) / self.rate


def idents(prefix: str, count: int, first: int = 0) -> list[str]:
    """``count`` idents: ``prefix`` and a zero-padded number, from ``first``."""
    digits = max(IDENT_DIGITS, len(str(first + count - 1)))
    return [f"{prefix}{number:0{digits}d}" for number in range(first, first + count)]


# --- Latency ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Barrier round trips, in seconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency | None:
        """None without samples."""
        if not samples:
            return None
        ordered = sorted(samples)
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 0.50),
            p90=percentile(ordered, 0.90),
            p99=percentile(ordered, 0.99),
            max=ordered[-1],
        )

    def milliseconds(self) -> dict[str, float]:
        """The percentiles and the longest, in milliseconds, by name."""
        return {name: getattr(self, name) * 1000 for name in ("p50", "p90", "p99", "max")}


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted samples: a value that was measured."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


# --- The two protocols ------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect(Generic[C]):
    """What differs between the protocols for a simulated device."""

    name: str
    client: type[C]
    identify: Callable[[C, str, float], Awaitable[str | None]]
    """Say who we are; None when accepted, else why not."""
    send_record: Callable[[C], None]
    """Send one location record."""
    barrier: Callable[[C, int, float], Awaitable[None]]
    """Ask whether what was sent is safe and wait for the answer (TimeoutError)."""


async def _m2mp_identify(client: M2MPClient, ident: str, timeout: float) -> str | None:
    return None if await client.identify(ident, timeout) else "identification refused (0x01 0x00)"


def _m2mp_record(client: M2MPClient) -> None:
    client.send_data(LOCATION_CHANNEL, M2MP_LOCATION)


async def _m2mp_barrier(client: M2MPClient, number: int, timeout: float) -> None:
    await client.ping(number % 256, timeout)


async def _alip_identify(client: ALIPClient, ident: str, timeout: float) -> str | None:
    try:
        accepted = await client.identify(ident, timeout)
    except LineRefused as refusal:
        return f"identification refused: ERR {refusal.reason}"
    return None if accepted else "identification refused (ID 0)"


def _alip_record(client: ALIPClient) -> None:
    client.send_line(ALIP_LOCATION)


async def _alip_barrier(client: ALIPClient, number: int, timeout: float) -> None:
    await client.ping(str(number), timeout)


M2MP: Final = Dialect("m2mp", M2MPClient, _m2mp_identify, _m2mp_record, _m2mp_barrier)
ALIP: Final = Dialect("alip", ALIPClient, _alip_identify, _alip_record, _alip_barrier)
DIALECTS: Final[dict[str, Dialect[Any]]] = {dialect.name: dialect for dialect in (M2MP, ALIP)}


# --- Connecting -------------------------------------------------------------------------


@dataclass
class Fleet(Generic[C]):
    """What :func:`connect_devices` got: identified clients, and who did not get in (why)."""

    identified: dict[str, C] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """Devices that could not connect, or had no answer to their identification."""
    connected: int = 0
    """TCP connections made (identified, refused, or no answer)."""

    @property
    def tried(self) -> int:
        return len(self.identified) + len(self.refused) + len(self.failed)


async def connect_devices(
    dialect: Dialect[C],
    host: str,
    port: int,
    device_idents: Sequence[str],
    exits: contextlib.AsyncExitStack,
    *,
    batch: int = CONNECT_BATCH,
    timeout: float = ANSWER_TIMEOUT,
    tls: ssl.SSLContext | None = None,
    stop: asyncio.Event | None = None,
    on_batch: Callable[[Fleet[C]], None] | None = None,
) -> Fleet[C]:
    """Connect and identify the devices, ``batch`` at a time; closed when ``exits`` closes.

    Stops early when ``stop`` is set. Raises :class:`SimulationError` when not one device
    of the first batch could connect: nothing listens there, or nothing can be reached.
    """
    fleet: Fleet[C] = Fleet()

    async def device(ident: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                client = await dialect.client.connect(host, port, tls=tls)
        except (OSError, TimeoutError) as error:
            fleet.failed[ident] = f"cannot connect: {_connect_failure(error, timeout)}"
            return
        fleet.connected += 1
        await exits.enter_async_context(client)
        try:
            refusal = await dialect.identify(client, ident, timeout)
        except TimeoutError:
            fleet.failed[ident] = f"no answer to the identification within {timeout:g} s"
        except ConnectionError:
            fleet.failed[ident] = f"no answer to the identification: {client.end_reason}"
        else:
            if refusal is None:
                fleet.identified[ident] = client
                return
            fleet.refused[ident] = refusal.replace(ident, "<ident>")  # the same for all
        client.close()

    for start in range(0, len(device_idents), batch):
        if stop is not None and stop.is_set():
            break
        await asyncio.gather(*(device(ident) for ident in device_idents[start : start + batch]))
        if not fleet.connected:
            reason = next(iter(fleet.failed.values()))
            raise SimulationError(f"{_where(host, port)}: {reason}")
        if on_batch is not None:
            on_batch(fleet)
    return fleet


def _connect_failure(error: OSError | TimeoutError, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no connection within {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "nothing listens (connection refused)"
    return error.strerror or str(error)


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def raise_open_files_limit() -> int:
    """Thousands of devices need thousands of sockets: the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- Sending ----------------------------------------------------------------------------


class SimulatedDevice(Generic[C]):
    """One identified device of a run: sends its share, raises a barrier every second."""

    def __init__(self, dialect: Dialect[C], client: C, index: int, timeout: float) -> None:
        self.dialect = dialect
        self.client = client
        self.index = index
        self.timeout = timeout
        self.sent = 0
        self.acknowledged = 0
        """Records sent before a barrier that was answered."""
        self.latencies: list[float] = []
        self.error: str | None = None
        """Why the device stopped before the end, if it did."""
        self._barriers = 0

    async def run(self, pace: Pace, started: float, stop: asyncio.Event) -> None:
        """Send on schedule until the run's end (or ``stop``), then a last barrier."""
        spread = self.index / pace.devices
        next_barrier = BARRIER_INTERVAL * spread
        pending: asyncio.Task[None] | None = None
        while not stop.is_set() and self.error is None and not self.client.over:
            elapsed = time.monotonic() - started
            try:
                await self._send(pace.due(self.index, elapsed) - self.sent)
            except ConnectionError:
                break  # the barrier below tells why
            except TimeoutError:
                self._stop(f"the receiver read nothing sent for {self.timeout:g} s")
                break
            if elapsed >= pace.duration:
                break
            if elapsed >= next_barrier and (pending is None or pending.done()):
                pending = asyncio.create_task(self._barrier())
                next_barrier = elapsed + BARRIER_INTERVAL
            wake = min(pace.next_due(self.index, self.sent), next_barrier, pace.duration)
            await asyncio.sleep(max(wake - elapsed, SHORTEST_SLEEP))
        if pending is not None:
            await pending
        if self.error is None:
            await self._barrier(last=True)

    async def _send(self, count: int) -> None:
        for _ in range(count):
            self.dialect.send_record(self.client)
            self.sent += 1
        if count:  # a receiver that reads slowly slows the device
            async with asyncio.timeout(self.timeout):
                await self.client.drain()

    async def _barrier(self, last: bool = False) -> None:
        """Each round trip is a latency sample but the last: every device raises that one
        at the same instant, a burst the simulation makes, not the deployment."""
        self._barriers += 1
        covered = self.sent
        asked = time.perf_counter()
        try:
            await self.dialect.barrier(self.client, self._barriers, self.timeout)
        except TimeoutError:
            self._stop(f"no answer to a barrier within {self.timeout:g} s")
        except ConnectionError:
            self._stop(f"connection lost: {self.client.end_reason}")
        else:
            if not last:
                self.latencies.append(time.perf_counter() - asked)
            self.acknowledged = max(self.acknowledged, covered)

    def _stop(self, reason: str) -> None:
        self.error = self.error or reason
        self.client.close()


# --- A whole run ------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to simulate: ``devices`` devices sending ``rate`` records a second together."""

    protocol: str
    host: str
    port: int
    devices: int
    rate: float
    duration: float
    ident_prefix: str = "sim:"
    tls_ca: Path | None = None
    """Connect inside TLS, trusting receivers whose certificate this CA signed."""
    timeout: float = ANSWER_TIMEOUT


@dataclass(frozen=True)
class Progress:
    """How far a run got: ``done`` of ``total`` in its current phase."""

    phase: str
    """``connecting`` (counting devices) or ``sending`` (counting tenths of a second)."""
    done: int
    total: int
    detail: str


@dataclass(frozen=True)
class Summary:
    plan: Plan
    identified: int
    refused: int
    failed_to_connect: int
    sent: int
    acknowledged: int
    errors: list[tuple[str, int]]
    """Each reason a device failed (refused, could not connect, stopped) and how many did,
    most frequent first."""
    latency: Latency | None
    seconds: float
    """How long the devices sent."""
    stopped_early: bool

    @property
    def error_count(self) -> int:
        return sum(count for _, count in self.errors)

    @property
    def ok(self) -> bool:
        """Every device identified and nothing failed."""
        return self.identified == self.plan.devices and not self.errors

    def to_json(self) -> dict[str, Any]:
        latency = self.latency
        return {
            "protocol": self.plan.protocol,
            "host": self.plan.host,
            "port": self.plan.port,
            "devices": self.plan.devices,
            "identified": self.identified,
            "refused": self.refused,
            "failed_to_connect": self.failed_to_connect,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "errors": self.error_count,
            "error_reasons": [{"reason": reason, "devices": n} for reason, n in self.errors],
            "ping_ms": None if latency is None else _latency_json(latency),
            "seconds": round(self.seconds, 3),
            "stopped_early": self.stopped_early,
        }


def _latency_json(latency: Latency) -> dict[str, Any]:
    shown = {name: round(ms, 3) for name, ms in latency.milliseconds().items()}
    return {"count": latency.count, **shown}


async def simulate(
    plan: Plan,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Summary:
    """Connect the plan's devices, have them send for its duration, and count."""
    stop = stop or asyncio.Event()
    dialect = DIALECTS[plan.protocol]
    limit = raise_open_files_limit()
    if plan.devices + RESERVED_FILES > limit:
        raise SimulationError(
            f"{plan.devices:,} devices need as many open files, and this process may open "
            f"{limit:,} (ulimit -n) of which {RESERVED_FILES} go to other uses"
        )
    device_idents = idents(plan.ident_prefix, plan.devices)

    def connecting(fleet: Fleet[Any]) -> None:
        detail = f"{len(fleet.identified):,} identified"
        on_progress(Progress("connecting", fleet.tried, plan.devices, detail))

    async with contextlib.AsyncExitStack() as exits:
        fleet = await connect_devices(
            dialect,
            plan.host,
            plan.port,
            device_idents,
            exits,
            timeout=plan.timeout,
            tls=ssl.create_default_context(cafile=plan.tls_ca) if plan.tls_ca else None,
            stop=stop,
            on_batch=connecting,
        )
        devices = [
            SimulatedDevice(dialect, client, index, plan.timeout)
            for index, client in enumerate(fleet.identified.values())
        ]
        started = time.monotonic()
        try:
            if devices and not stop.is_set():
                await _send_all(devices, plan, started, stop, on_progress)
        finally:
            for device in devices:  # all at once, rather than one after the other on exit
                device.client.close()
        seconds = time.monotonic() - started
    return _summary(plan, fleet, devices, seconds, stopped_early=stop.is_set())


async def _send_all(
    devices: Sequence[SimulatedDevice[Any]],
    plan: Plan,
    started: float,
    stop: asyncio.Event,
    on_progress: Callable[[Progress], None],
) -> None:
    pace = Pace(plan.rate, len(devices), plan.duration)
    total = math.ceil(plan.duration * 10)

    async def report_progress() -> None:
        while True:
            done = min(math.floor((time.monotonic() - started) * 10), total)
            sent = sum(device.sent for device in devices)
            on_progress(Progress("sending", done, total, f"{sent:,} sent"))
            await asyncio.sleep(PROGRESS_INTERVAL)

    reporting = asyncio.create_task(report_progress())
    try:
        await asyncio.gather(*(device.run(pace, started, stop) for device in devices))
    finally:
        reporting.cancel()


def _summary(
    plan: Plan,
    fleet: Fleet[Any],
    devices: Sequence[SimulatedDevice[Any]],
    seconds: float,
    stopped_early: bool,
) -> Summary:
    reasons = Counter([*fleet.refused.values(), *fleet.failed.values()])
    reasons.update(device.error for device in devices if device.error is not None)
    return Summary(
        plan=plan,
        identified=len(fleet.identified),
        refused=len(fleet.refused),
        failed_to_connect=len(fleet.failed),
        sent=sum(device.sent for device in devices),
        acknowledged=sum(device.acknowledged for device in devices),
        errors=reasons.most_common(),
        latency=Latency.of([sample for device in devices for sample in device.latencies]),
        seconds=min(seconds, plan.duration) if devices else 0.0,
        stopped_early=stopped_early,
    )
