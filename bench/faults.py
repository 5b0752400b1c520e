"""Faults, counted: devices that honour acknowledgements lose nothing, whatever process dies.

Part 1, faults. Devices play careful field devices (:mod:`m2m.receivers.counted_device`):
numbered, dated records in batches, each closed by an acknowledgement request (ALIP ``A``,
M2MP ping); what is not acknowledged when a connection drops is sent again on the next.
Against the local stack's nsqd and Cassandra and ``m2m serve`` processes laid out as
deploy/ runs them (receivers, converter, storage; on a topic prefix of their own), each
scenario injects one fault mid-stream:

  receiver   the receivers process SIGKILLed, started again a second later
  nsqd       nsqd SIGKILLed (``m2m stack stop nsqd --kill``), started again a second later
  workers    converter and storage SIGKILLed together, started again a second later
  cassandra  Cassandra stopped (``m2m stack stop cassandra1``) for 60 s, then started
  mid-frame  every device's connection cut in the middle of a frame (a line)

and counts, per device, what was sent, acknowledged and stored: lost = acknowledged but
not stored, duplicated = stored more than once. "acks back" is the time from the end of
the fault to the first acknowledgement after it; "all stored", to the moment every
acknowledged record was readable.

Part 2, cost (``cost``). The same devices, each sending ``--records`` records as fast as
acknowledgements let it, end to end through ``m2m serve`` processes (as deployed) on a
private nsqd, with each combination of ``receivers.ack`` (immediate, nsqd) and nsqd's
queue (memory: nsqd's default; disk: ``--mem-queue-size=0``), in alternating rounds of one
run: records per second from the first sent to the last acknowledged, and to the last
stored in Cassandra (the end-to-end throughput), the ratio of each to immediate + memory
(medians of the rounds), and the serve processes' CPU per record.

Nothing is asserted here; tests/integration/test_faults.py asserts on the same scenarios
at a smaller load. It stops and starts the stack's nsqd and Cassandra: nothing else
should use the stack meanwhile.

Run from the repository root:  .venv/bin/python -m bench.faults [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.keyspace import bench_workspace
from bench.receivers import DEPLOYED, free_port, running, settled, stored, wait_for
from m2m.cassandra import Database
from m2m.config import Config, dump_with_secrets, load_config
from m2m.errors import Unavailable
from m2m.receivers.counted_device import (
    CountedALIPDevice,
    CountedDevice,
    CountedM2MPDevice,
    stored_numbers,
)
from m2m.stack.nsq import delete_topics
from m2m.stack.provision import nsq_artifact
from m2m.timeseries import TimeSeries

M2M = str(Path(sys.executable).parent / "m2m")
HOST = "127.0.0.1"
ROLES = {"receivers": "m2mp,alip", "converter": "converter", "storage": "storage"}
"""The long-running processes of deploy/, and what each serves."""
START_TIMEOUT = 120.0
STORED_TIMEOUT = 300.0
"""Seconds after a fault's end to wait for every acknowledged record to be readable."""
RESTART_AFTER = 1.0
"""Seconds a killed process stays dead."""
POLL = 0.5


# --- Processes ---------------------------------------------------------------------------


class Deployment:
    """``m2m serve`` processes laid out as deploy/ runs them, killed and started at will.

    They share one config (the base settings, fixed receiver ports, a topic prefix of
    their own), so a receiver started again listens where the devices reconnect.
    """

    def __init__(self, settings: dict[str, Any], directory: Path) -> None:
        settings = copy.deepcopy(settings)
        self.alip_port, self.m2mp_port = free_port(), free_port()
        receivers = settings.setdefault("receivers", {})
        receivers["m2mp"] = {"listen": f"tcp:{self.m2mp_port}:interface={HOST}"}
        receivers["alip"] = {"listen": f"tcp:{self.alip_port}:interface={HOST}"}
        nsq = settings.setdefault("nsq", {})
        nsq["topic_prefix"] = f"{nsq.get('topic_prefix', '')}faults{uuid.uuid4().hex[:6]}."
        nsq["lookupd_poll_interval"] = 1  # consumers find nsqd again a second after it is back
        self.directory = directory
        self.config_file = directory / f"faults-{self.m2mp_port}.yaml"
        self.config_file.write_text(yaml.safe_dump(settings))
        self.topic_prefix: str = nsq["topic_prefix"]
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, role: str) -> Path:
        return self.directory / f"faults-{self.m2mp_port}-{role}.log"

    def start(self, role: str) -> None:
        """Start ``role`` and return once it serves (its log says so)."""
        log = self.log(role)
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            self._processes[role] = process = subprocess.Popen(
                [M2M, "--config", str(self.config_file), "serve", "--only", ROLES[role]],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while b"serving: " not in log.read_bytes()[offset:]:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"{role} did not start:\n{log.read_text()[offset:]}")
            time.sleep(0.1)

    def kill(self, role: str) -> None:
        process = self._processes.pop(role)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        """SIGTERM every process, receivers first; SIGKILL what does not stop in a minute."""
        for role in ROLES:
            process = self._processes.pop(role, None)
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def cpu_seconds(self, role: str) -> float:
        """User + system time of the process serving ``role``, from /proc."""
        pid = self._processes[role].pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def serving(self, role: str) -> bool:
        process = self._processes.get(role)
        return process is not None and process.poll() is None


@contextlib.asynccontextmanager
async def deployed(settings: dict[str, Any], directory: Path) -> AsyncIterator[Deployment]:
    """A :class:`Deployment` with every process started, stopped on the way out."""
    deployment = Deployment(settings, directory)
    try:
        for role in ("storage", "converter", "receivers"):
            await asyncio.to_thread(deployment.start, role)
        yield deployment
    finally:
        await asyncio.to_thread(deployment.stop)
        await asyncio.to_thread(delete_topics, deployment.topic_prefix)


def m2m(config_file: Path, *arguments: str) -> None:
    """Run an ``m2m`` command (the stack's, here); raise if it fails."""
    result = subprocess.run(
        [M2M, "--config", str(config_file), *arguments], capture_output=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"m2m {' '.join(arguments)}: {result.stderr.decode(errors='replace')}")


# --- Faults ------------------------------------------------------------------------------

Measures = dict[str, float]
Fault = Callable[[Deployment, Sequence[CountedDevice[Any]]], Awaitable[Measures]]
"""Inflicts one fault and repairs it; returns what it measured on the way."""


async def kill_receivers(deployment: Deployment, _: Sequence[CountedDevice[Any]]) -> Measures:
    await asyncio.to_thread(deployment.kill, "receivers")
    await asyncio.sleep(RESTART_AFTER)
    await asyncio.to_thread(deployment.start, "receivers")
    return {}


async def kill_nsqd(deployment: Deployment, _: Sequence[CountedDevice[Any]]) -> Measures:
    await asyncio.to_thread(m2m, deployment.config_file, "stack", "stop", "nsqd", "--kill")
    await asyncio.sleep(RESTART_AFTER)
    await asyncio.to_thread(m2m, deployment.config_file, "stack", "start", "nsqd")
    return {}


async def kill_workers(deployment: Deployment, _: Sequence[CountedDevice[Any]]) -> Measures:
    for role in ("converter", "storage"):
        await asyncio.to_thread(deployment.kill, role)
    await asyncio.sleep(RESTART_AFTER)
    for role in ("storage", "converter"):
        await asyncio.to_thread(deployment.start, role)
    return {}


def stop_cassandra(seconds: float) -> Fault:
    """Cassandra stopped for ``seconds``; measures meanwhile the CPU the storage worker and
    the receivers took (a share of one core: they must wait, not spin) and how many
    acknowledgements the devices got (the receivers keep accepting)."""

    async def fault(deployment: Deployment, devices: Sequence[CountedDevice[Any]]) -> Measures:
        cpu = {role: deployment.cpu_seconds(role) for role in ("storage", "receivers")}
        started = time.monotonic()
        await asyncio.to_thread(m2m, deployment.config_file, "stack", "stop", "cassandra1")
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
        ended = time.monotonic()
        outage = ended - started
        measures = {
            "outage s": outage,
            "acknowledgements meanwhile": sum(
                started < moment < ended for device in devices for moment in device.acknowledged_at
            ),
            **{
                f"{role} CPU share": (deployment.cpu_seconds(role) - before) / outage
                for role, before in cpu.items()
            },
        }
        await asyncio.to_thread(m2m, deployment.config_file, "stack", "start", "cassandra1")
        return measures

    return fault


async def cut_mid_frame(_: Deployment, devices: Sequence[CountedDevice[Any]]) -> Measures:
    for device in devices:
        device.cut()
    return {}


FAULTS: dict[str, Callable[[float], Fault]] = {
    "receiver": lambda _: kill_receivers,
    "nsqd": lambda _: kill_nsqd,
    "workers": lambda _: kill_workers,
    "cassandra": stop_cassandra,
    "mid-frame": lambda _: cut_mid_frame,
}


# --- Scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    devices: int
    """Devices of each protocol."""
    batch: int = 10
    """Records between two acknowledgement requests."""
    interval: float = 0.05
    """Seconds a device waits between batches."""
    warmup: float = 3.0
    """Seconds of traffic before the fault."""
    after: float = 3.0
    """Seconds of traffic after the fault's end."""


@dataclass
class Outcome:
    scenario: str
    sent: int
    acknowledged: int
    stored: int
    lost: int
    duplicated: int
    acks_back: float | None
    """Seconds from the fault's end to the first acknowledgement after it."""
    all_stored: float | None
    """Seconds from the fault's end until every acknowledged record was readable."""
    measures: Measures = field(default_factory=dict)


def counted_devices(deployment: Deployment, load: Load) -> list[CountedDevice[Any]]:
    run = uuid.uuid4().hex[:8]
    alip: list[CountedDevice[Any]] = [
        CountedALIPDevice(f"fault:a{run}{i}", HOST, deployment.alip_port, batch=load.batch)
        for i in range(load.devices)
    ]
    m2mp: list[CountedDevice[Any]] = [
        CountedM2MPDevice(f"fault:m{run}{i}", HOST, deployment.m2mp_port, batch=load.batch)
        for i in range(load.devices)
    ]
    return alip + m2mp


async def run_scenario(
    name: str, fault: Fault, deployment: Deployment, timeseries: TimeSeries, load: Load
) -> Outcome:
    """Devices sending while ``fault`` strikes; then everything counted."""
    devices = counted_devices(deployment, load)
    stop = asyncio.Event()
    runs = [asyncio.create_task(device.run(stop, load.interval)) for device in devices]
    try:
        await asyncio.sleep(load.warmup)
        measures = await fault(deployment, devices)
        ended = time.monotonic()
        await asyncio.sleep(load.after)
    finally:
        stop.set()
        await asyncio.gather(*runs)
    acks_back = min((t for d in devices for t in d.acknowledged_at if t > ended), default=None)
    all_stored = await _until_stored(timeseries, devices, ended)
    counts = await asyncio.gather(*(stored_numbers(timeseries, device) for device in devices))
    return Outcome(
        scenario=name,
        sent=sum(device.sent for device in devices),
        acknowledged=sum(len(device.acknowledged) for device in devices),
        stored=sum(len(count) for count in counts),
        lost=sum(
            len(device.acknowledged - count.keys())
            for device, count in zip(devices, counts, strict=True)
        ),
        duplicated=sum(n - 1 for count in counts for n in count.values() if n > 1),
        acks_back=None if acks_back is None else acks_back - ended,
        all_stored=all_stored,
        measures=measures,
    )


async def _until_stored(
    timeseries: TimeSeries, devices: Sequence[CountedDevice[Any]], since: float
) -> float | None:
    """Seconds from ``since`` until every acknowledged record is readable; None: never."""
    deadline = time.monotonic() + STORED_TIMEOUT
    while time.monotonic() < deadline:
        try:
            counts = await asyncio.gather(*(stored_numbers(timeseries, d) for d in devices))
        except Unavailable:  # our own connection to a Cassandra just back is not up yet
            counts = []
        if counts and all(d.acknowledged <= c.keys() for d, c in zip(devices, counts, strict=True)):
            return time.monotonic() - since
        await asyncio.sleep(POLL)
    return None


def outcome_table(outcomes: Sequence[Outcome]) -> str:
    headers = ["scenario", "sent", "acked", "stored", "lost", "dup", "acks back", "all stored"]
    rows = [headers]
    for o in outcomes:
        rows.append(
            [o.scenario, f"{o.sent:,}", f"{o.acknowledged:,}", f"{o.stored:,}", str(o.lost),
             str(o.duplicated), _seconds(o.acks_back), _seconds(o.all_stored)]
        )  # fmt: skip
    lines = _aligned(rows)
    for o in outcomes:
        if o.measures:
            shown = ", ".join(f"{name} {value:.2f}" for name, value in o.measures.items())
            lines.append(f"  {o.scenario}: {shown}")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


# --- Cost --------------------------------------------------------------------------------

ACKS = ("immediate", "nsqd")
SERVER_RECORDS_PER_CONNECTION = 3
"""``device_identified``, ``device_connected``, ``device_disconnected``."""
QUEUES = {"memory": (), "disk": ("--mem-queue-size=0",)}


@dataclass
class Rate:
    acknowledged: float
    """Records per second, from the first sent to the last acknowledged."""
    stored: float
    """Records per second, from the first sent to the last stored (end to end)."""
    cpu_per_record: float
    """Seconds of CPU of every serve process, per record, until the last was stored."""


async def measure_cost(
    settings: dict[str, Any], queue: str, binary: Path, directory: Path, load: Load, records: int
) -> Rate:
    """Every device sends ``records`` as fast as acknowledgements let it: how fast they
    are acknowledged, and stored (all of them, end to end)."""
    platform_and_nsqd = running(settings, binary, directory, DEPLOYED, None, QUEUES[queue])
    async with platform_and_nsqd as (platform, nsqd):
        port = platform.ports
        run = uuid.uuid4().hex[:8]
        devices: list[CountedDevice[Any]] = [
            *(CountedALIPDevice(f"cost:a{run}{i}", HOST, port["alip"], batch=load.batch,
                                quota=records) for i in range(load.devices)),
            *(CountedM2MPDevice(f"cost:m{run}{i}", HOST, port["m2mp"], batch=load.batch,
                                quota=records) for i in range(load.devices)),
        ]  # fmt: skip
        base = stored(await settled(nsqd)).finished
        total = records * len(devices)
        # Each device's one connection adds three _server records to store.
        messages = total + SERVER_RECORDS_PER_CONNECTION * len(devices)
        cpu = platform.cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(device.run(asyncio.Event()) for device in devices))
        acknowledged = time.perf_counter()
        done = await wait_for(
            nsqd, lambda stats: stored(stats).finished >= base + messages, "every record stored"
        )
        cpu = platform.cpu_seconds() - cpu
        assert all(device.connections == 1 for device in devices), "a connection broke"
    return Rate(total / (acknowledged - started), total / (done - started), cpu / total)


async def cost_table(config: Config, directory: Path, load: Load, records: int, rounds: int) -> str:
    binary = nsq_artifact(config.stack.cache_dir.expanduser(), config.stack.nsq_version).home
    binary = binary / "bin" / "nsqd"
    variants = [(ack, queue) for queue in QUEUES for ack in ACKS]
    rates: dict[tuple[str, str], list[Rate]] = {variant: [] for variant in variants}
    for round_number in range(rounds):
        for ack, queue in variants:
            settings = dump_with_secrets(config)
            settings["receivers"]["ack"] = ack
            rate = await measure_cost(settings, queue, binary, directory, load, records)
            rates[(ack, queue)].append(rate)
            print(
                f"  round {round_number + 1}: ack {ack}, {queue} queue: "
                f"{rate.acknowledged:,.0f} acked/s, {rate.stored:,.0f} stored/s",
                flush=True,
            )
    base = rates[(ACKS[0], "memory")]
    base_acked = statistics.median(rate.acknowledged for rate in base)
    base_stored = statistics.median(rate.stored for rate in base)
    rows = [["receivers.ack", "nsqd queue", "acked/s", "ratio", "stored/s", "ratio", "CPU/record"]]
    for (ack, queue), measured in rates.items():
        acked = statistics.median(rate.acknowledged for rate in measured)
        stored_rate = statistics.median(rate.stored for rate in measured)
        cpu = statistics.median(rate.cpu_per_record for rate in measured)
        rows.append(
            [ack, queue, f"{acked:,.0f}", f"{acked / base_acked:.0%}", f"{stored_rate:,.0f}",
             f"{stored_rate / base_stored:.0%}", f"{cpu * 1e6:,.0f} µs"]
        )  # fmt: skip
    return "\n".join(_aligned(rows))


# --- Main --------------------------------------------------------------------------------

SCENARIOS = (*FAULTS, "cost")


async def run(
    config: Config,
    directory: Path,
    scenarios: Sequence[str],
    load: Load,
    outage: float,
    records: int,
    rounds: int,
) -> None:
    settings = dump_with_secrets(config)
    outcomes = []
    faults = [name for name in scenarios if name in FAULTS]
    if faults:
        database = await asyncio.to_thread(Database.connect, config.cassandra)
        try:
            async with deployed(settings, directory) as deployment:
                for name in faults:
                    print(f"fault: {name}", flush=True)
                    outcome = await run_scenario(
                        name, FAULTS[name](outage), deployment, TimeSeries(database), load
                    )
                    outcomes.append(outcome)
                    print(outcome_table([outcome]), flush=True)
        finally:
            database.close()
        print(f"\n{load.devices} ALIP and {load.devices} M2MP devices, batches of {load.batch}:")
        print(outcome_table(outcomes))
    if "cost" in scenarios:
        print(f"\ncost: {records:,} records a device, {rounds} round(s)", flush=True)
        print(await cost_table(config, directory, load, records, rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: as the m2m command)")
    parser.add_argument("--scenarios", type=lambda text: text.split(","), default=SCENARIOS,
                        help=f"comma-separated (default all: {','.join(SCENARIOS)})")  # fmt: skip
    parser.add_argument("--devices", type=int, default=50, help="devices of each protocol")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds Cassandra is down")
    parser.add_argument("--records", type=int, default=500, help="cost: records a device sends")
    parser.add_argument("--rounds", type=int, default=3, help="cost: rounds of every variant")
    arguments = parser.parse_args()
    with bench_workspace(load_config(arguments.config), "m2m-faults-") as (config, directory):
        print(f"keyspace {config.cassandra.keyspace}, {os.cpu_count()} CPUs", flush=True)
        asyncio.run(
            run(
                config,
                directory,
                arguments.scenarios,
                Load(devices=arguments.devices),
                arguments.outage,
                arguments.records,
                arguments.rounds,
            )
        )


if __name__ == "__main__":
    main()
