"""A device as people see it, in the CLI and the HTTP API alike: one row shape each.

Its connection (from its latest ``_server`` record), its settings with their pending and
acknowledged state, its commands with their responses, the newest record of each type.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

from m2m.bus import topics
from m2m.cassandra import Database
from m2m.errors import M2MError
from m2m.registry.device import Device
from m2m.registry.domain import Domains
from m2m.registry.routes import Route
from m2m.text import unix_time_text, utc_text
from m2m.timeseries import TimeSeries

Row = dict[str, Any]

SERVER_RECORD_TYPE = "_server"
"""The type of the records a receiver keeps of a device's connections."""
LOCATION_TYPE = "sen:loc"
RECENT_RECORDS = 500
"""How many of the newest records are read to find the last one of each type.

The time series index is keyed by (id, type): the types of a series cannot be listed
without reading records, so the types seen among the newest ones are those shown.
"""
CONNECTED = "connected"
DISCONNECTED = "disconnected"
UNKNOWN = "unknown"
_CONNECTION_BY_SERVER_RECORD = {
    topics.DEVICE_CONNECTED: CONNECTED,
    topics.DEVICE_IDENTIFIED: CONNECTED,
    topics.DEVICE_DISCONNECTED: DISCONNECTED,
}
_LOCATIONS_SEARCHED = 20
"""Newest ``sen:loc`` records looked through for one with a position (some only count
satellites)."""


class UnknownSettingError(M2MError):
    """The device has no setting by that name."""


async def device_rows(database: Database, devices: list[Device]) -> list[Row]:
    """``{"id", "ident", "domain"}`` per device (the domain's name), ordered by ident."""
    idents = await asyncio.gather(*(device.ident() for device in devices))
    domain_ids = await asyncio.gather(*(device.domain_id() for device in devices))
    names = await Domains(database).names(filter(None, domain_ids))
    rows = [
        {
            "id": device.id,
            "ident": ident,
            "domain": names.get(domain_id, domain_id) if domain_id else None,
        }
        for device, ident, domain_id in zip(devices, idents, domain_ids, strict=True)
    ]
    return sorted(rows, key=lambda row: row["ident"])


async def connection(series: TimeSeries, device: Device) -> Row:
    """Connected or not, as the device's latest ``_server`` record tells (if it does).

    ``receiver`` names the receiver process that holds (or held) the connection, for
    those who can tell whether it is still alive (the web service can).
    """
    last = await series.last(device.series_id, SERVER_RECORD_TYPE)
    data = last.data if last is not None and isinstance(last.data, dict) else {}
    state = _CONNECTION_BY_SERVER_RECORD.get(str(data.get("type")), UNKNOWN)
    if last is None or state == UNKNOWN:
        return {"connection": UNKNOWN, "since": None, "source": None, "receiver": None}
    return {
        "connection": state,
        "since": utc_text(last.time),
        "source": data.get("source"),
        "receiver": data.get("receiver"),
    }


async def setting_rows(device: Device) -> list[Row]:
    """``{"name", "value", "pending", "acked_at"}``; a pending setting shows the value sent."""
    settings, to_send, acked = await asyncio.gather(
        device.settings(), device.settings_to_send(), device.settings_ack_times()
    )
    return [
        {
            "name": name,
            "value": to_send.get(name, settings.get(name)),
            "pending": name in to_send,
            "acked_at": unix_time_text(acked[name]) if name in acked else None,
        }
        for name in sorted(settings.keys() | to_send.keys())
    ]


async def check_has_setting(device: Device, name: str, asked_as: str) -> None:
    """UnknownSettingError unless the device has setting ``name`` (``asked_as``: how the
    person named the device)."""
    settings, to_send = await asyncio.gather(device.settings(), device.settings_to_send())
    if name not in settings.keys() | to_send.keys():
        raise UnknownSettingError(f"device {asked_as!r} has no setting {name!r}")


async def command_rows(device: Device) -> list[Row]:
    """``{"id", "text", "pending", "response"}``: pending commands, then answered ones.

    An answered command's text is gone from the registry (acknowledging deletes it), so
    only its response remains to show.
    """
    pending, responses = await asyncio.gather(device.commands(), device.command_responses())
    return [
        {"id": command_id, "text": text, "pending": True, "response": None}
        for command_id, text in sorted(pending.items())
    ] + [
        {"id": command_id, "text": None, "pending": False, "response": response}
        for command_id, response in sorted(responses.items())
        if command_id not in pending
    ]


def route_rows(routes: list[Route]) -> list[Row]:
    """``{"priority", "regex", "topic"}``: channel translation rules, in the order they apply."""
    return [{"priority": r.priority, "regex": r.regex, "topic": r.topic} for r in routes]


async def last_records(device: Device) -> list[Row]:
    """The newest record of each type seen among the RECENT_RECORDS newest."""
    newest: dict[str, Row] = {}
    records = TimeSeries(device.database).records(device.series_id, limit=RECENT_RECORDS)
    async with aclosing(records):
        async for record in records:
            if record.type not in newest:
                newest[record.type] = {
                    "type": record.type,
                    "time": utc_text(record.time),
                    "data": record.data,
                }
    return [newest[record_type] for record_type in sorted(newest)]


async def last_location(series: TimeSeries, device: Device) -> Row | None:
    """The newest ``sen:loc`` record with a position: its time and data, or None."""
    records = series.records(device.series_id, LOCATION_TYPE, limit=_LOCATIONS_SEARCHED)
    async with aclosing(records):
        async for record in records:
            data = record.data
            if isinstance(data, dict) and "lat" in data and "lon" in data:
                return {"time": utc_text(record.time), **data}
    return None
