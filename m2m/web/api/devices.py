"""``/api/v1/devices``: the fleet, a device's settings and commands.

A change to settings or commands is written to the registry, then pushed to the
receivers at once, exactly as ``m2m device setting set`` does (:mod:`m2m.bus.push`);
``pushed`` says whether nsqd took the push (the change stands either way: the device gets
it when it next connects).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from m2m.bus import topics
from m2m.bus.push import PushNotSentError, push_to_device
from m2m.registry.device import Device, check_setting
from m2m.registry.device_views import (
    check_has_setting,
    command_rows,
    last_location,
    route_rows,
    setting_rows,
)
from m2m.registry.domain import DEFAULT_DOMAIN, Domains
from m2m.registry.named import EntityNotFoundError
from m2m.web.api.models import (
    CommandRow,
    CreatedCommand,
    DeviceDetail,
    DevicePage,
    DeviceRow,
    NewCommand,
    NewDevice,
    PushedSetting,
    RouteRow,
    SettingRow,
    SettingValue,
)
from m2m.web.context import WebContext
from m2m.web.deps import Context, CurrentUser, visible_device
from m2m.web.fleet import DeviceQuery, list_devices, summary

log = logging.getLogger(__name__)

router = APIRouter(prefix="/devices", tags=["devices"])
WEB_SENDER = "web"


async def _push(context: WebContext, device: Device, call: str) -> bool:
    try:
        await push_to_device(context.publisher, device.id, call, f"{WEB_SENDER};{call}")
    except PushNotSentError as exc:
        log.warning("device %s: %s; it gets the change when it next connects", device.id, exc)
        return False
    return True


@router.get("", response_model=DevicePage)
async def devices(
    context: Context,
    who: CurrentUser,
    ident: Annotated[str | None, Query(description="Idents containing this text")] = None,
    domain: Annotated[str | None, Query(description="A domain's name or id")] = None,
    connected: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    rows, following = await list_devices(
        context, who, DeviceQuery(ident, domain, connected, limit, cursor)
    )
    return {"devices": rows, "next": following}


@router.post("", response_model=DeviceRow, status_code=201)
async def create_device(body: NewDevice, context: Context, who: CurrentUser) -> dict[str, Any]:
    domains = Domains(context.database)
    if body.domain is not None:
        domain = await domains.find(body.domain)
    elif who.admin:
        domain = await domains.get_or_create(DEFAULT_DOMAIN)
    else:
        domain = await domains.find(who.domain_id or DEFAULT_DOMAIN)
    if not who.sees(domain.id):
        raise EntityNotFoundError(f"no domain named {body.domain!r}")
    device = await context.devices.create(body.ident, domain)
    return await summary(context, device, body.ident)


@router.get("/{device}", response_model=DeviceDetail)
async def device_detail(device: str, context: Context, who: CurrentUser) -> dict[str, Any]:
    found = await visible_device(context, who, device)
    row, status, settings, commands, location = await asyncio.gather(
        summary(context, found),
        found.status(),
        setting_rows(found),
        command_rows(found),
        last_location(context.timeseries, found),
    )
    return {**row, "status": status, "settings": settings, "commands": commands,
            "last_location": location}  # fmt: skip


@router.delete("/{device}", status_code=204)
async def delete_device(device: str, context: Context, who: CurrentUser) -> Response:
    found = await visible_device(context, who, device)
    await context.devices.delete(found)
    await _push(context, found, topics.DISCONNECT)
    return Response(status_code=204)


@router.get("/{device}/routes", response_model=list[RouteRow])
async def routes(device: str, context: Context, who: CurrentUser) -> list[dict[str, Any]]:
    """The device's own channel translation rules (M2MP channels to bus topics)."""
    return route_rows(await (await visible_device(context, who, device)).routes())


# -- settings ---------------------------------------------------------------------------


@router.get("/{device}/settings", response_model=list[SettingRow])
async def settings(device: str, context: Context, who: CurrentUser) -> list[dict[str, Any]]:
    return await setting_rows(await visible_device(context, who, device))


@router.put("/{device}/settings/{name}", response_model=PushedSetting)
async def set_setting(
    device: str, name: str, body: SettingValue, context: Context, who: CurrentUser
) -> dict[str, Any]:
    check_setting(name, body.value)
    found = await visible_device(context, who, device)
    await found.define_setting(name, body.value)
    pushed = await _push(context, found, topics.SEND_SETTINGS)
    (row,) = [row for row in await setting_rows(found) if row["name"] == name]
    return {**row, "pushed": pushed}


@router.delete("/{device}/settings/{name}", status_code=204)
async def delete_setting(device: str, name: str, context: Context, who: CurrentUser) -> Response:
    found = await visible_device(context, who, device)
    await check_has_setting(found, name, device)
    await found.delete_setting(name)
    await _push(context, found, topics.SEND_SETTINGS)
    return Response(status_code=204)


# -- commands ---------------------------------------------------------------------------


@router.get("/{device}/commands", response_model=list[CommandRow])
async def commands(device: str, context: Context, who: CurrentUser) -> list[dict[str, Any]]:
    return await command_rows(await visible_device(context, who, device))


@router.post("/{device}/commands", response_model=CreatedCommand, status_code=201)
async def add_command(
    device: str, body: NewCommand, context: Context, who: CurrentUser
) -> dict[str, Any]:
    found = await visible_device(context, who, device)
    command_id = await found.add_command(body.text)
    return {"id": command_id, "pushed": await _push(context, found, topics.SEND_COMMANDS)}


@router.delete("/{device}/commands/{command_id}", status_code=204)
async def delete_command(
    device: str, command_id: str, context: Context, who: CurrentUser
) -> Response:
    found = await visible_device(context, who, device)
    await found.delete_command(command_id)
    await _push(context, found, topics.SEND_COMMANDS)
    return Response(status_code=204)
