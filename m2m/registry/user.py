"""Users: people with a name, each a member of one domain, some of them admins.

``/user/<id>/`` holds ``name``, ``domain`` and, once set, ``password``: an argon2id hash
(slow and salted, from argon2-cffi), never the password itself. ``admin`` is ``1`` for a
user who sees every domain. API tokens are in :mod:`m2m.registry.tokens`.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from m2m.cassandra import Database
from m2m.errors import InvalidInput
from m2m.registry.domain import Domain, Domains
from m2m.registry.named import NamedEntities, NamedEntity
from m2m.text import utf8_size

_HASHER = PasswordHasher()
MIN_PASSWORD_LENGTH = 8


class WeakPasswordError(InvalidInput):
    """A password that cannot be kept: too short, or not text."""


def check_new_password(password: str) -> None:
    """Refuse a password before anything is written: too short, or not text (argon2 hashes
    its UTF-8, which a lone surrogate does not have)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if utf8_size(password) is None:
        raise WeakPasswordError("a password cannot hold a lone surrogate (it is not text)")


class User(NamedEntity):
    async def domain_id(self) -> str | None:
        return await self.node.value("domain")

    async def is_admin(self) -> bool:
        return await self.node.value("admin") == "1"

    async def set_admin(self, admin: bool) -> None:
        if admin:
            await self.node.set_value("admin", "1")
        else:
            await self.node.delete_value("admin")

    async def set_password(self, password: str) -> None:
        """Keep the hash of ``password`` (hashed off the event loop: it takes ~50 ms)."""
        check_new_password(password)
        await self.node.set_value("password", await asyncio.to_thread(_HASHER.hash, password))

    async def check_password(self, password: str) -> bool:
        """True if ``password`` is this user's (False too when none was ever set)."""
        stored = await self.password_hash()
        if not stored:
            return False
        return await asyncio.to_thread(_verify, stored, password)

    async def password_hash(self) -> str | None:
        return await self.node.value("password")


def _verify(stored: str, password: str) -> bool:
    if utf8_size(password) is None:
        return False  # no password can be one: none was ever hashed
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


async def user_rows(database: Database, users: list[User]) -> list[dict[str, Any]]:
    """Each user as people see them, in the CLI and the HTTP API alike: ``{"name", "id",
    "domain" (its name; its id if the domain is gone), "domain_id", "admin"}``."""

    async def described(user: User) -> tuple[str, str | None, bool]:
        return await asyncio.gather(user.name(), user.domain_id(), user.is_admin())

    found = await asyncio.gather(*(described(user) for user in users))
    names = await Domains(database).names({domain_id for _, domain_id, _ in found if domain_id})
    return [
        {
            "name": name,
            "id": user.id,
            "domain": names.get(domain_id, domain_id) if domain_id else None,
            "domain_id": domain_id,
            "admin": admin,
        }
        for user, (name, domain_id, admin) in zip(users, found, strict=True)
    ]


class Users(NamedEntities[User]):
    kind = "user"

    def _entity(self, entity_id: str) -> User:
        return User(self.database, entity_id, self.root)

    async def create_in(self, name: str, domain: Domain, admin: bool = False) -> User:
        """A new user, member of ``domain``; EntityExistsError if the name is taken."""
        user = await self.create(name)
        await self.move(user, domain)
        await user.set_admin(admin)
        return user

    async def first_admin(self, name: str, domain: Domain) -> str | None:
        """Make admin ``name`` with a random password, returned, unless there is an admin
        already (then None): a new platform's first login."""
        for user in await self.all():
            if await user.is_admin():
                return None
        password = secrets.token_urlsafe(12)
        user = await self.by_name(name) or await self.create_in(name, domain)
        await user.set_admin(True)
        await user.set_password(password)
        return password

    async def move(self, user: User, domain: Domain) -> None:
        """Make ``user`` a member of ``domain`` (and of no other)."""
        previous = await user.domain_id()
        if previous and previous != domain.id:
            old = await Domains(self.database).by_id(previous)
            if old is not None:
                await old.users_node.child(user.id).delete(hard=True)
        await user.node.set_value("domain", domain.id)
        await domain.users_node.child(user.id).create()

    async def delete(self, entity: User) -> None:
        """Soft delete, leaving the domain it belonged to."""
        domain_id = await entity.domain_id()
        if domain_id:
            domain = await Domains(self.database).by_id(domain_id)
            if domain is not None:
                await domain.users_node.child(entity.id).delete(hard=True)
        await super().delete(entity)
