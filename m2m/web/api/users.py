"""``/api/v1/users``: people, their passwords and API tokens, as ``m2m user`` keeps them.

Admins only, except that anyone may change their own password (``/api/v1/me`` says who
they are). Neither a password hash nor a token's secret is ever sent; a new token is
shown once, in the answer that made it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response

from m2m.registry.domain import Domains
from m2m.registry.tokens import Tokens, token_id
from m2m.registry.user import Users, check_new_password, user_rows
from m2m.text import unix_time_text
from m2m.web.api.models import CreatedToken, NewPassword, NewUser, TokenRow, UserRow
from m2m.web.deps import Context, CurrentUser, admin

router = APIRouter(prefix="/users", tags=["users"])
_ADMIN_ONLY = [Depends(admin)]


@router.get("", response_model=list[UserRow], dependencies=_ADMIN_ONLY)
async def list_users(context: Context) -> list[dict[str, Any]]:
    return await user_rows(context.database, await Users(context.database).all())


@router.post("", response_model=UserRow, status_code=201, dependencies=_ADMIN_ONLY)
async def create_user(body: NewUser, context: Context) -> dict[str, Any]:
    if body.password is not None:
        check_new_password(body.password)  # before the user exists: all or nothing
    domain = await Domains(context.database).find(body.domain)
    user = await Users(context.database).create_in(body.name, domain, body.admin)
    if body.password is not None:
        await user.set_password(body.password)
    (row,) = await user_rows(context.database, [user])
    return row


@router.put("/{user}/password", status_code=204)
async def set_password(
    user: str, body: NewPassword, context: Context, who: CurrentUser
) -> Response:
    """An admin sets anyone's; anyone else only their own. Every session of that user ends
    (the console logs in again); API tokens stay valid."""
    refused = HTTPException(403, "only an admin may set another user's password")
    if not who.admin and user not in (who.name, who.user.id):
        raise refused  # before looking it up: whether others exist is no member's business
    found = await Users(context.database).find(user)
    if not who.admin and found.id != who.user.id:
        raise refused  # their id, and someone else's name
    await found.set_password(body.password)
    return Response(status_code=204)


@router.delete("/{user}", status_code=204, dependencies=_ADMIN_ONLY)
async def delete_user(user: str, context: Context) -> Response:
    """Its sessions and tokens stop working at once."""
    users = Users(context.database)
    await users.delete(await users.find(user))
    return Response(status_code=204)


# -- API tokens -------------------------------------------------------------------------


@router.post(
    "/{user}/tokens", response_model=CreatedToken, status_code=201, dependencies=_ADMIN_ONLY
)
async def create_token(user: str, context: Context) -> dict[str, str]:
    token = await Tokens(context.database).create(await Users(context.database).find(user))
    return {"id": token_id(token), "token": token}


@router.get("/{user}/tokens", response_model=list[TokenRow], dependencies=_ADMIN_ONLY)
async def list_tokens(user: str, context: Context) -> list[dict[str, str]]:
    found = await Tokens(context.database).of_user(await Users(context.database).find(user))
    return [{"id": info.id, "created": unix_time_text(info.created)} for info in found]


@router.delete("/{user}/tokens/{token}", status_code=204, dependencies=_ADMIN_ONLY)
async def delete_token(user: str, token: str, context: Context) -> Response:
    """Requests sending it are refused from now on."""
    await Tokens(context.database).remove(await Users(context.database).find(user), token)
    return Response(status_code=204)
