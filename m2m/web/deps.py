"""What an endpoint asks FastAPI for: the context, the user asking, a device they may see."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from m2m.registry.device import Device
from m2m.registry.named import EntityNotFoundError
from m2m.web.auth import COOKIE, Principal
from m2m.web.context import WebContext


def web_context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


Context = Annotated[WebContext, Depends(web_context)]


# Declared as security schemes, so the OpenAPI document (and its docs page) says how to
# authenticate; each answers None when absent, and ``principal`` decides.
_BEARER = HTTPBearer(auto_error=False, description="An API token: m2m user token create")
_SESSION = APIKeyCookie(name=COOKIE, auto_error=False, description="POST /api/v1/login sets it")


async def principal(
    context: Context,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    cookie: Annotated[str | None, Depends(_SESSION)],
) -> Principal:
    """The user behind a bearer token or a session cookie; 401 for anyone else."""
    found: Principal | None = None
    if bearer is not None:
        found = await context.auth.from_token(bearer.credentials.strip())
    elif cookie is not None:
        found = await context.auth.from_cookie(cookie)
    if found is None:
        raise HTTPException(401, "log in first (POST /api/v1/login) or send a bearer token")
    return found


CurrentUser = Annotated[Principal, Depends(principal)]


async def admin(who: CurrentUser) -> Principal:
    if not who.admin:
        raise HTTPException(403, "only an admin may do this")
    return who


Admin = Annotated[Principal, Depends(admin)]


async def visible_device(context: WebContext, who: Principal, id_or_ident: str) -> Device:
    """The device named by id or ident, if ``who`` may see it; 404 otherwise (as if absent,
    so that a user of another domain learns nothing of it)."""
    device = await context.devices.find(id_or_ident)
    if not who.sees(await device.domain_id()):
        raise EntityNotFoundError(f"no device with ident or id {id_or_ident!r}")
    return device
