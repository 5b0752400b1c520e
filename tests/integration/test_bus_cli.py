"""``m2m bus stats`` and ``m2m bus tail``, run as a person runs them, against the real NSQ.

Every test has NSQ topics of its own (:func:`config_with_own_topics`): the stack's nsqd
is shared by every test run, and ``bus stats`` shows only the configured platform's
topics. Devices play their part over real TCP into ``m2m serve`` running only the
receiver under test, so no worker takes the messages the test looks at.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.bus.nsqd_stats import read_stats
from m2m.config import NsqConfig, load_config
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import device_id_for
from m2m.services import STORAGE_CHANNEL
from m2m.stack.nsq import HOST, NSQD_HTTP_PORT
from tests.conftest import (
    M2M,
    WAIT,
    config_with_own_topics,
    eventually,
    free_port,
    run_m2m,
    start_platform,
)

NSQD = f"http://{HOST}:{NSQD_HTTP_PORT}"
RECORDS = 25


def _nsqd_post(path: str, body: bytes = b"", **query: str) -> None:
    url = f"{NSQD}{path}?{urllib.parse.urlencode(query)}"
    urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10)


def _stats_rows(config: Path, *options: str) -> tuple[int, list[dict[str, Any]], str]:
    """``m2m bus stats --json``: its exit status, rows by (topic, channel), and stderr."""
    result = run_m2m("bus", "stats", "--json", *options, config=config, check=False)
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    return result.returncode, rows, result.stderr.decode()


def _row(rows: list[dict[str, Any]], topic: str, channel: str | None) -> dict[str, Any]:
    (found,) = [row for row in rows if (row["topic"], row["channel"]) == (topic, channel)]
    return found


# --- bus tail -----------------------------------------------------------------------------


def _start_tail(config: Path, *arguments: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [M2M, "--config", str(config), "bus", "tail", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def _tail_channels(nsq: NsqConfig, topic: str) -> list[str]:
    """The ephemeral channels ``bus tail`` opened on ``topic``."""
    stats = await read_stats(nsq)
    return [
        channel.name
        for found in stats.topics
        if found.name == topic
        for channel in found.channels
        if channel.name.startswith("tail-") and channel.name.endswith("#ephemeral")
    ]


async def _tailing(nsq: NsqConfig, topic: str, count: int) -> None:
    """Until ``count`` tails follow ``topic``: what is published before would be missed."""
    await eventually(
        lambda: _tail_channels(nsq, topic),
        lambda channels: len(channels) == count,
        f"{count} bus tail subscribed to {topic}",
    )


async def test_tail_prints_a_device_frame_as_it_comes_and_stops_after_n(
    config_file: Path, tmp_path: Path
) -> None:
    platform = start_platform(config_with_own_topics(config_file, tmp_path), tmp_path, "m2mp")
    nsq = platform.config.nsq
    try:
        people = _start_tail(platform.config_file, "-n", "1", topics.CONVERTER_M2MP)
        scripts = _start_tail(platform.config_file, "-n", "1", "--json", topics.CONVERTER_M2MP)
        await _tailing(nsq, topics.CONVERTER_M2MP, 2)
        ident = f"bus-tail-{uuid.uuid4().hex[:12]}"
        async with await M2MPClient.connect(HOST, platform.m2mp_port) as device:
            assert await device.identify(ident)
            device.send_data("tailed", b"frame for tail")
            await device.ping(1)  # answered once nsqd has the frame
        text, text_err = people.communicate(timeout=WAIT)
        lines, _ = scripts.communicate(timeout=WAIT)
    finally:
        platform.stop()
    assert (people.returncode, scripts.returncode) == (0, 0), text_err
    (line,) = text.decode().splitlines()
    assert f"Z {topics.CONVERTER_M2MP} {topics.DATA_SIMPLE} {{" in line
    assert device_id_for(ident) in line
    assert b"frame for tail".hex() in line
    (envelope,) = [Envelope.from_json(body) for body in lines.splitlines()]
    assert envelope.call == topics.DATA_SIMPLE
    assert envelope.fields["device_id"] == device_id_for(ident)
    assert envelope.fields["channel"] == "tailed"
    assert bytes.fromhex(envelope.fields["data"]) == b"frame for tail"
    # Ephemeral: gone with its reader.
    assert await _tail_channels(nsq, topics.CONVERTER_M2MP) == []


def test_tail_on_a_durable_channel_shows_what_is_not_an_envelope_and_goes_on(
    config_file: Path, tmp_path: Path
) -> None:
    own = config_with_own_topics(config_file, tmp_path)
    odd = f"{load_config(own).nsq.topic_prefix}odd"
    # Published before tail starts: the topic keeps them for its first channel, tail's.
    _nsqd_post("/pub", b"\x00not json at all", topic=odd)
    _nsqd_post("/pub", Envelope.make("odd/someone", "hello", "tests", n=1).to_json(), topic=odd)
    tail = _start_tail(own, "--channel", "tests-tail", "-n", "2", "odd")
    try:
        out, err = tail.communicate(timeout=WAIT)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    first, second = out.decode().splitlines()
    assert first.endswith(" odd (not an envelope) b'\\x00not json at all'")
    assert second.endswith(' odd hello to=odd/someone {"n":1}')
    returncode, rows, _ = _stats_rows(own)
    assert returncode == 0
    channel = _row(rows, "odd", "tests-tail")  # it stays
    assert (channel["depth"], channel["in_flight"], channel["clients"]) == (0, 0, 0)


async def test_tail_stops_cleanly_on_sigterm(config_file: Path, tmp_path: Path) -> None:
    own = config_with_own_topics(config_file, tmp_path)
    nsq = load_config(own).nsq
    tail = _start_tail(own, "events")
    try:
        await _tailing(nsq, "events", 1)
        tail.send_signal(signal.SIGTERM)
        _, err = tail.communicate(timeout=WAIT)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    assert await _tail_channels(nsq, "events") == []


# --- bus stats ----------------------------------------------------------------------------


async def test_stats_shows_a_channel_filling_while_nobody_reads_it_and_flags_it(
    config_file: Path, tmp_path: Path
) -> None:
    platform = start_platform(config_with_own_topics(config_file, tmp_path), tmp_path, "alip")
    storage = f"{platform.config.nsq.topic_prefix}{topics.STORAGE}"
    _nsqd_post("/topic/create", topic=storage)
    _nsqd_post("/channel/create", topic=storage, channel=STORAGE_CHANNEL)
    try:
        async with await ALIPClient.connect(HOST, platform.alip_port) as device:
            assert await device.identify(f"imei:{uuid.uuid4().hex[:15]}")
            for n in range(RECORDS):
                device.send_line(f"D T {n}")
            await device.ping("all-sent")  # answered once nsqd has every record

        async def storage_row() -> dict[str, Any]:
            returncode, rows, stderr = _stats_rows(platform.config_file)
            assert returncode == 0, stderr
            return _row(rows, topics.STORAGE, STORAGE_CHANNEL)

        row = await eventually(
            storage_row, lambda row: row["depth"] >= RECORDS, "records waiting on storage"
        )
        assert row["clients"] == 0 and row["in_flight"] == 0 and row["too_deep"] is False
        deep, rows, stderr = _stats_rows(platform.config_file, "--max-depth", str(RECORDS - 1))
        shallow, _, _ = _stats_rows(platform.config_file, "--max-depth", str(RECORDS * 100))
        table = run_m2m("bus", "stats", config=platform.config_file).stdout.decode()
    finally:
        platform.stop()
    assert deep == 3
    assert _row(rows, topics.STORAGE, STORAGE_CHANNEL)["too_deep"] is True
    assert _row(rows, topics.STORAGE, None)["too_deep"] is False  # the channel took them
    assert (
        f"{topics.STORAGE}/{STORAGE_CHANNEL}: {row['depth']:,} messages waiting and "
        "no consumer connected"
    ) in stderr
    assert shallow == 0
    header, *lines = table.splitlines()
    assert header.split() == [
        "TOPIC", "CHANNEL", "DEPTH", "IN_FLIGHT", "DEFERRED", "REQUEUED", "TIMED_OUT",
        "CLIENTS", "MESSAGES", "TOO_DEEP",
    ]  # fmt: skip
    assert lines[_index(lines, topics.STORAGE, "-")].split()[:3] == [topics.STORAGE, "-", "0"]


def _index(lines: list[str], topic: str, channel: str) -> int:
    (index,) = [n for n, line in enumerate(lines) if line.split()[:2] == [topic, channel]]
    return index


def test_stats_flags_a_topic_no_channel_reads(config_file: Path, tmp_path: Path) -> None:
    own = config_with_own_topics(config_file, tmp_path)
    orphan = f"{load_config(own).nsq.topic_prefix}orphan"
    for n in range(3):
        _nsqd_post("/pub", Envelope.make("orphan", "lost", "tests", n=n).to_json(), topic=orphan)
    returncode, rows, stderr = _stats_rows(own, "--max-depth", "2")
    assert returncode == 3
    assert _row(rows, "orphan", None) == {
        "topic": "orphan", "channel": None, "depth": 3, "in_flight": None, "deferred": None,
        "requeued": None, "timed_out": None, "clients": None, "messages": 3, "too_deep": True,
    }  # fmt: skip
    assert "orphan: 3 messages held by the topic itself: no channel reads it" in stderr
    assert [row["topic"] for row in rows] == ["orphan"]  # only this platform's topics
    returncode, _, _ = _stats_rows(own, "--max-depth", "3")
    assert returncode == 0


def test_stats_without_nsqd_is_a_one_line_error(config_file: Path, tmp_path: Path) -> None:
    unreachable = tmp_path / "no-nsq.yaml"
    unreachable.write_text(f"nsq: {{lookupd_http_addresses: ['127.0.0.1:{free_port()}']}}\n")
    result = run_m2m("bus", "stats", config=unreachable, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("Error: no nsqd answered: nsqlookupd 127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1
