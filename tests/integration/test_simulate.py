"""``m2m simulate m2mp|alip`` against a running ``m2m serve``, run as an operator runs it.

Every test plays devices of its own (an ident prefix of its own), so what Cassandra holds
for them is what that run sent: the records acknowledged must all be stored, once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from m2m.cassandra import Database
from m2m.registry.device import device_id_for
from m2m.simulate import LATITUDE, LOCATION_CHANNEL, LONGITUDE, idents
from m2m.timeseries import Record, TimeSeries
from tests.conftest import (
    M2M,
    Platform,
    config_with_own_topics,
    eventually,
    free_port,
    run_m2m,
    start_platform,
)

PROBLEMS_FOUND = 3
SUMMARY_LABELS = ("devices", "records", "errors", "ping latency")
F32 = 1e-4
"""How far a location sent as f32 (M2MP) lands from the value it was taken from."""


@pytest.fixture
def timeseries(database: Database) -> TimeSeries:
    return TimeSeries(database)


@pytest.fixture(scope="module")
def registered_only(
    config_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Both receivers, taking only devices registered beforehand, and the workers that
    store what they take (on NSQ topics of their own: no other platform stores it)."""
    directory = tmp_path_factory.mktemp("registered")
    running = start_platform(
        config_with_own_topics(config_file, directory),
        directory,
        only="m2mp,alip,converter,storage",
        enrollment="registered",
    )
    yield running
    running.stop()


def _prefix() -> str:
    """An ident prefix of this test's own, which both protocols accept."""
    return f"s{uuid.uuid4().hex[:6]}:"


def _port(platform: Platform, protocol: str) -> int:
    return platform.m2mp_port if protocol == "m2mp" else platform.alip_port


def _summary(stdout: bytes) -> dict[str, str]:
    """The text summary: label -> what follows it (reasons' lines appended to errors)."""
    summary: dict[str, str] = {}
    for line in stdout.decode().splitlines():
        label = next((label for label in SUMMARY_LABELS if line.startswith(label)), "errors")
        text = line.removeprefix(label).strip()
        summary[label] = f"{summary[label]}\n{text}" if label in summary else text
    return summary


async def _stored(timeseries: TimeSeries, ident: str) -> list[Record]:
    series = timeseries.records(f"dev-{device_id_for(ident)}", LOCATION_CHANNEL)
    async with aclosing(series):
        return [record async for record in series]


async def _stored_counts(timeseries: TimeSeries, device_idents: list[str]) -> list[int]:
    return [len(await _stored(timeseries, ident)) for ident in device_idents]


@pytest.mark.parametrize(
    ("protocol", "rate", "where"),
    [
        ("m2mp", "50", "given"),  # --port given, no configuration needed
        ("alip", "50/s", "configured"),  # the port from receivers.alip.listen
    ],
)
async def test_devices_send_their_share_and_what_is_acknowledged_is_stored(
    platform: Platform, timeseries: TimeSeries, protocol: str, rate: str, where: str
) -> None:
    prefix = _prefix()
    options = ["--devices", "5", "--rate", rate, "--duration", "2", "--ident-prefix", prefix]
    if where == "given":
        result = run_m2m("simulate", protocol, *options, "--port", str(_port(platform, protocol)))
    else:
        result = run_m2m("simulate", protocol, *options, config=platform.config_file)

    summary = _summary(result.stdout)
    assert summary["devices"] == "5 identified, 0 refused, 0 failed to connect"
    # 50 records a second for 2 s: 100, 20 a device; the last barrier covers them all.
    assert re.fullmatch(
        r"sent 100, acknowledged 100 \([\d.]+/s over [\d.]+ s\)", summary["records"]
    )
    assert summary["errors"] == "0"
    latency = (
        r"p50 ([\d.]+) ms, p90 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms \((\d+) barriers\)"
    )
    found = re.fullmatch(latency, summary["ping latency"])
    assert found is not None, summary["ping latency"]
    p50, p90, p99, longest = (float(value) for value in found.groups()[:4])
    assert p50 <= p90 <= p99 <= longest
    assert int(found[5]) >= 5  # about one a second each, the last one not counted
    assert result.stderr == b""  # no progress bar off a terminal

    device_idents = idents(prefix, 5)
    counts = await eventually(
        lambda: _stored_counts(timeseries, device_idents),
        lambda counts: sum(counts) >= 100,
        "the 100 acknowledged records stored",
    )
    assert counts == [20] * 5
    record = (await _stored(timeseries, device_idents[0]))[0]
    assert record.data["lat"] == pytest.approx(LATITUDE, abs=F32)
    assert record.data["lon"] == pytest.approx(LONGITUDE, abs=F32)


async def test_refused_devices_are_counted_and_the_run_exits_3(
    registered_only: Platform, timeseries: TimeSeries
) -> None:
    prefix = _prefix()
    device_idents = idents(prefix, 5)
    for ident in device_idents[:2]:
        run_m2m("device", "create", ident, config=registered_only.config_file)

    result = run_m2m(
        "simulate", "m2mp", "--devices", "5", "--rate", "10", "--duration", "1",
        "--ident-prefix", prefix, "--json", config=registered_only.config_file, check=False,
    )  # fmt: skip

    assert result.returncode == PROBLEMS_FOUND, result.stderr.decode()
    (line,) = result.stdout.decode().splitlines()
    summary = json.loads(line)
    assert summary["protocol"] == "m2mp"
    assert summary["port"] == registered_only.m2mp_port
    assert (summary["devices"], summary["identified"], summary["refused"]) == (5, 2, 3)
    assert summary["failed_to_connect"] == 0
    assert (summary["sent"], summary["acknowledged"]) == (10, 10)  # shared by the two in
    assert summary["errors"] == 3
    assert summary["error_reasons"] == [
        {"reason": "identification refused (0x01 0x00)", "devices": 3}
    ]
    assert summary["ping_ms"]["count"] >= 2
    assert summary["stopped_early"] is False
    counts = await eventually(
        lambda: _stored_counts(timeseries, device_idents),
        lambda counts: sum(counts) >= 10,
        "the 10 records of the two registered devices stored",
    )
    assert counts == [5, 5, 0, 0, 0]


def test_an_alip_device_refused_is_a_reason_line_of_its_own(registered_only: Platform) -> None:
    result = run_m2m(
        "simulate", "alip", "--devices", "3", "--duration", "1", "--ident-prefix", _prefix(),
        config=registered_only.config_file, check=False,
    )  # fmt: skip
    assert result.returncode == PROBLEMS_FOUND
    summary = _summary(result.stdout)
    assert summary == {
        "devices": "0 identified, 3 refused, 0 failed to connect",
        "records": "sent 0, acknowledged 0 (none sent)",
        "errors": "3\n3 device(s): identification refused (ID 0)",
        "ping latency": "- (no barrier answered)",
    }


def test_nothing_listening_is_one_line_and_exit_1() -> None:
    port = free_port()
    result = run_m2m("simulate", "m2mp", "--port", str(port), "--devices", "120", check=False)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        f"Error: 127.0.0.1:{port}: cannot connect: nothing listens (connection refused)"
    ]


def test_a_bad_value_is_one_line_and_exit_1() -> None:
    result = run_m2m("simulate", "alip", "--rate", "fast", "--port", "1", check=False)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "Error: Invalid value for '--rate': 'fast' is not a rate: records a second, "
        "such as 200 or 200/s"
    ]


async def test_ctrl_c_stops_early_and_still_prints_the_summary(
    platform: Platform, timeseries: TimeSeries
) -> None:
    prefix = _prefix()
    (ident,) = idents(prefix, 1)
    port = str(platform.alip_port)
    command = [M2M, "simulate", "alip", "--port", port, "--devices", "1", "--rate", "20",
               "--duration", "3600", "--ident-prefix", prefix, "--json"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await eventually(lambda: _stored(timeseries, ident), bool, "the device's first record")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.decode()
    summary: dict[str, Any] = json.loads(stdout)
    assert summary["stopped_early"] is True
    assert summary["identified"] == 1
    assert summary["errors"] == 0
    assert 0 < summary["sent"] == summary["acknowledged"]  # the last barrier covers them all
    counts = await eventually(
        lambda: _stored_counts(timeseries, [ident]),
        lambda counts: counts[0] >= summary["sent"],
        "every record sent stored",
    )
    assert counts == [summary["sent"]]
