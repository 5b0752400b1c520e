"""``m2m serve`` with ``logging.format: json``: every line of its log is a JSON object, and
the lines about a device connection say which connection and which device.

Each test runs a platform of its own (NSQ topics of its own too) with the logging
section it tests, has M2MP devices break the protocol (which the receiver logs), stops
the platform and reads its whole log.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import yaml

from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import device_id_for
from tests.conftest import Platform, config_with_own_topics, start_platform

HOST = "127.0.0.1"
UNKNOWN_HEADER = b"\xff"


def config_logging(config_file: Path, directory: Path, **logging: str) -> Path:
    """A copy of the test run's config with NSQ topics of its own and this ``logging``."""
    path = config_with_own_topics(config_file, directory)
    settings = yaml.safe_load(path.read_text())
    settings["logging"] = logging
    path.write_text(yaml.safe_dump(settings))
    return path


def serve(config_file: Path, directory: Path, **logging: str) -> Platform:
    return start_platform(config_logging(config_file, directory, **logging), directory)


async def identified_device_breaks_the_protocol(platform: Platform) -> tuple[str, str]:
    """A device identifies, sends a frame that is dropped, then an unknown frame header
    (the receiver closes its connection); its device id and ``ip:port``."""
    ident = f"logs:{uuid.uuid4().hex[:20]}"
    async with await M2MPClient.connect(HOST, platform.m2mp_port) as device:
        assert await device.identify(ident)
        device.send_data("lsen:..", b"1")  # a channel no record can be stored under
        await device.ping(1)  # answered once the frame before it was handled (and logged)
        device.send_raw(UNKNOWN_HEADER)
        assert await device.closed()
        return device_id_for(ident), device.local_address


async def anonymous_device_breaks_the_protocol(platform: Platform) -> str:
    """A device sends an unknown frame header before saying who it is; its ``ip:port``."""
    async with await M2MPClient.connect(HOST, platform.m2mp_port) as device:
        device.send_raw(UNKNOWN_HEADER)
        assert await device.closed()
        return device.local_address


def log_records(platform: Platform) -> list[dict[str, Any]]:
    """Every line of a stopped platform's log, each checked to be a JSON object."""
    lines = platform.log.read_text().splitlines()
    assert lines
    records = []
    for line in lines:
        record = json.loads(line)  # fails the test on the first line that is not JSON
        assert isinstance(record, dict), line
        records.append(record)
    return records


def about_peer(records: list[dict[str, Any]], peer: str) -> list[dict[str, Any]]:
    return [record for record in records if record.get("peer") == peer]


async def test_every_line_is_json_and_a_connection_s_lines_carry_its_ids(
    config_file: Path, tmp_path: Path
) -> None:
    platform = serve(config_file, tmp_path, format="json")
    try:
        device_id, identified_peer = await identified_device_breaks_the_protocol(platform)
        anonymous_peer = await anonymous_device_breaks_the_protocol(platform)
    finally:
        status = platform.stop()
    assert status == 0
    records = log_records(platform)

    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    assert any(record["message"].startswith("serving: ") for record in records)

    dropped, closed = about_peer(records, identified_peer)
    connection_id = dropped["connection_id"]
    assert isinstance(connection_id, int)
    assert dropped["logger"] == closed["logger"] == "m2m.receivers.m2mp.protocol"
    assert dropped["level"] == closed["level"] == "WARNING"
    assert dropped["message"].startswith(f"connection {connection_id}: frame dropped (1 so far)")
    assert closed["message"] == (
        f"connection {connection_id}: unknown frame header 0xff; closing it"
    )
    assert closed["connection_id"] == connection_id
    assert dropped["device_id"] == closed["device_id"] == device_id

    [anonymous] = about_peer(records, anonymous_peer)
    assert anonymous["connection_id"] != connection_id
    assert anonymous["message"].endswith("unknown frame header 0xff; closing it")
    assert "device_id" not in anonymous


async def test_level_warning_leaves_out_the_info_lines(config_file: Path, tmp_path: Path) -> None:
    platform = serve(config_file, tmp_path, format="json", level="warning")
    try:
        _, peer = await identified_device_breaks_the_protocol(platform)
    finally:
        status = platform.stop()
    assert status == 0
    records = log_records(platform)

    assert [record["level"] for record in about_peer(records, peer)] == ["WARNING", "WARNING"]
    assert not [record for record in records if record["level"] in ("DEBUG", "INFO")]
    assert not [record for record in records if record["message"].startswith("serving: ")]
