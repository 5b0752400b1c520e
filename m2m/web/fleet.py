"""The fleet as the API lists it: devices in ident order, filtered, a page at a time.

A device's row: who it is, its domain, whether it is connected (its latest ``_server``
record says so *and* the receiver process holding it still beats), since when and from
where, and when it was last seen (its newest record of any type). Three reads a device,
made concurrently for the whole page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from m2m.errors import InvalidInput
from m2m.registry.device import BY_IDENT, Device, device_id_for
from m2m.registry.device_views import CONNECTED, Row, connection
from m2m.registry.domain import Domains
from m2m.registry.named import EntityNotFoundError
from m2m.registry.node import NodeState, RegistryNode
from m2m.text import utc_text
from m2m.timeseries.record import Record
from m2m.web.auth import Principal
from m2m.web.context import WebContext

MAX_PAGES_SCANNED = 20
"""With ``connected`` given, pages of candidates looked through to fill one answer; past
that the answer is short and ``next`` goes on from where the scan stopped."""


class InvalidCursorError(InvalidInput):
    """A cursor this API did not give."""


@dataclass(frozen=True)
class DeviceQuery:
    ident: str | None = None
    """Idents containing this text (case-insensitive)."""
    domain: str | None = None
    """A domain's name or id."""
    connected: bool | None = None
    limit: int = 100
    cursor: str | None = None


def encode_cursor(ident: str) -> str:
    return base64.urlsafe_b64encode(ident.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursorError(f"cursor {cursor!r} is not one this API gave") from None


async def summaries(context: WebContext, devices: list[tuple[Device, str | None]]) -> list[Row]:
    """The rows of these devices (each with its ident, if known): ``id, ident, domain,
    domain_id, connected, since, source, last_seen``."""
    found = await asyncio.gather(*(_facts(context, device) for device, _ in devices))
    domain_ids = {state.values["domain"] for state, _, _ in found if "domain" in state.values}
    names = await Domains(context.database).names(domain_ids)
    rows = []
    for (device, ident), (state, seen, newest) in zip(devices, found, strict=True):
        domain_id = state.values.get("domain")
        alive = context.live.liveness.alive(seen["receiver"])
        rows.append(
            {
                "id": device.id,
                "ident": ident if ident is not None else state.values.get("ident", ""),
                "domain": names.get(domain_id, domain_id) if domain_id else None,
                "domain_id": domain_id,
                "connected": seen["connection"] == CONNECTED and alive,
                "since": seen["since"],
                "source": seen["source"],
                "last_seen": utc_text(newest.time) if newest is not None else None,
            }
        )
    return rows


async def summary(context: WebContext, device: Device, ident: str | None = None) -> Row:
    (row,) = await summaries(context, [(device, ident)])
    return row


async def _facts(context: WebContext, device: Device) -> tuple[NodeState, Row, Record | None]:
    """The device's node, its connection, and its newest record: three reads at once."""
    return await asyncio.gather(
        device.node.load(),
        connection(context.timeseries, device),
        context.timeseries.last(device.series_id),
    )


async def list_devices(
    context: WebContext, who: Principal, query: DeviceQuery
) -> tuple[list[Row], str | None]:
    """One page of rows and the cursor of the next (None at the end)."""
    idents = await RegistryNode(context.database, BY_IDENT).children_names()
    members = await _members(context, who, query.domain)
    after = decode_cursor(query.cursor) if query.cursor else None
    needle = query.ident.casefold() if query.ident else None
    candidates = [
        ident
        for ident in sorted(idents)
        if (after is None or ident > after)
        and (needle is None or needle in ident.casefold())
        and (members is None or device_id_for(ident) in members)
    ]
    rows: list[Row] = []
    position = 0
    for _ in range(MAX_PAGES_SCANNED):
        batch = candidates[position : position + query.limit - len(rows)]
        if not batch:
            break
        position += len(batch)
        found = await summaries(
            context, [(Device(context.database, device_id_for(i)), i) for i in batch]
        )
        rows += [row for row in found if query.connected in (None, row["connected"])]
        if len(rows) >= query.limit:
            break
    more = position < len(candidates)
    return rows, encode_cursor(candidates[position - 1]) if more and position else None


async def _members(context: WebContext, who: Principal, domain: str | None) -> set[str] | None:
    """The ids of the devices of the domain asked for, or that the user may see (None: all)."""
    if domain is None:
        if who.admin:
            return None
        own = await Domains(context.database).by_id(who.domain_id or "")
        return set(await own.device_ids()) if own is not None else set()
    found = await Domains(context.database).find(domain)
    if not who.sees(found.id):
        raise EntityNotFoundError(f"no domain named {domain!r}")
    return set(await found.device_ids())
