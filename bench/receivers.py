"""How fast the receivers take devices' data, end to end into Cassandra, and what they cost.

Five measurements, each against real ``m2m serve`` subprocesses on free ports:

1. M2MP receiver alone (``serve --only m2mp``, nothing consuming ``converter-m2mp``): devices
   send location frames as fast as TCP lets them; frames/s published (counted by nsqd on
   the ``converter-m2mp`` topic) and the receiver's CPU time per frame.
2. ALIP receiver alone (``serve --only alip``): connections send ``D L 48.85,2.35`` lines;
   lines/s published on the ``storage`` topic, CPU per line.
3. End to end for each device count: location frames through the receiver, the converter
   and the storage worker into Cassandra, first with everything in one ``serve`` (``e2e``),
   then as deploy/ runs them, a ``serve --only`` process each for the workers and one for
   the receivers (``e2e-deployed``). Records/s stored (the ``storage`` channel's messages
   all finished), against the ceiling measured right after on the same machine:
   bench.timeseries' bare driver loop writing the same two INSERTs per record, as many in
   flight as the storage worker's Database allows. A probe device sends a frame every
   ~50 ms while a task reads the newest records back (``TimeSeries.records``): sent ->
   readable gives the latency, first under the saturating load (that is mostly the time
   spent queued in NSQ), then at half the stored rate.
4. Idle connections (``serve --only m2mp``): receiver RSS before and after thousands of
   identified, silent devices.
5. ALIP firmware download: a file stored with ``Firmwares.add``, read by one device in
   512-byte ``F G`` requests, one at a time as a device would.
6. Sessions (``serve --only m2mp``): the receiver's CPU per identification and greeting
   of a known device (1,000 reconnecting, ``CONNECT_BATCH`` at a time) and of a new one
   (1,000 first connections, enrollment open); then the connection storm of a network
   coming back: 10,000 known devices connecting at once (``STORM_CONNECTING`` handshakes
   at a time), the wall time until every one is identified and greeted, the receiver's
   CPU per device and its peak RSS.

Figures are wall-clock rates on a small shared machine (Cassandra, nsqd, the load
generator and the receiver share its cores, and other people's tests may run too), so
they wander from run to run; the CPU seconds per frame of the receiver process are the
steadier figure. Nothing is asserted.

Everything is thrown away at the end: a keyspace (the configured one with a random suffix,
schema applied, devices created up front so identification is a lookup, as for devices in
the field), and an nsqd per scenario (the stack's binary on free ports, counted through its
HTTP /stats): each scenario starts from empty topics, the hundreds of thousands of messages
nobody consumes in the receiver-alone runs never reach the shared nsqd on 4150, and the
traffic of other people's tests on that one stays out of the counts.

Run from the repository root:  .venv/bin/python -m bench.receivers [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import io
import itertools
import json
import os
import pstats
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from bench.keyspace import throwaway_keyspace
from bench.timeseries import INSERT_ROW, Timer, bare_driver_writes, two_rows_per_record
from m2m.bus import topics
from m2m.cassandra import Database
from m2m.config import Config, dump_with_secrets, load_config
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.device_client import DeviceClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.receivers.m2mp.codec import ChannelDefinition, Data, encode
from m2m.registry.device import Devices, device_id_for
from m2m.registry.firmware import Firmwares
from m2m.services import CONVERTER_CHANNEL, RECEIVERS, STORAGE_CHANNEL
from m2m.simulate import (
    ALIP,
    ALIP_LOCATION,
    CONNECT_BATCH,
    LOCATION_CHANNEL,
    M2MP,
    M2MP_LOCATION,
    Dialect,
    connect_devices,
    raise_open_files_limit,
)
from m2m.stack.provision import nsq_artifact
from m2m.timeseries import TimeSeries
from m2m.tls import init_ca

M2M = str(Path(sys.executable).parent / "m2m")
HOST = "127.0.0.1"
IDENTIFY_TIMEOUT = 120.0
SEND_CHUNK = 64
"""Frames or lines a device writes at once before letting the other devices write."""
LOCATION_FRAMES = encode(ChannelDefinition(0, LOCATION_CHANNEL)), encode(Data(0, M2MP_LOCATION))
"""The definition of channel 0 as sen:loc, then one frame of it (f32 lat, f32 lon)."""
ALIP_LINE = f"{ALIP_LOCATION}\n".encode()
SETTINGS_CHANNEL = "_set"
ORIGINAL_KNOWN_IDENTIFICATION = 1.75e-3
ORIGINAL_NEW_IDENTIFICATION = 2.9e-3
"""Receiver CPU seconds per identification and greeting of the original Go receiver,
measured on this machine (issue 14)."""
ORIGINAL_CPU_PER_RECORD = 580e-6
"""CPU seconds per stored record of the original's receiver, converter and storage
services together, on this machine."""
STORM_GOAL = 20.0
"""Seconds for 10,000 known devices to be greeted by one receiver process."""
PROBE_INTERVAL = 0.05
PROBE_IDENT = "bench:probe0"
PACED_SHARE = 0.5
"""The latency is measured again at this share of the stored rate, below saturation."""
FIRMWARE_NAME = "benchfw"
FIRMWARE_REQUEST = 512
POLL = 0.05
"""How often nsqd's counts are read: a rate over seconds is off by at most this."""
LOOK_INTERVAL = 0.01
LOOK_SHARE = 0.05
SETTLE_TIMEOUT = 600.0
KiB = 1024
MiB = 1024 * 1024

_T = TypeVar("_T")
_C = TypeVar("_C", bound=DeviceClient)


@dataclass(frozen=True)
class Plan:
    m2mp_devices: int
    alip_connections: int
    frames: int
    """Frames (lines) sent in each receiver-alone run, shared among its devices."""
    devices: tuple[int, ...]
    records: int
    """Frames sent in each end-to-end run, shared among its devices."""
    paced_seconds: float
    idle_connections: int
    firmware_size: int
    session_devices: int
    """Devices of each one-at-a-time sessions run (known, then new)."""
    storm_devices: int

    @property
    def idents(self) -> list[str]:
        most = max(self.m2mp_devices, self.alip_connections, self.idle_connections,
                   *self.devices)  # fmt: skip
        return [ident(i) for i in range(most + 1)]


def ident(i: int) -> str:
    """An ident both protocols accept (ALIP's pattern is the stricter)."""
    return f"bench:dev{i:05d}"


# --- Results --------------------------------------------------------------------------


@dataclass
class Figure:
    scenario: str
    name: str
    value: str
    goal: str = ""
    met: bool | None = None


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)

    def add(
        self, scenario: str, name: str, value: str, goal: str = "", met: bool | None = None
    ) -> None:
        figure = Figure(scenario, name, value, goal, met)
        self.figures.append(figure)
        verdict = "" if met is None else ("  goal met" if met else "  GOAL MISSED")
        print(f"  {name}: {value}{f'  (goal {goal})' if goal else ''}{verdict}", flush=True)

    def table(self) -> str:
        rows = [("scenario", "figure", "value", "goal", "")]
        for f in self.figures:
            verdict = "" if f.met is None else ("met" if f.met else "MISSED")
            rows.append((f.scenario, f.name, f.value, f.goal, verdict))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                 for row in rows]  # fmt: skip
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(line.rstrip() for line in lines)


_STARTED = time.perf_counter()


def heading(text: str) -> None:
    print(f"\n[{time.perf_counter() - _STARTED:4.0f} s] {text}", flush=True)


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "n/a"


def micros(seconds: float, count: int) -> str:
    return f"{seconds / count * 1e6:,.0f} µs" if count else "n/a"


# --- Processes: a private nsqd, m2m serve ----------------------------------------------


def trusting(tls: Path) -> ssl.SSLContext:
    """A device's TLS context for receivers with the certificates of ``m2m tls init``."""
    return ssl.create_default_context(cafile=tls / "ca.pem")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


class Nsqd:
    """An nsqd of our own (the stack's binary), on free ports, with a throw-away data dir."""

    def __init__(self, binary: Path, directory: Path, options: Sequence[str] = ()) -> None:
        self.tcp_port, self.http_port = free_port(), free_port()
        data = directory / f"nsqd-{self.tcp_port}"
        data.mkdir()
        self.log = data / "nsqd.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(binary), f"--tcp-address={HOST}:{self.tcp_port}",
                 f"--http-address={HOST}:{self.http_port}", f"--data-path={data}",
                 f"--broadcast-address={HOST}", *options],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not accepts(self.http_port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nsqd did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    @property
    def tcp_address(self) -> str:
        return f"{HOST}:{self.tcp_port}"

    def stats(self) -> dict[str, Any]:
        """Topic name -> its /stats entry."""
        url = f"http://{HOST}:{self.http_port}/stats?format=json"
        with urllib.request.urlopen(url, timeout=10) as response:
            stats = json.load(response)
        return {topic["topic_name"]: topic for topic in stats.get("topics") or []}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def topic_count(stats: dict[str, Any], topic: str) -> int:
    """Messages published to ``topic`` since nsqd started."""
    entry = stats.get(topic)
    return int(entry["message_count"]) if entry else 0


@dataclass(frozen=True)
class ChannelState:
    delivered: int
    """Messages put on the channel (its message_count)."""
    unfinished: int
    """Waiting, in flight or deferred."""

    @property
    def finished(self) -> int:
        return self.delivered - self.unfinished


def channel_state(stats: dict[str, Any], topic: str, channel: str) -> ChannelState | None:
    for entry in (stats.get(topic) or {}).get("channels") or []:
        if entry["channel_name"] == channel:
            unfinished = entry["depth"] + entry["in_flight_count"] + entry["deferred_count"]
            return ChannelState(int(entry["message_count"]), int(unfinished))
    return None


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Serve:
    """A running ``m2m serve`` (or its subset), on ports of its own."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: Path
    profile: Path | None

    def cpu_seconds(self) -> float:
        """User + system time of the whole process (every thread), from /proc."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_mb(self) -> float:
        return self._status_mb("VmRSS:")

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM:")

    def _status_mb(self, key: str) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {key}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                print(f"m2m serve did not stop in time; killed (log: {self.log})")
                self.process.kill()
                self.process.wait()
        if self.profile is not None and self.profile.exists():
            print_profile(self.profile)


def start_serve(
    settings: dict[str, Any],
    nsqd: Nsqd,
    directory: Path,
    only: str | None,
    profile: Path | None,
    metrics: bool = False,
    code: Path | None = None,
    tls: Path | None = None,
) -> Serve:
    """``m2m serve`` against ``nsqd`` and the bench keyspace, ready for devices; with
    ``metrics``, serving them on ``ports["metrics"]``; with ``code``, the m2m package of
    that source tree (another revision: ``settings`` must hold only keys it knows); with
    ``tls`` (a directory ``m2m tls init`` filled), its device ports inside TLS."""
    settings = copy.deepcopy(settings)
    ports = {"m2mp": free_port(), "alip": free_port(), "web": free_port()}
    if metrics:
        ports["metrics"] = free_port()
        settings["metrics"] = {"listen": f"tcp:{ports['metrics']}:interface={HOST}"}
    receivers = settings.setdefault("receivers", {})
    kind = f"ssl:privateKey={tls}/server.key:certKey={tls}/server.pem" if tls else "tcp"
    for name in RECEIVERS:
        receivers[name] = {"listen": f"{kind}:port={ports[name]}:interface={HOST}"}
    settings["web"] = {**settings.get("web", {}), "listen": f"tcp:{ports['web']}:interface={HOST}"}
    receivers["limits"] = {**receivers.get("limits", {}), "connections_per_address": 1_000_000}
    settings["nsq"] = {"nsqd_tcp_addresses": [nsqd.tcp_address], "lookupd_http_addresses": []}
    name = f"serve-{only or 'all'}-{ports['m2mp']}"
    config_file = directory / f"{name}.yaml"
    config_file.touch(mode=0o600)  # it may hold the Cassandra password
    config_file.write_text(yaml.safe_dump(settings))
    arguments = ["--config", str(config_file), "serve", *(["--only", only] if only else [])]
    profile_file = profile / f"{name}.prof" if profile else None
    if profile_file is None:
        command = [M2M, *arguments]
    else:  # the main thread's CPU time, not its wall time: waits are not work
        command = [sys.executable, "-c", PROFILED_SERVE.format(arguments, str(profile_file))]
    log = directory / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(code)} if code else None
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    names = [*(only.split(",") if only else ports), "metrics"]
    listening = [port for name, port in ports.items() if name in names]
    deadline = time.monotonic() + 60
    while not all(accepts(port) for port in listening):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"m2m serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return Serve(process, ports, log, profile_file)


PROFILED_SERVE = """
import cProfile, sys, time
from m2m.entry import main
sys.argv = ['m2m', *{0!r}]
profile = cProfile.Profile(time.thread_time)
try:
    profile.runcall(main)
finally:
    profile.dump_stats({1!r})
"""


def print_profile(path: Path, lines: int = 20) -> None:
    """The functions with the most time of their own, then m2m's with the most in all."""
    for order, title, only in (
        ("tottime", "own time", ""),
        ("cumulative", "time including callees, m2m's functions", "/m2m/"),
    ):
        out = io.StringIO()
        stats = pstats.Stats(str(path), stream=out)
        stats.sort_stats(order).print_stats(only, lines)
        print(f"\n--- {path.name}: by {title} (main thread's CPU seconds) ---")
        table = out.getvalue().splitlines()
        start = next(i for i, line in enumerate(table) if line.lstrip().startswith("ncalls"))
        print("\n".join(line for line in table[start:] if line.strip()))


@dataclass
class Platform:
    """One ``m2m serve`` or several, each running a subset (as deployed: one per service)."""

    serves: list[Serve]
    device_tls: ssl.SSLContext | None = None
    """What devices connect with when the receivers serve TLS."""

    @property
    def ports(self) -> dict[str, int]:
        return self.serves[-1].ports  # the receivers start last

    def cpu_seconds(self) -> float:
        return sum(serve.cpu_seconds() for serve in self.serves)

    def rss_mb(self) -> float:
        return sum(serve.rss_mb() for serve in self.serves)


ONE_PROCESS: tuple[str | None, ...] = ("m2mp,alip,converter,storage",)
"""Receivers and workers in one process (the web service, reading the bus on channels of
its own, is measured by bench.web)."""
DEPLOYED: tuple[str | None, ...] = ("storage", "converter", "m2mp,alip")
"""The processes of deploy/ (its systemd units): the workers, then the receivers."""


SCRAPE_INTERVAL = 1.0
"""Seconds between two scrapes of a serve's metrics in the metrics-cost runs: 15 times as
often as deploy/'s Prometheus, so the figure is an upper bound."""


async def scrape_forever(serves: Sequence[Serve]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            for serve in serves:
                response = await client.get(f"http://{HOST}:{serve.ports['metrics']}/metrics")
                response.raise_for_status()
            await asyncio.sleep(SCRAPE_INTERVAL)


@contextlib.asynccontextmanager
async def running(
    settings: dict[str, Any],
    binary: Path,
    directory: Path,
    processes: Sequence[str | None],
    profile: Path | None,
    nsqd_options: Sequence[str] = (),
    metrics: bool = False,
    code: Path | None = None,
    tls: Path | None = None,
) -> AsyncIterator[tuple[Platform, Nsqd]]:
    """A private nsqd and ``m2m serve --only P`` on it for each P of ``processes`` (None:
    everything in one), all stopped on the way out, receivers first. With ``metrics``,
    each serves its metrics, scraped every ``SCRAPE_INTERVAL``."""
    nsqd = await asyncio.to_thread(Nsqd, binary, directory, nsqd_options)
    platform = Platform([])
    scraping: asyncio.Task[None] | None = None
    try:
        for only in processes:
            platform.serves.append(
                await asyncio.to_thread(
                    start_serve, settings, nsqd, directory, only, profile, metrics, code, tls
                )
            )
        if metrics:
            scraping = asyncio.create_task(scrape_forever(platform.serves))
        platform.device_tls = trusting(tls) if tls else None
        yield platform, nsqd
    finally:
        if scraping is not None:
            scraping.cancel()
        for serve in reversed(platform.serves):
            await asyncio.to_thread(serve.stop)
        await asyncio.to_thread(nsqd.stop)


# --- Waiting on nsqd's counts ----------------------------------------------------------


async def wait_for(
    nsqd: Nsqd, satisfied: Callable[[dict[str, Any]], bool], what: str,
    timeout: float = SETTLE_TIMEOUT,
) -> float:  # fmt: skip
    """Poll nsqd's stats until ``satisfied``; the perf_counter time it was seen so."""
    deadline = time.perf_counter() + timeout
    while True:
        stats = await asyncio.to_thread(nsqd.stats)
        now = time.perf_counter()
        if satisfied(stats):
            return now
        if now > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        await asyncio.sleep(POLL)


async def settled(nsqd: Nsqd, quiet: float = 1.0) -> dict[str, Any]:
    """nsqd's stats once no topic count moved for ``quiet`` s and no channel holds work."""
    last: dict[str, int] = {}
    since = time.perf_counter()
    while True:
        stats = await asyncio.to_thread(nsqd.stats)
        counts = {name: topic_count(stats, name) for name in stats}
        busy = any(
            (state := channel_state(stats, name, entry["channel_name"])) and state.unfinished
            for name, topic in stats.items()
            for entry in topic.get("channels") or []
        )
        if counts != last or busy:
            last, since = counts, time.perf_counter()
        elif time.perf_counter() - since >= quiet:
            return stats
        await asyncio.sleep(0.1)


# --- Devices ---------------------------------------------------------------------------


async def in_batches(
    make: Callable[[int], Awaitable[_T]], count: int, batch: int = CONNECT_BATCH
) -> list[_T]:
    made: list[_T] = []
    for start in range(0, count, batch):
        made += await asyncio.gather(*(make(i) for i in range(start, min(start + batch, count))))
    return made


async def identified(
    dialect: Dialect[_C], port: int, idents: Sequence[str], exits: contextlib.AsyncExitStack,
    batch: int = CONNECT_BATCH, tls: ssl.SSLContext | None = None,
) -> list[_C]:  # fmt: skip
    """The devices connected and identified as ``m2m simulate`` does it (``batch`` at a
    time), closed when ``exits`` closes; RuntimeError if any did not get in."""
    fleet = await connect_devices(dialect, HOST, port, idents, exits, batch=batch,
                                  timeout=IDENTIFY_TIMEOUT, tls=tls)  # fmt: skip
    problems = {**fleet.refused, **fleet.failed}
    if problems:
        device_ident, why = next(iter(problems.items()))
        raise RuntimeError(f"{len(problems):,} devices did not get in, {device_ident}: {why}")
    return [fleet.identified[name] for name in idents]


def m2mp_devices(
    port: int, count: int, exits: contextlib.AsyncExitStack, first: int = 0,
    tls: ssl.SSLContext | None = None,
) -> Awaitable[list[M2MPClient]]:  # fmt: skip
    return identified(M2MP, port, [ident(first + i) for i in range(count)], exits, tls=tls)


async def send_repeatedly(
    client: M2MPClient | ALIPClient, unit: bytes, count: int, prefix: bytes = b""
) -> None:
    """``unit`` ``count`` times, as fast as the connection takes it (after ``prefix``)."""
    chunk = unit * SEND_CHUNK
    if prefix:
        client.send_raw(prefix)
    for start in range(0, count, SEND_CHUNK):
        client.send_raw(chunk if count - start >= SEND_CHUNK else unit * (count - start))
        await client.drain()
        await asyncio.sleep(0)  # the other devices write too


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal counts."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


async def create_devices(database: Database, idents: Sequence[str]) -> None:
    """Register the devices beforehand: identification is then a lookup, as in the field."""
    devices = Devices(database)
    await devices.get_or_create(idents[0])  # the default domain, once
    pending = iter(idents[1:])

    async def creator() -> None:
        for name in pending:
            await devices.get_or_create(name)

    await asyncio.gather(*(creator() for _ in range(64)))


@dataclass
class CpuWindow:
    """Wall time, the serve processes' CPU (each and in all) and this process's CPU over a
    measurement."""

    serve: Platform
    wall: float = 0.0
    serve_cpu: float = 0.0
    serve_cpus: list[float] = field(default_factory=list)
    """Each serve process's, in the platform's order."""
    bench_cpu: float = 0.0

    def __enter__(self) -> CpuWindow:
        self._started = time.perf_counter()
        self._serve_cpus = [serve.cpu_seconds() for serve in self.serve.serves]
        self._bench_cpu = time.process_time()
        return self

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def stop(self, at: float | None = None) -> None:
        self.wall = (at or time.perf_counter()) - self._started
        self.serve_cpus = [
            serve.cpu_seconds() - before
            for serve, before in zip(self.serve.serves, self._serve_cpus, strict=True)
        ]
        self.serve_cpu = sum(self.serve_cpus)
        self.bench_cpu = time.process_time() - self._bench_cpu

    def __exit__(self, *_: object) -> None:
        if not self.wall:
            self.stop()


# --- 1. M2MP receiver alone ------------------------------------------------------------


async def bench_m2mp(
    plan: Plan, results: Results, settings: dict[str, Any], binary: Path, directory: Path,
    profile: Path | None,
) -> None:  # fmt: skip
    scenario = "1 m2mp alone"
    heading(f"{scenario}: {plan.m2mp_devices} devices, {plan.frames:,} location frames")
    async with (
        running(settings, binary, directory, ("m2mp",), profile) as (serve, nsqd),
        contextlib.AsyncExitStack() as exits,
    ):
        clients = await m2mp_devices(serve.ports["m2mp"], plan.m2mp_devices, exits)
        definition, frame = LOCATION_FRAMES
        warm_up = 20
        await asyncio.gather(*(send_repeatedly(c, frame, warm_up, definition) for c in clients))
        base = topic_count(await settled(nsqd), topics.CONVERTER_M2MP)
        counts = shares(plan.frames, len(clients))
        with CpuWindow(serve) as window:
            await asyncio.gather(
                *(send_repeatedly(c, frame, n) for c, n in zip(clients, counts, strict=True))
            )
            sent = window.elapsed()
            done = await wait_for(
                nsqd, lambda s: topic_count(s, topics.CONVERTER_M2MP) >= base + plan.frames,
                "every frame published",
            )  # fmt: skip
            window.stop(done)
    print(f"  (devices wrote their frames in {sent:.2f} s; the kernel buffers the rest)")
    results.add(scenario, "frames/s published", rate(plan.frames, window.wall),
                ">= 20,000/s", plan.frames / window.wall >= 20_000)  # fmt: skip
    results.add(scenario, "receiver CPU/frame", micros(window.serve_cpu, plan.frames),
                "<= 50 µs (20,000/s on one core)",
                window.serve_cpu / plan.frames <= 50e-6)  # fmt: skip
    results.add(scenario, "load generator CPU/frame", micros(window.bench_cpu, plan.frames))


# --- 2. ALIP receiver alone, 5. firmware download ---------------------------------------


async def bench_alip(
    plan: Plan, results: Results, settings: dict[str, Any], binary: Path, directory: Path,
    database: Database, profile: Path | None,
) -> None:  # fmt: skip
    scenario = "2 alip alone"
    heading(f"{scenario}: {plan.alip_connections} connections, {plan.frames:,} `D L` lines")
    async with running(settings, binary, directory, ("alip",), profile) as (serve, nsqd):
        async with contextlib.AsyncExitStack() as exits:
            idents = [ident(i) for i in range(plan.alip_connections)]
            clients = await identified(ALIP, serve.ports["alip"], idents, exits)
            await asyncio.gather(*(send_repeatedly(c, ALIP_LINE, 5) for c in clients))
            base = topic_count(await settled(nsqd), topics.STORAGE)
            counts = shares(plan.frames, len(clients))
            with CpuWindow(serve) as window:
                await asyncio.gather(
                    *(
                        send_repeatedly(c, ALIP_LINE, n)
                        for c, n in zip(clients, counts, strict=True)
                    )
                )
                done = await wait_for(
                    nsqd, lambda s: topic_count(s, topics.STORAGE) >= base + plan.frames,
                    "every line published",
                )  # fmt: skip
                window.stop(done)
            refused = sum(line.startswith("ERR") for c in clients for line in c.unread)
        results.add(scenario, "lines/s published", rate(plan.frames, window.wall),
                    ">= 20,000/s", plan.frames / window.wall >= 20_000)  # fmt: skip
        results.add(scenario, "receiver CPU/line", micros(window.serve_cpu, plan.frames),
                    "<= 50 µs (20,000/s on one core)",
                    window.serve_cpu / plan.frames <= 50e-6)  # fmt: skip
        results.add(scenario, "load generator CPU/line", micros(window.bench_cpu, plan.frames))
        if refused:
            results.add(scenario, "lines answered ERR", f"{refused:,}")
        await bench_firmware(plan, results, serve, database)


async def bench_firmware(plan: Plan, results: Results, serve: Platform, database: Database) -> None:
    scenario = "5 firmware"
    size = plan.firmware_size
    heading(f"{scenario}: {size // KiB:,} KiB in {FIRMWARE_REQUEST}-byte `F G` requests")
    content = os.urandom(size)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, size, 64 * KiB):
            yield content[start : start + 64 * KiB]

    await Firmwares(database).add(FIRMWARE_NAME, pieces())
    async with await ALIPClient.connect(HOST, serve.ports["alip"]) as client:
        await client.identify(ident(0), timeout=IDENTIFY_TIMEOUT)
        client.send_line(f"F N {FIRMWARE_NAME}")
        if await client.receive_line(prefix="F N ") != "F N 1":
            raise RuntimeError(f"firmware {FIRMWARE_NAME} not found by the receiver")
        received = bytearray()
        with CpuWindow(serve) as window:
            for offset in range(0, size, FIRMWARE_REQUEST):
                client.send_line(f"F G {offset} {FIRMWARE_REQUEST}")
                line = await client.receive_line(timeout=60, prefix=("F G ", "ERR "))
                if line.startswith("ERR"):
                    raise RuntimeError(f"F G {offset}: {line}")
                received += bytes.fromhex(line.split(" ", 3)[3])
    requests = size // FIRMWARE_REQUEST
    results.add(scenario, "download KiB/s", f"{size / KiB / window.wall:,.0f} KiB/s")
    results.add(scenario, "F G requests/s", rate(requests, window.wall))
    results.add(scenario, "receiver CPU/request", micros(window.serve_cpu, requests))
    if received != content:
        results.add(scenario, "content", "DIFFERS from what was stored")


# --- 3. End to end --------------------------------------------------------------------


@dataclass
class ProbePhase:
    """The probe frames of one phase: from ``first`` to the probe's count when it ends."""

    probe: Probe
    first: int

    @property
    def sent(self) -> int:
        return self.probe.count - self.first + 1

    def latencies(self) -> list[float]:
        """Sent -> readable, in seconds, of the frames of the phase that were read back."""
        probe = self.probe
        numbers = range(self.first, probe.count + 1)
        return [probe.readable[n] - probe.sent[n] for n in numbers if n in probe.readable]


@dataclass
class Probe:
    """A device sending a numbered location every ~50 ms, and a reader of its records."""

    client: M2MPClient
    timeseries: TimeSeries
    series_id: str
    sent: dict[int, float] = field(default_factory=dict)
    readable: dict[int, float] = field(default_factory=dict)
    _sent_at: dict[int, datetime] = field(default_factory=dict)
    _oldest_unseen: int = 1

    @property
    def count(self) -> int:
        return len(self.sent)

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[ProbePhase]:
        """Send probe frames for as long as the block runs."""
        phase = ProbePhase(self, self.count + 1)
        stop = asyncio.Event()
        task = asyncio.create_task(self._send_until(stop))
        try:
            yield phase
        finally:
            stop.set()
            await task

    async def _send_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            n = self.count + 1
            self.sent[n], self._sent_at[n] = time.perf_counter(), datetime.now(UTC)
            self.client.send_data(LOCATION_CHANNEL, struct.pack(">ff", n, 2.35))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_INTERVAL)

    async def watch(self) -> None:
        """Note when each probe record becomes readable (until cancelled).

        Each look reads every record since the oldest probe frame not seen yet: records
        may become readable out of order, the bus delivering many at once. Looks come
        every 10 ms, or every ``LOOK_SHARE`` of the oldest unseen frame's age if longer:
        under a saturating load, frames wait seconds, and reading their growing window
        100 times a second would take the bench's CPU from the platform it measures.
        The latency read is at most that share too long.
        """
        while True:
            while self._oldest_unseen in self.readable:
                self._oldest_unseen += 1
            pause = LOOK_INTERVAL
            if self._oldest_unseen in self.sent:
                pause = max(
                    pause, LOOK_SHARE * (time.perf_counter() - self.sent[self._oldest_unseen])
                )
                start = self._sent_at[self._oldest_unseen] - timedelta(seconds=1)
                records = self.timeseries.records(self.series_id, LOCATION_CHANNEL, start=start)
                async for record in records:
                    assert isinstance(record.data, dict)
                    n = int(record.data["lat"])
                    if n not in self.readable:
                        self.readable[n] = time.perf_counter()
            await asyncio.sleep(pause)

    async def all_readable(self, timeout: float = 60) -> None:
        deadline = time.perf_counter() + timeout
        while len(self.readable) < self.count and time.perf_counter() < deadline:
            await asyncio.sleep(POLL)


def latency(phase: ProbePhase) -> str:
    values = phase.latencies()
    lost = f", {phase.sent - len(values)} never read back" if len(values) < phase.sent else ""
    if len(values) < 2:
        return f"n/a (too few samples{lost})"
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return (
        f"p50 {cuts[49] * 1e3:,.0f} ms, p99 {cuts[98] * 1e3:,.0f} ms ({len(values)} probes{lost})"
    )


def stored(stats: dict[str, Any]) -> ChannelState:
    state = channel_state(stats, topics.STORAGE, STORAGE_CHANNEL)
    return state or ChannelState(0, 0)


Figures = list[tuple[float, float]]
"""An end-to-end run's (records/s stored, serve CPU per record), per device count."""


async def bench_end_to_end(
    plan: Plan, results: Results, settings: dict[str, Any], binary: Path, directory: Path,
    database: Database, in_flight: int, profile: Path | None, processes: Sequence[str | None],
    metrics: bool = False, code: Path | None = None, tls: Path | None = None,
) -> Figures:  # fmt: skip
    """Per device count: records stored per second and serve's CPU seconds per record."""
    figures = []
    label = ", metrics scraped" if metrics else (", before metrics" if code else "")
    label += ", TLS" if tls else ""
    async with (
        running(
            settings, binary, directory, processes, profile, metrics=metrics, code=code, tls=tls
        ) as (
            serve,
            nsqd,
        ),
        await M2MPClient.connect(
            HOST, serve.ports["m2mp"], tls=trusting(tls) if tls else None
        ) as probe_client,
    ):
        await probe_client.identify(PROBE_IDENT, timeout=IDENTIFY_TIMEOUT)
        await wait_for(
            nsqd, lambda s: channel_state(s, topics.CONVERTER_M2MP, CONVERTER_CHANNEL) is not None,
            "the converter's channel",
        )  # fmt: skip
        probe = Probe(probe_client, TimeSeries(database), f"dev-{device_id_for(PROBE_IDENT)}")
        watcher = asyncio.create_task(probe.watch())
        try:
            for count in plan.devices:
                figure = await end_to_end(plan, results, serve, nsqd, database, in_flight,
                                          probe, count, len(processes), label)  # fmt: skip
                figures.append(figure)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    return figures


async def end_to_end(
    plan: Plan, results: Results, serve: Platform, nsqd: Nsqd, database: Database, in_flight: int,
    probe: Probe, count: int, processes: int, label: str = "",
) -> tuple[float, float]:  # fmt: skip
    scenario = f"3 e2e {count:,} dev, {processes} proc{'s' if processes > 1 else ''}{label}"
    per_device = max(1, plan.records // count)
    total = per_device * count
    heading(f"{scenario}: {count:,} devices, {total:,} location frames into Cassandra")
    async with contextlib.AsyncExitStack() as exits:
        started = time.perf_counter()
        clients = await m2mp_devices(serve.ports["m2mp"], count, exits, tls=serve.device_tls)
        print(f"  ({count:,} devices connected and identified in "
              f"{time.perf_counter() - started:.1f} s)", flush=True)  # fmt: skip
        definition, frame = LOCATION_FRAMES
        for client in clients:
            client.send_raw(definition)
        stats = await settled(nsqd)
        base, base_accepted = stored(stats).finished, topic_count(stats, topics.CONVERTER_M2MP)

        # Saturating: every device sends its share as fast as it can.
        with CpuWindow(serve) as window:
            async with probe.sending() as saturated:
                await asyncio.gather(*(send_repeatedly(c, frame, per_device) for c in clients))
                accepted = await wait_for(
                    nsqd,
                    lambda s: (
                        topic_count(s, topics.CONVERTER_M2MP)
                        >= base_accepted + total + saturated.sent
                    ),
                    "every frame accepted",
                )
                await wait_for(
                    nsqd, lambda s: stored(s).finished >= base + total, "the load stored"
                )
            records = total + saturated.sent
            done = await wait_for(nsqd, lambda s: stored(s).finished >= base + records,
                                  "every record stored")  # fmt: skip
            window.stop(done)
        accepted_seconds = accepted - (done - window.wall)
        await probe.all_readable()

        # The ceiling: the same two INSERTs per record from the bare driver, as many in
        # flight as the storage worker's Database allows.
        moment = datetime.now(UTC)
        rows = two_rows_per_record(
            [(f"ceiling-{i % count}", moment + timedelta(microseconds=i)) for i in range(records)]
        )
        insert = database.prepare(INSERT_ROW)
        with Timer() as ceiling:
            await asyncio.to_thread(bare_driver_writes, database.session, insert, rows, in_flight)

        # Paced at a share of the stored rate: the latency of a pipeline that keeps up.
        paced_rate = PACED_SHARE * records / window.wall
        base = stored(await settled(nsqd)).finished
        async with probe.sending() as paced:
            paced_frames = await send_paced(clients, frame, paced_rate, plan.paced_seconds)
        await wait_for(
            nsqd, lambda s: stored(s).finished >= base + paced_frames + paced.sent,
            "the paced records stored",
        )  # fmt: skip
        await probe.all_readable()

    stored_rate = records / window.wall
    ceiling_rate = records / ceiling.wall
    results.add(scenario, "frames/s accepted", rate(records, accepted_seconds))
    results.add(scenario, "records/s stored", rate(records, window.wall))
    results.add(scenario, "bare-driver ceiling", rate(records, ceiling.wall))
    results.add(scenario, "stored / ceiling", f"{stored_rate / ceiling_rate:.0%}", ">= 60%",
                stored_rate / ceiling_rate >= 0.6)  # fmt: skip
    results.add(scenario, "serve CPU/record", micros(window.serve_cpu, records),
                *cpu_goal(window.serve_cpu / records, processes))  # fmt: skip
    if processes > 1:
        for only, cpu in zip(DEPLOYED, window.serve_cpus, strict=True):
            results.add(scenario, f"  {only} CPU/record", micros(cpu, records))
    results.add(scenario, "ceiling client CPU/record", micros(ceiling.cpu, records))
    results.add(scenario, "latency, saturated", latency(saturated))
    results.add(scenario, f"latency at {paced_rate:,.0f}/s", latency(paced))
    return stored_rate, window.serve_cpu / records


def cpu_goal(cpu_per_record: float, processes: int) -> tuple[str, bool] | tuple[()]:
    """The deployed layout's goal: no more CPU per record than the original's three
    services (issue 14)."""
    if processes == 1:
        return ()
    return f"<= {ORIGINAL_CPU_PER_RECORD * 1e6:.0f} µs (original)", (
        cpu_per_record <= ORIGINAL_CPU_PER_RECORD
    )


async def in_turns(
    rounds: int, variants: dict[str, Callable[[], Awaitable[Figures]]]
) -> dict[str, list[Figures]]:
    """Each variant's runs, ``rounds`` times in turns: whatever drifts meanwhile (the
    machine, Cassandra's compactions) weighs on every variant alike."""
    runs: dict[str, list[Figures]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            runs[name].append(await run())
    return runs


async def bench_tls_cost(
    plan: Plan, results: Results, settings: dict[str, Any], binary: Path, directory: Path,
    database: Database, in_flight: int, rounds: int,
) -> None:  # fmt: skip
    """The deployed end-to-end run with plain device ports and with TLS ones (the
    certificates of ``m2m tls init``), in turns after a run that warms Cassandra up; the
    medians as ratios: what TLS costs a device's records."""
    tls = init_ca(directory / "tls")

    def deployed(tls: Path | None) -> Callable[[], Awaitable[Figures]]:
        return lambda: bench_end_to_end(plan, results, settings, binary, directory, database,
                                        in_flight, None, DEPLOYED, tls=tls)  # fmt: skip

    await bench_end_to_end(plan, Results(), settings, binary, directory, database, in_flight,
                           None, DEPLOYED)  # fmt: skip
    runs = await in_turns(rounds, {"plain": deployed(None), "tls": deployed(tls)})
    scenario = "7 tls cost"
    heading(f"{scenario}: the deployed end-to-end runs, {rounds} rounds each, medians")
    for index, count in enumerate(plan.devices):
        plain_rate, tls_rate = (statistics.median(run[index][0] for run in runs[name])
                                for name in ("plain", "tls"))  # fmt: skip
        plain_cpu, tls_cpu = (statistics.median(run[index][1] for run in runs[name])
                              for name in ("plain", "tls"))  # fmt: skip
        stored = f"{tls_rate / plain_rate:.0%} ({tls_rate:,.0f} vs {plain_rate:,.0f}/s)"
        results.add(scenario, f"{count:,} dev: records/s stored, TLS / plain", stored)
        cpu = f"{tls_cpu / plain_cpu:.0%} ({tls_cpu * 1e6:,.0f} vs {plain_cpu * 1e6:,.0f} µs)"
        results.add(scenario, f"{count:,} dev: serve CPU/record, TLS / plain", cpu)


async def bench_metrics_cost(
    plan: Plan, results: Results, settings: dict[str, Any], binary: Path, directory: Path,
    database: Database, in_flight: int, before: Path | None, rounds: int,
) -> None:  # fmt: skip
    """End to end in one process, in turns: metrics off, on (served and scraped), and, given
    ``before``, the code before metrics existed; after a run that warms Cassandra up."""
    variants: dict[str, tuple[bool, Path | None]] = {"off": (False, None), "on": (True, None)}
    if before is not None:
        variants["before"] = (False, before)

    def one_process(metrics: bool, code: Path | None) -> Callable[[], Awaitable[Figures]]:
        return lambda: bench_end_to_end(plan, results, settings, binary, directory, database,
                                        in_flight, None, ONE_PROCESS, metrics, code)  # fmt: skip

    await bench_end_to_end(plan, Results(), settings, binary, directory, database, in_flight,
                           None, ONE_PROCESS)  # fmt: skip
    runs = await in_turns(
        rounds, {name: one_process(*variant) for name, variant in variants.items()}
    )
    figures = {name: [f for run in name_runs for f in run] for name, name_runs in runs.items()}
    rate = {name: statistics.median(r for r, _ in found) for name, found in figures.items()}
    cpu = {name: statistics.median(c for _, c in found) for name, found in figures.items()}
    scenario = "5 metrics cost"
    heading(f"{scenario}: {rounds} rounds each, medians")
    for base in [name for name in ("off", "before") if name in variants]:
        results.add(scenario, f"records/s stored, on / {base}", f"{rate['on'] / rate[base]:.1%}",
                    "> 97%", rate["on"] / rate[base] > 0.97)  # fmt: skip
        results.add(scenario, f"serve CPU/record, on / {base}", f"{cpu['on'] / cpu[base]:.1%}",
                    "< 103%", cpu["on"] / cpu[base] < 1.03)  # fmt: skip


def source_tree(revision: str, directory: Path) -> Path:
    """The repository's tree at ``revision``, extracted into ``directory``."""
    tree = directory / f"m2m-{revision}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", revision], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


async def send_paced(
    clients: Sequence[M2MPClient], frame: bytes, per_second: float, seconds: float
) -> int:
    """Frames at ``per_second`` for ``seconds``, one device after the other; how many."""
    started = time.perf_counter()
    sent = 0
    devices = itertools.cycle(clients)
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(int(elapsed * per_second) - sent):
            next(devices).send_raw(frame)
            sent += 1
        await asyncio.sleep(POLL)
    return sent


# --- 4. Idle connections --------------------------------------------------------------


async def bench_idle(
    plan: Plan, results: Results, settings: dict[str, Any], binary: Path, directory: Path
) -> None:
    """RSS before, at half and at all the connections: the second half shows the cost of one
    more connection without the process's one-off growth, which small counts would inflate."""
    scenario = "4 idle"
    count = plan.idle_connections
    half = count // 2
    heading(f"{scenario}: {count:,} identified idle M2MP devices")
    async with (
        running(settings, binary, directory, ("m2mp",), None) as (serve, nsqd),
        contextlib.AsyncExitStack() as exits,
    ):
        await m2mp_devices(serve.ports["m2mp"], 1, exits, first=count)  # the code paths warm
        await settled(nsqd)
        before = serve.rss_mb()
        started = time.perf_counter()
        await m2mp_devices(serve.ports["m2mp"], half, exits)
        connected = time.perf_counter() - started
        await settled(nsqd)
        at_half = serve.rss_mb()
        started = time.perf_counter()
        await m2mp_devices(serve.ports["m2mp"], count - half, exits, first=half)
        connected += time.perf_counter() - started
        await settled(nsqd)
        after = serve.rss_mb()
    marginal = (after - at_half) / (count - half) * 1000
    print(f"  (RSS {before:,.1f} -> {at_half:,.1f} -> {after:,.1f} MB; connected and "
          f"identified in {connected:.1f} s)")  # fmt: skip
    goal_count = 5000
    if count >= goal_count:  # fewer would be dominated by the process's one-off growth
        results.add(scenario, f"RSS of {count:,} connections", f"{after - before:,.1f} MB",
                    f"< 50 MB for {goal_count:,}", after - before < 50)  # fmt: skip
    else:
        results.add(scenario, f"RSS of {count:,} connections", f"{after - before:,.1f} MB")
    results.add(scenario, "RSS per 1,000 more connections", f"{marginal:,.1f} MB")
    results.add(scenario, "identifications/s", rate(count, connected))


# --- 6. Sessions: identification, greeting, the storm ---------------------------------

STORM_CONNECTING = 1000
"""Storm devices connecting at once, a batch after another: what the receivers' listen
backlog holds, as the kernel would let a real fleet in."""
GREETED_TIMEOUT = 300.0


async def greet_all(
    port: int, idents: Sequence[str], exits: contextlib.AsyncExitStack, at_once: int
) -> int:
    """The devices of ``idents`` identified (``at_once`` of them connecting at a time) and
    greeted: for a device with no settings and no capabilities on record, the greeting
    ends with the receiver asking for its settings. How many did not get in or were not
    greeted (the first reason printed)."""
    fleet = await connect_devices(M2MP, HOST, port, idents, exits, batch=at_once,
                                  timeout=GREETED_TIMEOUT)  # fmt: skip
    greetings = await asyncio.gather(
        *(
            client.receive_array(SETTINGS_CHANNEL, timeout=GREETED_TIMEOUT)
            for client in fleet.identified.values()
        ),
        return_exceptions=True,
    )
    problems = [*fleet.refused.values(), *fleet.failed.values()]
    problems += [repr(failure) for failure in greetings if isinstance(failure, BaseException)]
    if problems:
        print(f"  ({len(problems):,} of {len(idents):,} devices not greeted, e.g. {problems[0]})")
    return len(problems)


def session_ident(kind: str, i: int) -> str:
    return f"bench:{kind}{i:05d}"


@dataclass(frozen=True)
class SessionFigures:
    known: float
    """Receiver CPU seconds per identification and greeting of a known device."""
    new: float
    """The same for a new device."""
    storm_wall: float
    storm_cpu: float
    """Receiver CPU seconds per device of the storm."""
    storm_peak_mb: float
    storm_missed: int
    """Storm devices not greeted (refused, cut off, or no greeting in time)."""


async def measure_sessions(
    settings: dict[str, Any], binary: Path, directory: Path, known: Sequence[str],
    new: Sequence[str], profile: Path | None, code: Path | None,
) -> SessionFigures:  # fmt: skip
    """One receiver process (of the source tree ``code``, else this one): the known and new
    devices one batch at a time, then the storm of every known one."""
    count = len(new)
    async with running(settings, binary, directory, ("m2mp",), profile, code=code) as (
        serve,
        nsqd,
    ):
        port = serve.ports["m2mp"]
        async with contextlib.AsyncExitStack() as exits:  # the code paths warm
            await greet_all(port, [f"{new[0]}w", known[0]], exits, CONNECT_BATCH)
        costs = []
        for idents in (known[:count], new):
            await settled(nsqd)
            async with contextlib.AsyncExitStack() as exits:
                with CpuWindow(serve) as window:
                    if await greet_all(port, idents, exits, CONNECT_BATCH):
                        raise RuntimeError("devices connecting one batch at a time must get in")
            costs.append(window.serve_cpu / count)
        await settled(nsqd)
        async with contextlib.AsyncExitStack() as exits:
            with CpuWindow(serve) as storm:
                missed = await greet_all(port, known, exits, STORM_CONNECTING)
            peak = serve.serves[0].peak_rss_mb()
    return SessionFigures(
        costs[0], costs[1], storm.wall, storm.serve_cpu / len(known), peak, missed
    )


async def bench_sessions(
    plan: Plan, results: Results, settings: dict[str, Any], binary: Path, directory: Path,
    database: Database, profile: Path | None, before: Path | None,
) -> None:  # fmt: skip
    scenario = "6 sessions"
    count, storm = plan.session_devices, plan.storm_devices
    known = [session_ident("known", i) for i in range(max(count, storm))]
    again = ", then all again before" if before else ""
    heading(f"{scenario}: {count:,} known and {count:,} new devices one batch at a time, "
            f"then {storm:,} known at once{again}")  # fmt: skip
    started = time.perf_counter()
    await create_devices(database, known)
    print(f"  ({len(known):,} devices registered in {time.perf_counter() - started:.1f} s)")
    new = [session_ident("new", i) for i in range(count)]
    now = await measure_sessions(settings, binary, directory, known[:storm], new, profile,
                                 None)  # fmt: skip
    for kind, cost, original in (
        ("known", now.known, ORIGINAL_KNOWN_IDENTIFICATION),
        ("new", now.new, ORIGINAL_NEW_IDENTIFICATION),
    ):
        results.add(scenario, f"receiver CPU/identification, {kind}", f"{cost * 1e6:,.0f} µs",
                    f"<= {original * 1e6:,.0f} µs (original)", cost <= original)  # fmt: skip
    results.add(scenario, f"storm: {storm:,} greeted in", f"{now.storm_wall:.1f} s",
                f"< {STORM_GOAL:.0f} s for 10,000",
                not now.storm_missed and now.storm_wall < STORM_GOAL * storm / 10_000)  # fmt: skip
    results.add(scenario, "storm: devices not greeted", f"{now.storm_missed:,}")
    results.add(scenario, "storm: receiver CPU/device", f"{now.storm_cpu * 1e6:,.0f} µs")
    results.add(scenario, "storm: receiver peak RSS", f"{now.storm_peak_mb:,.0f} MB")
    if before is None:
        return
    old_new = [session_ident("old", i) for i in range(count)]
    then = await measure_sessions(settings, binary, directory, known[:storm], old_new,
                                  profile, before)  # fmt: skip
    for name, value, base in (
        ("receiver CPU/identification, known", now.known, then.known),
        ("receiver CPU/identification, new", now.new, then.new),
        ("storm wall time", now.storm_wall, then.storm_wall),
        ("storm: receiver CPU/device", now.storm_cpu, then.storm_cpu),
    ):
        results.add(scenario, f"{name}, now / before", f"{value / base:.0%}")
    results.add(scenario, "before: known, new, storm, not greeted",
                f"{then.known * 1e6:,.0f} µs, {then.new * 1e6:,.0f} µs, "
                f"{then.storm_wall:.1f} s, {then.storm_missed:,}")  # fmt: skip


# --- The run --------------------------------------------------------------------------


SCENARIOS = ("m2mp", "alip", "e2e", "e2e-deployed", "idle", "sessions", "tls", "metrics")
TOPOLOGIES = {"e2e": ONE_PROCESS, "e2e-deployed": DEPLOYED}


async def run(
    plan: Plan, config: Config, directory: Path, profile: Path | None, scenarios: Sequence[str],
    baseline: str | None = None, rounds: int = 3,
) -> Results:  # fmt: skip
    results = Results()
    binary = nsq_artifact(config.stack.cache_dir.expanduser(), config.stack.nsq_version).home
    binary = binary / "bin" / "nsqd"
    # What differs from the defaults only: an older revision (--baseline-rev) refuses the
    # keys it does not know.
    settings = dump_with_secrets(config, exclude_defaults=True)
    database = await asyncio.to_thread(Database.connect, config.cassandra)
    try:
        started = time.perf_counter()
        await create_devices(database, [*plan.idents, PROBE_IDENT])
        print(f"{len(plan.idents) + 1:,} devices registered in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        if "m2mp" in scenarios:
            await bench_m2mp(plan, results, settings, binary, directory, profile)
        if "alip" in scenarios:
            await bench_alip(plan, results, settings, binary, directory, database, profile)
        for processes in (TOPOLOGIES[name] for name in scenarios if name in TOPOLOGIES):
            await bench_end_to_end(plan, results, settings, binary, directory, database,
                                   config.cassandra.max_in_flight, profile, processes)  # fmt: skip
        if "idle" in scenarios:
            await bench_idle(plan, results, settings, binary, directory)
        before = source_tree(baseline, directory) if baseline else None
        if "sessions" in scenarios:
            await bench_sessions(plan, results, settings, binary, directory, database, profile,
                                 before)  # fmt: skip
        if "tls" in scenarios:
            await bench_tls_cost(plan, results, settings, binary, directory, database,
                                 config.cassandra.max_in_flight, rounds)  # fmt: skip
        if "metrics" in scenarios:
            await bench_metrics_cost(plan, results, settings, binary, directory, database,
                                     config.cassandra.max_in_flight, before, rounds)  # fmt: skip
    finally:
        database.close()
    return results


def parse_counts(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: as the m2m command)")
    parser.add_argument("--devices", type=parse_counts, help="end-to-end device counts "
                        "(default 100,1000,5000; quick 20,200)")  # fmt: skip
    parser.add_argument("--frames", type=int, help="frames (lines) per receiver-alone run "
                        "(default 200,000; quick 20,000)")  # fmt: skip
    parser.add_argument("--records", type=int, help="frames per end-to-end run "
                        "(default 20,000; quick 2,000)")  # fmt: skip
    parser.add_argument("--scenarios", type=lambda text: text.split(","), default=SCENARIOS,
                        help=f"which to run, comma-separated (default all: {','.join(SCENARIOS)}; "
                        "alip includes the firmware download)")  # fmt: skip
    parser.add_argument("--storm", type=int, help="devices of the connection storm "
                        "(default 10,000; quick 1,000)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small counts, about a minute")
    parser.add_argument("--baseline-rev", metavar="REV", help="metrics and sessions scenarios: "
                        "also run serve from this git revision (the code before)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="metrics and tls scenarios: "
                        "rounds of their runs, in turns (default 3)")  # fmt: skip
    parser.add_argument("--profile", metavar="DIR", type=Path, help="run each m2m serve under "
                        "cProfile, keep its stats in DIR and print where its time goes "
                        "(slows serve down)")  # fmt: skip
    arguments = parser.parse_args()
    quick = arguments.quick
    plan = Plan(
        m2mp_devices=20 if quick else 100,
        alip_connections=100 if quick else 1000,
        frames=arguments.frames or (20_000 if quick else 200_000),
        devices=arguments.devices or ((20, 200) if quick else (100, 1000, 5000)),
        records=arguments.records or (2_000 if quick else 20_000),
        paced_seconds=3 if quick else 10,
        idle_connections=500 if quick else 5000,
        firmware_size=(256 * KiB) if quick else MiB,
        session_devices=200 if quick else 1000,
        storm_devices=arguments.storm or (1000 if quick else 10_000),
    )
    open_files = raise_open_files_limit()
    if open_files < max(max(plan.idle_connections, *plan.devices) * 2, plan.storm_devices) + 1000:
        print(f"warning: only {open_files} open files allowed: the big counts will fail")

    configured = load_config(arguments.config)
    if arguments.profile:
        arguments.profile.mkdir(parents=True, exist_ok=True)
    with (
        throwaway_keyspace(configured.cassandra) as cassandra,
        tempfile.TemporaryDirectory(prefix="m2m-bench-") as directory,
    ):
        config = configured.model_copy(update={"cassandra": cassandra})
        print(f"keyspace {cassandra.keyspace}, {os.cpu_count()} CPUs, "
              f"up to {open_files:,} open files", flush=True)  # fmt: skip
        results = asyncio.run(
            run(
                plan,
                config,
                Path(directory),
                arguments.profile and arguments.profile.resolve(),
                arguments.scenarios,
                arguments.baseline_rev,
                arguments.rounds,
            )
        )
        print("\nWall-clock rates are noisy on this shared machine; CPU per frame is steadier.")
        if arguments.profile:
            print("Profiled run: cProfile slows serve down, so these figures are pessimistic.")
        print(results.table())


if __name__ == "__main__":
    main()
