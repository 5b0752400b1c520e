"""``/api/v1/domains``: the groups devices and users belong to, as ``m2m domain`` keeps them.

Admins see and manage every domain; anyone else sees only their own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from m2m.registry.domain import Domain, Domains
from m2m.web.api.models import DomainRow, NewDomain
from m2m.web.deps import Admin, Context, CurrentUser

router = APIRouter(prefix="/domains", tags=["domains"])


async def _row(domain: Domain) -> dict[str, Any]:
    name, device_ids, user_ids = await asyncio.gather(
        domain.name(), domain.device_ids(), domain.user_ids()
    )
    return {"id": domain.id, "name": name, "devices": len(device_ids), "users": len(user_ids)}


@router.get("", response_model=list[DomainRow])
async def list_domains(context: Context, who: CurrentUser) -> list[dict[str, Any]]:
    domains = Domains(context.database)
    if who.admin:
        visible = await domains.all()
    else:
        own = await domains.by_id(who.domain_id) if who.domain_id else None
        visible = [own] if own is not None else []
    return list(await asyncio.gather(*(_row(domain) for domain in visible)))


@router.post("", response_model=DomainRow, status_code=201)
async def create_domain(body: NewDomain, context: Context, who: Admin) -> dict[str, Any]:
    return await _row(await Domains(context.database).create(body.name))


@router.delete("/{domain}", status_code=204)
async def delete_domain(domain: str, context: Context, who: Admin) -> Response:
    """Refused (409) while devices or users are members."""
    domains = Domains(context.database)
    await domains.delete(await domains.find(domain))
    return Response(status_code=204)
