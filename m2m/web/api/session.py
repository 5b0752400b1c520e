"""``/api/v1/login``, ``/logout``, ``/me``: the console's session cookie."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from m2m.web.api.models import Shape
from m2m.web.auth import COOKIE, Principal
from m2m.web.deps import Context, CurrentUser

router = APIRouter(tags=["session"])


class Credentials(Shape):
    user: str
    password: str


class Me(Shape):
    id: str
    name: str
    admin: bool
    domain_id: str | None


def _me(who: Principal) -> dict[str, Any]:
    return {"id": who.user.id, "name": who.name, "admin": who.admin, "domain_id": who.domain_id}


@router.post("/login", response_model=Me)
async def login(body: Credentials, context: Context, response: Response) -> dict[str, Any]:
    """Check the password and set the session cookie (HttpOnly, SameSite=Strict)."""
    found = await context.auth.login(body.user, body.password)
    if found is None:
        raise HTTPException(401, "unknown user or wrong password")
    who, cookie = found
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(context.config.web.session_hours * 3600),
        httponly=True,
        samesite="strict",
        path="/",
    )
    return _me(who)


@router.post("/logout", status_code=204)
async def logout(_: CurrentUser) -> Response:
    """Forget the session cookie in this browser. (The cookie itself stays valid until it
    expires, or until the user's password changes: sessions are not kept server-side.)"""
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/me", response_model=Me)
async def me(who: CurrentUser) -> dict[str, Any]:
    return _me(who)
