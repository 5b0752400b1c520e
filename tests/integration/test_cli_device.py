"""``m2m device`` as a person uses it: output, errors, the registry rows it leaves.

The pushes go to the real nsqd; the end-to-end tests at the bottom check that they reach
real M2MP and ALIP device connections through ``m2m serve`` (``platform``), and through a
second receiver process too. Waits are bounded polls; nothing is timed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2m.cassandra import Database
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import DefaultDevice, Device, device_id_for
from m2m.registry.domain import Domains
from m2m.timeseries import TimeSeries
from tests.conftest import WAIT, Platform, eventually, free_port, run_m2m, start_platform
from tests.integration.cli_checks import (
    failed_in_one_line,
    fails,
    m2m,
    m2m_async,
    m2m_json,
    m2m_json_async,
    new_ident,
)

HOST = "127.0.0.1"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def ident(config_file: Path) -> str:
    """A device created from the command line."""
    ident = new_ident()
    m2m("device", "create", ident, config=config_file)
    return ident


# -- create, ls, show, rm, move ---------------------------------------------------------


def test_create_prints_the_id_derived_from_the_ident(config_file: Path) -> None:
    ident = new_ident()
    assert m2m("device", "create", ident, config=config_file) == f"{device_id_for(ident)}\n"
    fails("device", "create", ident, config=config_file, fragments=(ident, "exists already"))
    fails(
        "device", "create", new_ident(), "--domain", "nowhere", config=config_file,
        fragments=("no domain named 'nowhere'",),
    )  # fmt: skip


def test_ls_prints_an_aligned_table_or_json_lines(config_file: Path, ident: str) -> None:
    device_id = device_id_for(ident)
    lines = m2m("device", "ls", config=config_file).splitlines()
    assert re.fullmatch(r"ID +IDENT +DOMAIN", lines[0])
    (row,) = [line for line in lines if ident in line]
    assert row.split() == [device_id, ident, "default"]
    assert row.index(ident) == lines[0].index("IDENT")
    assert row.index("default") == lines[0].index("DOMAIN")
    listed = m2m_json("device", "ls", config=config_file)
    assert {"id": device_id, "ident": ident, "domain": "default"} in listed


async def test_move_changes_the_domain_and_ls_filters_by_it(
    config_file: Path, ident: str, database: Database
) -> None:
    fleet = f"fleet-{ident[-6:]}"
    fleet_id = m2m("domain", "create", fleet, config=config_file).strip()
    assert m2m_json("device", "ls", "--domain", fleet, config=config_file) == []
    assert m2m("device", "move", ident, fleet, config=config_file) == ""
    expected = {"id": device_id_for(ident), "ident": ident, "domain": fleet}
    assert m2m_json("device", "ls", "--domain", fleet, config=config_file) == [expected]
    assert m2m_json("device", "ls", "--domain", fleet_id, config=config_file) == [expected]
    domains = Domains(database)
    assert await (await domains.find(fleet)).device_ids() == [device_id_for(ident)]
    assert device_id_for(ident) not in await (await domains.find("default")).device_ids()
    fails("device", "move", ident, "nowhere", config=config_file, fragments=("nowhere",))
    fails("device", "ls", "--domain", "nowhere", config=config_file, fragments=("nowhere",))


def test_a_device_is_named_by_ident_or_by_id(config_file: Path, ident: str) -> None:
    by_ident = m2m_json("device", "show", ident, config=config_file)
    by_id = m2m_json("device", "show", device_id_for(ident), config=config_file)
    assert by_ident == by_id
    assert by_ident == [
        {
            "id": device_id_for(ident),
            "ident": ident,
            "domain": "default",
            "connection": "unknown",
            "since": None,
            "source": None,
            "status": {},
            "settings": [],
            "commands": [],
            "last_records": [],
        }
    ]


@pytest.mark.parametrize(
    "command",
    [
        ["show", "X"], ["status", "X"], ["disconnect", "X"], ["rm", "X"], ["move", "X", "default"],
        ["setting", "set", "X", "a", "1"], ["setting", "rm", "X", "a"], ["setting", "ls", "X"],
        ["command", "add", "X", "reboot"], ["command", "ls", "X"], ["command", "rm", "X", "1"],
        ["route", "add", "X", "1", "x", "t"], ["route", "ls", "X"], ["route", "rm", "X", "1", "x"],
    ],
    ids=" ".join,
)  # fmt: skip
def test_an_unknown_device_fails_in_one_line(config_file: Path, command: list[str]) -> None:
    unknown = new_ident()
    args = [unknown if word == "X" else word for word in command]
    fails("device", *args, config=config_file,
          fragments=(f"no device with ident or id {unknown!r}",))  # fmt: skip


async def test_rm_deletes_and_a_device_created_again_starts_clean(
    config_file: Path, ident: str, database: Database
) -> None:
    m2m("device", "setting", "set", ident, "period", "60", config=config_file)
    assert m2m("device", "rm", ident, config=config_file) == ""
    assert ident not in m2m("device", "ls", config=config_file)
    fails("device", "show", ident, config=config_file, fragments=("no device",))
    assert device_id_for(ident) not in await (await Domains(database).find("default")).device_ids()
    m2m("device", "create", ident, config=config_file)
    assert m2m_json("device", "setting", "ls", ident, config=config_file) == []


# -- settings ---------------------------------------------------------------------------


async def test_setting_set_ls_rm(config_file: Path, ident: str, database: Database) -> None:
    device = Device(database, device_id_for(ident))
    assert m2m("device", "setting", "set", ident, "period", "60", config=config_file) == ""
    m2m("device", "setting", "set", ident, "apn", "internet access", config=config_file)
    assert await device.settings() == {"period": "60", "apn": "internet access"}
    assert await device.settings_to_send() == {"period": "60", "apn": "internet access"}
    assert m2m_json("device", "setting", "ls", ident, config=config_file) == [
        {"name": "apn", "value": "internet access", "pending": True, "acked_at": None},
        {"name": "period", "value": "60", "pending": True, "acked_at": None},
    ]

    await device.ack_setting("period", "60")  # as a receiver does when the device acks
    (period,) = [
        row for row in m2m_json("device", "setting", "ls", ident, config=config_file)
        if row["name"] == "period"
    ]  # fmt: skip
    assert period["pending"] is False and ISO_UTC.fullmatch(period["acked_at"])
    table = m2m("device", "setting", "ls", ident, config=config_file).splitlines()
    assert table[0].split() == ["NAME", "VALUE", "PENDING", "ACKED_AT"]
    assert table[1].split() == ["apn", "internet", "access", "yes", "-"]
    assert table[2].split() == ["period", "60", "no", period["acked_at"]]

    assert m2m("device", "setting", "rm", ident, "apn", config=config_file) == ""
    assert await device.settings() == {"period": "60"}
    assert await device.settings_to_send() == {}
    fails("device", "setting", "rm", ident, "apn", config=config_file,
          fragments=(f"device {ident!r} has no setting 'apn'",))  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [("a=b", "1", "invalid setting name 'a=b'"), ("a b", "1", "invalid setting name 'a b'"),
     ("", "1", "invalid setting name ''"), ("a", "1\n2", "spans lines")],
)  # fmt: skip
def test_a_setting_the_protocols_cannot_carry_is_refused(
    config_file: Path, ident: str, name: str, value: str, problem: str
) -> None:
    fails("device", "setting", "set", ident, name, value, config=config_file, fragments=(problem,))
    assert m2m_json("device", "setting", "ls", ident, config=config_file) == []


# -- commands ---------------------------------------------------------------------------


async def test_command_add_ls_rm(config_file: Path, ident: str, database: Database) -> None:
    device = Device(database, device_id_for(ident))
    first = m2m("device", "command", "add", ident, "reboot", config=config_file).strip()
    second = m2m("device", "command", "add", ident, "upload logs", config=config_file).strip()
    assert await device.commands() == {first: "reboot", second: "upload logs"}
    pending = [
        {"id": command_id, "text": text, "pending": True, "response": None}
        for command_id, text in sorted([(first, "reboot"), (second, "upload logs")])
    ]
    assert m2m_json("device", "command", "ls", ident, config=config_file) == pending

    await device.ack_command(first, "rebooting\nbye")  # as a receiver does
    answered = {"id": first, "text": None, "pending": False, "response": "rebooting\nbye"}
    assert m2m_json("device", "command", "ls", ident, config=config_file) == [
        {"id": second, "text": "upload logs", "pending": True, "response": None},
        answered,
    ]
    table = m2m("device", "command", "ls", ident, config=config_file).splitlines()
    assert table[0].split() == ["ID", "TEXT", "PENDING", "RESPONSE"]
    assert table[2].split() == [first, "-", "no", "rebooting\\nbye"]

    assert m2m("device", "command", "rm", ident, second, config=config_file) == ""
    assert await device.commands() == {}
    assert m2m("device", "command", "rm", ident, first, config=config_file) == ""
    assert await device.command_responses() == {}
    fails("device", "command", "rm", ident, first, config=config_file,
          fragments=(f"no command {first!r}",))  # fmt: skip


# -- routes -----------------------------------------------------------------------------


async def test_routes_of_a_device_and_of_default(
    config_file: Path, ident: str, database: Database
) -> None:
    device = Device(database, device_id_for(ident))
    assert m2m("device", "route", "add", ident, "20", "^sen:", "conv-b", config=config_file) == ""
    m2m("device", "route", "add", ident, "5", "temp$", "conv-a", config=config_file)
    assert await device.node.child("channel-translation").values() == {
        "0020_^sen:": "conv-b",
        "0005_temp$": "conv-a",
    }
    assert m2m_json("device", "route", "ls", ident, config=config_file) == [
        {"priority": 5, "regex": "temp$", "topic": "conv-a"},
        {"priority": 20, "regex": "^sen:", "topic": "conv-b"},
    ]
    assert m2m("device", "route", "rm", ident, "5", "temp$", config=config_file) == ""
    assert [route.key for route in await device.routes()] == ["0020_^sen:"]

    regex = f"^only-{ident[-6:]}$"
    m2m("device", "route", "add", "default", "9999", regex, "conv-default", config=config_file)
    assert {"priority": 9999, "regex": regex, "topic": "conv-default"} in m2m_json(
        "device", "route", "ls", "default", config=config_file
    )
    m2m("device", "route", "rm", "default", "9999", regex, config=config_file)
    assert regex not in [route.regex for route in await DefaultDevice(database).routes()]


@pytest.mark.parametrize(
    ("args", "problem"),
    [(["1", "(unclosed", "t"], "invalid regex '(unclosed'"),
     (["10000", "x", "t"], "priority 10000 is not between 0 and 9999"),
     (["1", "x", "bad topic!"], "invalid NSQ topic 'bad topic!'"),
     (["one", "x", "t"], "'one' is not a valid integer")],
)  # fmt: skip
def test_a_bad_route_is_refused_before_it_is_stored(
    config_file: Path, ident: str, args: list[str], problem: str
) -> None:
    fails("device", "route", "add", ident, *args, config=config_file, fragments=(problem,))
    assert m2m_json("device", "route", "ls", ident, config=config_file) == []


def test_removing_a_missing_route_fails(config_file: Path, ident: str) -> None:
    fails("device", "route", "rm", ident, "1", "x", config=config_file,
          fragments=("no route with priority 1 and regex 'x'",))  # fmt: skip


# -- status and show --------------------------------------------------------------------


async def test_status_and_show_read_the_latest_events_and_records(
    config_file: Path, ident: str, database: Database
) -> None:
    device = Device(database, device_id_for(ident))
    series = TimeSeries(database)
    connected_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    server = {"source": "10.1.2.3:40000", "connection_id": "7"}
    await series.save(device.series_id, "_server", {"type": "device_identified", **server},
                      time=connected_at)  # fmt: skip
    await series.save(device.series_id, "sen:temp", 21.5, time=connected_at)
    await device.set_status({"cap": "sen:temp", "fw": "1.2"})

    status = {
        "id": device.id, "ident": ident, "domain": "default", "connection": "connected",
        "since": connected_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "source": "10.1.2.3:40000",
        "status": {"cap": "sen:temp", "fw": "1.2"},
    }  # fmt: skip
    assert m2m_json("device", "status", ident, config=config_file) == [status]
    text = m2m("device", "status", ident, config=config_file)
    assert "connection  connected\n" in text and "\nstatus:\nNAME  VALUE\ncap   sen:temp\n" in text

    (shown,) = m2m_json("device", "show", ident, config=config_file)
    assert shown["last_records"] == [
        {
            "type": "_server",
            "time": status["since"],
            "data": {"type": "device_identified", **server},
        },
        {"type": "sen:temp", "time": status["since"], "data": 21.5},
    ]

    await series.save(device.series_id, "_server", {"type": "device_disconnected", **server})
    (after,) = m2m_json("device", "status", ident, config=config_file)
    assert after["connection"] == "disconnected"


# -- when nsqd cannot be reached --------------------------------------------------------


@pytest.fixture
def no_nsqd_config(config_file: Path, tmp_path: Path) -> Path:
    """The test keyspace, with an nsqd address nothing listens on."""
    settings = yaml.safe_load(config_file.read_text())
    settings["nsq"] = {"nsqd_tcp_addresses": [f"127.0.0.1:{free_port()}"]}
    path = tmp_path / "no-nsqd.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


async def test_without_nsqd_the_change_stands_and_the_failed_push_is_said(
    no_nsqd_config: Path, ident: str, database: Database
) -> None:
    device = Device(database, device_id_for(ident))
    set_setting = run_m2m("device", "setting", "set", ident, "period", "60",
                          config=no_nsqd_config, check=False)  # fmt: skip
    failed_in_one_line(set_setting, "saved, but not pushed", "send_settings", "next connects")
    assert await device.settings_to_send() == {"period": "60"}

    add_command = run_m2m("device", "command", "add", ident, "reboot",
                          config=no_nsqd_config, check=False)  # fmt: skip
    failed_in_one_line(add_command, "saved, but not pushed", "send_commands")
    assert await device.commands() == {add_command.stdout.decode().strip(): "reboot"}

    disconnect = run_m2m("device", "disconnect", ident, config=no_nsqd_config, check=False)
    failed_in_one_line(disconnect, "did not take the disconnect message")


# -- end to end: real device connections through m2m serve ------------------------------


async def _setting(config_file: Path, ident: str, name: str) -> dict[str, Any]:
    rows = await m2m_json_async("device", "setting", "ls", ident, config=config_file)
    (row,) = [row for row in rows if row["name"] == name]
    return dict(row)


async def _next_array(client: M2MPClient, channel: str, first: bytes) -> list[bytes]:
    """The next array on ``channel`` that starts with ``first`` (others are passed over)."""
    async with asyncio.timeout(WAIT):
        while (items := await client.receive_array(channel, timeout=WAIT))[0] != first:
            pass
    return items


async def test_an_m2mp_device_gets_settings_and_commands_and_its_acks_show(
    config_file: Path, platform: Platform, ident: str
) -> None:
    async with await M2MPClient.connect(HOST, platform.m2mp_port) as client:
        assert await client.identify(ident)
        await m2m_async("device", "setting", "set", ident, "period", "60", config=config_file)
        assert await _next_array(client, "_set", b"sg") == [b"sg", b"period=60"]
        client.send_array("_set", [b"g", b"period=60"])
        acked = await eventually(
            lambda: _setting(config_file, ident, "period"),
            lambda row: not row["pending"],
            "the acknowledgement in setting ls",
        )
        assert acked["value"] == "60" and ISO_UTC.fullmatch(acked["acked_at"])

        added = await m2m_async("device", "command", "add", ident, "reboot", config=config_file)
        command_id = added.strip()
        assert await _next_array(client, "_cmd", b"e") == [b"e", command_id.encode(), b"reboot"]
        client.send_array("_cmd", [b"a", command_id.encode(), b"rebooting", b"bye"])
        answered = {"id": command_id, "text": None, "pending": False, "response": "rebooting\nbye"}
        await eventually(
            lambda: m2m_json_async("device", "command", "ls", ident, config=config_file),
            lambda rows: rows == [answered],
            "the response in command ls",
        )


async def test_an_alip_device_gets_settings_and_commands_and_its_acks_show(
    config_file: Path, platform: Platform, ident: str
) -> None:
    async with await ALIPClient.connect(HOST, platform.alip_port) as client:
        assert await client.identify(ident)
        await m2m_async("device", "setting", "set", ident, "apn", "my apn", config=config_file)
        assert await client.receive_line(WAIT, prefix="S S ") == "S S apn my apn"
        client.send_line("S A apn my apn")
        acked = await eventually(
            lambda: _setting(config_file, ident, "apn"),
            lambda row: not row["pending"],
            "the acknowledgement in setting ls",
        )
        assert ISO_UTC.fullmatch(acked["acked_at"])

        added = await m2m_async("device", "command", "add", ident, "reboot", config=config_file)
        number, text = (await client.receive_line(WAIT, prefix="C ")).split()[1:]
        assert text == "reboot"
        pending = await m2m_json_async("device", "command", "ls", ident, config=config_file)
        assert pending == [
            {"id": added.strip(), "text": "reboot", "pending": True, "response": None}
        ]
        client.send_line(f"C A {number}")
        await eventually(
            lambda: m2m_json_async("device", "command", "ls", ident, config=config_file),
            # acknowledged; ALIP answers carry no response: an empty one is kept
            lambda rows: (
                rows == [{"id": added.strip(), "text": None, "pending": False, "response": ""}]
            ),
            "the acknowledgement in command ls",
        )


async def test_disconnect_closes_the_connection(
    config_file: Path, platform: Platform, ident: str
) -> None:
    async with await M2MPClient.connect(HOST, platform.m2mp_port) as client:
        assert await client.identify(ident)
        assert await m2m_async("device", "disconnect", ident, config=config_file) == ""
        assert await client.closed(timeout=WAIT)


@pytest.fixture
def second_platform(config_file: Path, tmp_path: Path) -> Iterator[Platform]:
    """Another ``m2m serve`` on the same keyspace and bus: a second receiver process."""
    running = start_platform(config_file, tmp_path)
    yield running
    running.stop()


async def test_a_push_reaches_the_device_through_whichever_process_holds_it(
    config_file: Path, platform: Platform, second_platform: Platform
) -> None:
    on_first, on_second = new_ident(), new_ident()
    async with (
        await M2MPClient.connect(HOST, platform.m2mp_port) as first,
        await ALIPClient.connect(HOST, second_platform.alip_port) as second,
    ):
        assert await first.identify(on_first)
        assert await second.identify(on_second)
        await m2m_async("device", "setting", "set", on_second, "period", "30", config=config_file)
        assert await second.receive_line(WAIT, prefix="S S ") == "S S period 30"
        await m2m_async("device", "setting", "set", on_first, "period", "90", config=config_file)
        assert await _next_array(first, "_set", b"sg") == [b"sg", b"period=90"]

        await m2m_async("device", "disconnect", on_second, config=config_file)
        assert await second.closed(timeout=WAIT)
        await first.ping(1)  # the other device, on the other process, is still connected
