"""API tokens: what a service sends as ``Authorization: Bearer <token>`` to act as a user.

A token is ``m2m_<token id>_<secret>``, shown once when made. ``/token/<token id>/`` holds
the user's id, the SHA-256 of the secret (256 random bits need no slow hash: nothing can
guess them) and when the token was made; ``/user/<id>/tokens/`` lists the user's token
ids, each with its creation time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from m2m.cassandra import Database
from m2m.registry.named import EntityNotFoundError
from m2m.registry.node import NodeStatus, RegistryNode
from m2m.registry.user import User, Users

ROOT = "/token/"
PREFIX = "m2m_"


@dataclass(frozen=True)
class TokenInfo:
    id: str
    created: int
    """Unix seconds."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_id(token: str) -> str:
    """The id part of a token: what ``of_user`` lists and ``remove`` takes."""
    return token.removeprefix(PREFIX).partition("_")[0]


class Tokens:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _node(self, token_id: str) -> RegistryNode:
        return RegistryNode(self.database, f"{ROOT}{token_id}/")

    async def create(self, user: User) -> str:
        """A new token for ``user``: the only time its secret is seen."""
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        created = str(int(time.time()))
        node = self._node(token_id)
        await node.check()
        await node.set_values({"user": user.id, "hash": _digest(secret), "created": created})
        listing = user.node.child("tokens")
        await listing.check()
        await listing.set_value(token_id, created)
        return f"{PREFIX}{token_id}_{secret}"

    async def user_of(self, token: str) -> User | None:
        """The user a token acts for; None for a malformed, unknown or revoked token."""
        token_id, _, secret = token.removeprefix(PREFIX).partition("_")
        if not token.startswith(PREFIX) or not token_id.isalnum() or not secret:
            return None
        state = await self._node(token_id).load()
        if state.status is not NodeStatus.CREATED:
            return None
        if not hmac.compare_digest(state.values.get("hash", ""), _digest(secret)):
            return None
        return await Users(self.database).by_id(state.values.get("user", ""))

    async def of_user(self, user: User) -> list[TokenInfo]:
        listed = await user.node.child("tokens").values()
        return sorted(
            (TokenInfo(token_id, int(created)) for token_id, created in listed.items()),
            key=lambda info: (info.created, info.id),
        )

    async def remove(self, user: User, token_id: str) -> None:
        listing = user.node.child("tokens")
        if token_id not in await listing.values():
            raise EntityNotFoundError(f"no token {token_id!r} of this user")
        await listing.delete_value(token_id)
        await self._node(token_id).delete(hard=True)
